/**
 * Element-wise kernels generated from a WGSL expression. One generator serves every map:
 * `map("a * s0 + b", [x, y], [alpha])` computes `alpha·x + y`. Inputs are named `a, b, c, d`,
 * the current output value `o`, the global index `i` (u32), scalars `s0..s3` (f32).
 * An input shorter than the output is broadcast cyclically (`a[i % len(a)]`): a row vector
 * of length `cols` broadcasts over the rows of a matrix.
 *
 * @module
 */
import { f32, GpuError, packParams, type Runtime } from "./device.ts";
import { Tensor } from "./tensor.ts";

const NAMES = ["a", "b", "c", "d"];
const WG = 256;

/**
 * Largest element count of one dispatch chunk: a binding must stay under the runtime's
 * `maxBinding`, and chunk offsets must stay aligned.
 *
 * @param rt the runtime
 * @example Usage
 * ```ts ignore
 * for (let base = 0; base < t.size; base += chunkElems(rt)) { … }
 * ```
 */
export function chunkElems(rt: Runtime): number {
  const align = rt.offsetAlign / 4;
  return Math.floor(rt.maxBinding / 4 / align) * align;
}

/**
 * Options of {@link map}.
 *
 * @example Usage
 * ```ts ignore
 * import { map, type MapOptions, Tensor } from "@llm-surgeon/toolkit";
 * const x = await Tensor.from([-1, 0.5, 2]);
 * // A u32 mask of the positive entries, in a new tensor with its own name.
 * const opts: MapOptions = { dtype: "u32", name: "positive" };
 * const mask = map("select(0u, 1u, a > 0.0)", [x], [], opts);
 * console.log(await mask.readU32()); // Uint32Array [0, 1, 1]
 * ```
 */
export interface MapOptions {
  /** Write into this tensor (it may also be one of the inputs). Default: a new tensor. */
  out?: Tensor;
  /** Shape of a new output. Default: the shape of the first input. */
  shape?: readonly number[];
  /** Name of a new output. */
  name?: string;
  /** Output element type of a new output. Default f32. */
  dtype?: "f32" | "u32" | "i32";
}

function wgslType(dt: string): string {
  return dt === "f32" ? "f32" : dt === "u32" ? "u32" : "i32";
}

/**
 * Applies a WGSL expression element-wise. Records the dispatch; returns the output tensor.
 *
 * @example Usage
 * ```ts ignore
 * const y = map("max(a, 0.0)", [x]);             // ReLU
 * map("o + s0 * a", [g], [-lr], { out: w });     // in-place SGD step
 * ```
 */
