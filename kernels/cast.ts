/**
 * Casts between f32 and f16 tensors on the GPU: {@link toF16} rounds, {@link toF32} widens.
 *
 * Both work on the bit patterns with integer arithmetic only, so no `shader-f16` feature is
 * needed and the result does not depend on how a driver rounds or flushes: they reproduce the
 * host conversions `halfBits`/`halfValues` of `tensor.ts` bit for bit (round to nearest, ties to
 * even; overflow to ±Infinity; subnormal halves kept; NaN keeps its sign and top payload bits).
 * One invocation handles one 32-bit word of halves (two elements); tensors larger than one
 * storage binding are cast in chunks.
 *
 * @module
 */
import { GpuError, grid, packParams, type Runtime } from "./device.ts";
import { Tensor } from "./tensor.ts";

const WG = 256;

/**
 * WGSL of the two bit-level conversions, shared by both cast kernels. `f32ToHalf` returns the
 * half bit pattern nearest to the f32 with bits `x`; `halfToF32` the f32 bits of a half.
 */
const CONVERT_WGSL = `
fn f32ToHalf(x: u32) -> u32 {
  let sign = (x >> 16u) & 0x8000u;
  let e = (x >> 23u) & 0xffu;
  let m = x & 0x7fffffu;
  if (e == 0xffu) {
    let payload = m >> 13u;
    return sign | 0x7c00u | select(payload, 0x200u, m != 0u && payload == 0u);
  }
  if (e >= 143u) { return sign | 0x7c00u; }
  if (e >= 113u) {
    let base = ((e - 112u) << 10u) | (m >> 13u);
    let rest = m & 0x1fffu;
    let up = select(0u, 1u, rest > 0x1000u || (rest == 0x1000u && (base & 1u) == 1u));
    return sign | (base + up);
  }
  if (e < 102u) { return sign; }
  let sig = m | 0x800000u;
  let s = 126u - e;
  let k = sig >> s;
  let rest = sig & ((1u << s) - 1u);
  let half = 1u << (s - 1u);
  let up = select(0u, 1u, rest > half || (rest == half && (k & 1u) == 1u));
  return sign | (k + up);
}
fn halfToF32(h: u32) -> u32 {
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0x1fu) { return sign | 0x7f800000u | (m << 13u); }
  if (e != 0u) { return sign | ((e + 112u) << 23u) | (m << 13u); }
  if (m == 0u) { return sign; }
  let p = firstLeadingBit(m);
  return sign | ((p + 103u) << 23u) | ((m << (23u - p)) & 0x7fffffu);
}`;

/**
 * WGSL of a cast kernel: invocation `w` (one word of halves) runs `body` with `src`, `dst`, the
 * chunk's element count `p.n` and the conversions in scope.
 */
function castSource(body: string): string {
  return `
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
struct P { n: u32, words: u32 };
@group(0) @binding(2) var<uniform> p: P;
${CONVERT_WGSL}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let w = gid.x + gid.y * nw.x * ${WG}u;
  if (w >= p.words) { return; }
  ${body}
}`;
}

/** Rounds f32 words `src[2w], src[2w + 1]` into the halves of word `dst[w]`. */
const TO_F16_WGSL = castSource(`let lo = f32ToHalf(src[2u * w]);
  var hi = 0u;
  if (2u * w + 1u < p.n) { hi = f32ToHalf(src[2u * w + 1u]); }
  dst[w] = lo | (hi << 16u);`);

/** Widens the two halves of word `src[w]` into f32 words `dst[2w], dst[2w + 1]`. */
const TO_F32_WGSL = castSource(`let pair = src[w];
  dst[2u * w] = halfToF32(pair & 0xffffu);
  if (2u * w + 1u < p.n) { dst[2u * w + 1u] = halfToF32(pair >> 16u); }`);

/**
 * Options of {@link toF16} and {@link toF32}.
 *
 * @example Usage
 * ```ts ignore
 * import { type CastOptions, toF16 } from "@llm-surgeon/toolkit";
 * const opts: CastOptions = { name: "fc1.weight (f16)" };
 * const w16 = toF16(w, opts);
 * ```
 */