export function map(
  expr: string,
  inputs: Tensor[],
  scalars: number[] = [],
  opts: MapOptions = {},
): Tensor {
  if (inputs.length > NAMES.length) throw new GpuError("map", "at most 4 inputs");
  if (scalars.length > 4) throw new GpuError("map", "at most 4 scalars");
  const rt = (opts.out ?? inputs[0])?.rt;
  if (!rt) throw new GpuError("map", "needs an input or an output tensor");
  const out = opts.out ??
    new Tensor(rt, opts.shape ?? inputs[0].shape, opts.dtype ?? "f32", opts.name ?? `map(${expr})`);
  const n = out.size;
  if (n === 0) return out;
  for (const t of [out, ...inputs]) {
    if (t.dtype === "f16") {
      throw new GpuError(
        `map(${expr})`,
        `${t} is f16; map works on 32-bit elements (cast it with toF32/toF16)`,
      );
    }
  }
  // Which inputs alias the output (bound once as read_write).
  const alias = inputs.map((t) => t === out);
  for (const [k, t] of inputs.entries()) {
    if (t.size === 0 || (n % t.size !== 0 && t.size !== n)) {
      throw new GpuError(
        `map(${expr})`,
        `input ${NAMES[k]} ${t} does not broadcast to output shape [${out.shape}]`,
      );
    }
  }
  const full = inputs.map((t) => t.size === n);
  const key = `map:${expr}|${
    inputs.map((t, k) => `${t.dtype}${alias[k] ? "=" : full[k] ? "f" : "b"}`).join(",")
  }|${out.dtype}`;
  const bindingsDecl: string[] = [
    `@group(0) @binding(0) var<storage, read_write> out_: array<${wgslType(out.dtype)}>;`,
  ];
  let bi = 1;
  const loads: string[] = [];
  inputs.forEach((t, k) => {
    const nm = NAMES[k];
    if (alias[k]) {
      loads.push(`let ${nm} = out_[li];`);
      return;
    }
    bindingsDecl.push(
      `@group(0) @binding(${bi}) var<storage, read> in_${nm}: array<${wgslType(t.dtype)}>;`,
    );
    bi++;
    loads.push(
      full[k] ? `let ${nm} = in_${nm}[li];` : `let ${nm} = in_${nm}[i % p.len_${nm}];`,
    );
  });
  const wgsl = `
${bindingsDecl.join("\n")}
struct P { n: u32, base: u32, len_a: u32, len_b: u32, len_c: u32, len_d: u32, pad0: u32, pad1: u32,
           s0: f32, s1: f32, s2: f32, s3: f32 };
@group(0) @binding(${bi}) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  // li: index within this chunk's bindings; i: the global element index the expression sees.
  let li = gid.x + gid.y * nw.x * ${WG}u;
  if (li >= p.n) { return; }
  let i = p.base + li;
  let s0 = p.s0; let s1 = p.s1; let s2 = p.s2; let s3 = p.s3;
  let o = out_[li];
  ${loads.join("\n  ")}
  out_[li] = ${expr};
}`;
  const kernel = rt.kernel(key, wgsl);
  const chunk = chunkElems(rt);
  const lens = [0, 0, 0, 0];
  inputs.forEach((t, k) => (lens[k] = t.size));
  for (let base = 0; base < n; base += chunk) {
    const m = Math.min(chunk, n - base);
    const bindings = [out.range(base, m)];
    inputs.forEach((t, k) => {
      if (alias[k]) return;
      bindings.push(full[k] ? t.range(base, m) : t.range());
    });
    const s = [0, 0, 0, 0];
    scalars.forEach((v, k) => (s[k] = v));
    const params = packParams(m, base, ...lens, 0, 0, ...s.map(f32));
    const groups = Math.ceil(m / WG);
    const [gx, gy] = groups <= 65535 ? [groups, 1] : [65535, Math.ceil(groups / 65535)];
    rt.dispatch(kernel, bindings, params, [gx, gy]);
  }
  return out;
}

/**
 * Sets every element of `t` to `value` (in place; returns `t`).
 *
 * @param t the tensor
 * @param value the value
 * @example Usage
 * ```ts ignore
 * fill(acc, 0);
 * ```
 */
export function fill(t: Tensor, value: number): Tensor {
  return map("s0", [], [value], { out: t });
}

/**
 * `alpha·a + beta·b` (new tensor, or `out`).
 *
 * @param alpha scale of `a`
 * @param a first input
 * @param beta scale of `b`
 * @param b second input (may broadcast)
 * @param out optional output (may be `a` or `b`)
 * @example Usage
 * ```ts ignore
 * axpby(1, w, -lr, grad, w); // w ← w − lr·grad
 * ```
 */
export function axpby(alpha: number, a: Tensor, beta: number, b: Tensor, out?: Tensor): Tensor {
  return map("s0 * a + s1 * b", [a, b], [alpha, beta], { out, name: "axpby" });
}

/**
 * `a + b` (b may broadcast, e.g. a bias row over a matrix).
 *
 * @param a first input
 * @param b second input
 * @param out optional output
 * @example Usage
 * ```ts ignore
 * const y = add(h, bias);
 * ```
 */
export function add(a: Tensor, b: Tensor, out?: Tensor): Tensor {
  return map("a + b", [a, b], [], { out, name: "add" });
}

/**
 * `a ⊙ b`, the element-wise product (b may broadcast).
 *
 * @param a first input
 * @param b second input
 * @param out optional output
 * @example Usage
 * ```ts ignore
 * const masked = mul(w, mask);
 * ```
 */
export function mul(a: Tensor, b: Tensor, out?: Tensor): Tensor {
  return map("a * b", [a, b], [], { out, name: "mul" });
}

/**
 * `s·a`.
 *
 * @param a the input
 * @param s the scale
 * @param out optional output
 * @example Usage
 * ```ts ignore
 * scale(G, 1 / tokens, G); // in place
 * ```
 */
export function scale(a: Tensor, s: number, out?: Tensor): Tensor {
  return map("s0 * a", [a], [s], { out, name: "scale" });
}