export interface CastOptions {
  /** Write into this tensor (same size, the target dtype) instead of a new one. */
  out?: Tensor;
  /** Name of a new output tensor. Default: the input's name. */
  name?: string;
}

/**
 * Records one cast in chunks of whole words that fit a binding on both sides: `words` words of
 * halves face `2·words` f32 words, and both chunk offsets stay aligned.
 */
function castChunks(
  rt: Runtime,
  kind: "toF16" | "toF32",
  src: Tensor,
  dst: Tensor,
): void {
  const n = src.size;
  if (n === 0) return;
  const kernel = rt.kernel(`cast_${kind}`, kind === "toF16" ? TO_F16_WGSL : TO_F32_WGSL);
  const align = rt.offsetAlign / 4; // words of halves per aligned offset of the half side
  const chunkWords = Math.floor(rt.maxBinding / 8 / align) * align;
  const totalWords = Math.ceil(n / 2);
  const [half, full] = kind === "toF16" ? [dst, src] : [src, dst];
  for (let w0 = 0; w0 < totalWords; w0 += chunkWords) {
    const words = Math.min(chunkWords, totalWords - w0);
    const e0 = 2 * w0, count = Math.min(2 * words, n - e0);
    const fullRange = full.range(e0, count);
    const halfRange = half.range(e0, count);
    const bindings = kind === "toF16" ? [fullRange, halfRange] : [halfRange, fullRange];
    rt.dispatch(kernel, bindings, packParams(count, words), grid(Math.ceil(words / WG)));
  }
}

/** Checks the input's dtype and makes (or checks) the output of a cast to `to`. */
function castOutput(kind: "toF16" | "toF32", t: Tensor, to: "f16" | "f32", opts: CastOptions) {
  const op = `${kind}(${t.name})`;
  if (t.dtype !== "f32" && t.dtype !== "f16") {
    throw new GpuError(op, `expects an f32 or f16 tensor, got ${t}`);
  }
  const out = opts.out;
  if (!out) return new Tensor(t.rt, t.shape, to, opts.name ?? t.name);
  if (out.dtype !== to || out.size !== t.size) {
    throw new GpuError(op, `output ${out} must be ${to} with ${t.size} elements`);
  }
  if (out === t) throw new GpuError(op, "output must not be the input");
  return out;
}

/**
 * Rounds an f32 tensor to a new f16 tensor on the GPU (half the memory), exactly as the host
 * conversion `halfBits` does. An f16 input is copied. Records the work; returns the output.
 *
 * @param t the f32 tensor (any shape)
 * @param opts output tensor or name
 * @returns the f16 tensor, of `t`'s shape
 *
 * @example Usage
 * ```ts ignore
 * import { Tensor, toF16 } from "@llm-surgeon/toolkit";
 * const w = await Tensor.from([0.1, 70000, -2], [3]);
 * const h = toF16(w);
 * console.log(h.dtype, await h.read()); // "f16" Float32Array [0.0999755859375, Infinity, -2]
 * ```
 */
export function toF16(t: Tensor, opts: CastOptions = {}): Tensor {
  const out = castOutput("toF16", t, "f16", opts);
  if (t.dtype === "f16") out.copyFrom(t);
  else castChunks(t.rt, "toF16", t, out);
  return out;
}

/**
 * Widens an f16 tensor to a new f32 tensor on the GPU (exact). An f32 input is copied.
 * Records the work; returns the output.
 *
 * @param t the f16 tensor (any shape)
 * @param opts output tensor or name
 * @returns the f32 tensor, of `t`'s shape
 *
 * @example Usage
 * ```ts ignore
 * import { Tensor, toF32 } from "@llm-surgeon/toolkit";
 * const h = await Tensor.from(new Uint16Array([0x3c00, 0x7bff, 0x0001]), [3]); // f16 bits
 * console.log(await toF32(h).read()); // Float32Array [1, 65504, 5.960464477539063e-8]
 * ```
 */
export function toF32(t: Tensor, opts: CastOptions = {}): Tensor {
  const out = castOutput("toF32", t, "f32", opts);
  if (t.dtype === "f32") out.copyFrom(t);
  else castChunks(t.rt, "toF32", t, out);
  return out;
}
