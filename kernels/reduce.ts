/**
 * Reductions on the GPU: sums, sums of squares, max/min/absmax over all elements, each row or
 * each column; the Frobenius norm; counts of zeros and of non-finite values. Results stay on the
 * GPU as tensors so that callers read back once, after recording everything else.
 *
 * One kernel generator serves all of them, in two shapes:
 * - segment reduction: one workgroup of 64 reduces a contiguous segment (a row, or a 4096-element
 *   slice for "all", repeated on the partial results until one value is left);
 * - column reduction: one invocation per column walks a block of rows (coalesced across lanes),
 *   repeated on the per-block partials until one row is left.
 * Inputs larger than one storage binding are processed in windows of whole rows.
 *
 * @module
 */
import { GpuError, grid, packParams, type Runtime } from "./device.ts";
import { Tensor } from "./tensor.ts";

/**
 * Reduction operators.
 *
 * @example Usage
 * ```ts ignore
 * import { reduce, type ReduceOp, Tensor } from "@llm-surgeon/toolkit";
 * const t = await Tensor.from([3, -4], [1, 2]);
 * const op: ReduceOp = "sumsq";
 * console.log(await reduce(t, op).item()); // 25
 * ```
 */
export type ReduceOp = "sum" | "sumsq" | "max" | "min" | "absmax";
/**
 * What to reduce over: everything, each row (→ `[rows]`), or each column (→ `[cols]`).
 *
 * @example Usage
 * ```ts ignore
 * import { reduce, type ReduceAxis, Tensor } from "@llm-surgeon/toolkit";
 * const t = await Tensor.from([1, 2, 3, 4, 5, 6], [2, 3]);
 * const axis: ReduceAxis = "cols";
 * console.log(await reduce(t, "max", axis).read()); // Float32Array [4, 5, 6]
 * ```
 */
export type ReduceAxis = "all" | "rows" | "cols";

type AnyOp = ReduceOp | "zeros" | "nonfinite" | "count";

const WG = 64;
const SEG = 4096;

interface OpInfo {
  /** Accumulator type. */
  type: "f32" | "u32";
  /** Map applied to an input element on the first pass. */
  first: string;
  /** Combines two accumulators. */
  combine: string;
  /** Identity element as u32 bits. */
  init: number;
}

const NEG_INF = 0xff800000, POS_INF = 0x7f800000;

function info(op: AnyOp): OpInfo {
  switch (op) {
    case "sum":
      return { type: "f32", first: "x", combine: "a + b", init: 0 };
    case "sumsq":
      return { type: "f32", first: "x * x", combine: "a + b", init: 0 };
    case "max":
      return { type: "f32", first: "x", combine: "max(a, b)", init: NEG_INF };
    case "min":
      return { type: "f32", first: "x", combine: "min(a, b)", init: POS_INF };
    case "absmax":
      return { type: "f32", first: "abs(x)", combine: "max(a, b)", init: 0 };
    case "zeros":
      return { type: "u32", first: "select(0u, 1u, x == 0.0)", combine: "a + b", init: 0 };
    case "count":
      // Later passes of the counting ops: u32 sums. (Summing the counts as f32 would add
      // denormal bit patterns: exact on llvmpipe, zero on GPUs that flush denormals.)
      return { type: "u32", first: "x", combine: "a + b", init: 0 };
    case "nonfinite":
      return {
        type: "u32",
        first: "select(0u, 1u, (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u)",
        combine: "a + b",
        init: 0,
      };
  }
}

/** The accumulation combine for later passes: sumsq and absmax become sum and max. */
function later(op: AnyOp): AnyOp {
  return op === "sumsq"
    ? "sum"
    : op === "absmax"
    ? "max"
    : op === "zeros" || op === "nonfinite"
    ? "count"
    : op;
}

function header(op: AnyOp, firstPass: boolean): string {
  const i = info(op);
  const inType = firstPass ? "f32" : i.type;
  const map = firstPass ? i.first : "x";
  return `@group(0) @binding(0) var<storage, read> src: array<${inType}>;
@group(0) @binding(1) var<storage, read_write> dst: array<${i.type}>;
struct P { n: u32, segStride: u32, segLen: u32, segCount: u32, srcOff: u32, dstOff: u32, init: u32, ld: u32 };
@group(0) @binding(2) var<uniform> p: P;
fn first(x: ${inType}) -> ${i.type} { return ${map}; }
fn comb(a: ${i.type}, b: ${i.type}) -> ${i.type} { return ${i.combine}; }
fn initv() -> ${i.type} { return ${i.type === "f32" ? "bitcast<f32>(p.init)" : "p.init"}; }`;
}

function segKernel(rt: Runtime, op: AnyOp, firstPass: boolean) {
  const t = info(op).type;
  return rt.kernel(
    `reduce_seg_${op}_${firstPass ? 1 : 0}`,
    `${header(op, firstPass)}
var<workgroup> sh: array<${t}, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(num_workgroups) nw: vec3u) {
  let seg = wid.x + wid.y * nw.x;
  if (seg >= p.segCount) { return; }
  let start = seg * p.segStride;
  let len = min(p.segLen, p.n - start);
  var acc = initv();
  for (var i = lid.x; i < len; i = i + ${WG}u) { acc = comb(acc, first(src[p.srcOff + start + i])); }
  sh[lid.x] = acc;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s = s >> 1u) {
    if (lid.x < s) { sh[lid.x] = comb(sh[lid.x], sh[lid.x + s]); }
    workgroupBarrier();
  }
  if (lid.x == 0u) { dst[p.dstOff + seg] = sh[0]; }
}`,
  );
}

function colKernel(rt: Runtime, op: AnyOp, firstPass: boolean) {
  return rt.kernel(
    `reduce_col_${op}_${firstPass ? 1 : 0}`,
    `${header(op, firstPass)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  // One lane per column c (segCount lanes, lane stride segStride) walking a block of segLen
  // steps of stride ld out of n. Columns of a matrix: lane stride 1, step stride = row length;
  // rows of a narrow matrix: lane stride = row length, step stride 1.
  let c = gid.x + gid.z * nw.x * ${WG}u;
  let b = gid.y;
  if (c >= p.segCount) { return; }
  let r0 = b * p.segLen;
  let r1 = min(r0 + p.segLen, p.n);
  var acc = initv();
  for (var r = r0; r < r1; r = r + 1u) { acc = comb(acc, first(src[p.srcOff + r * p.ld + c * p.segStride])); }
  dst[p.dstOff + b * p.segCount + c] = acc;
}`,
  );
}

function window(rt: Runtime, t: Tensor, start: number, count: number) {
  const align = rt.offsetAlign / 4;
  const s0 = Math.floor(start / align) * align;
  return { range: t.range(s0, Math.max(1, start + count - s0)), off: start - s0 };
}

function limitElems(rt: Runtime): number {
  return Math.floor(rt.maxBinding / 4) - rt.offsetAlign / 4;
}

/** Reduces segments `[s·stride, s·stride + len)` of `src` (flat, `n` elements) into `dst`. */
function segments(
  src: Tensor,
  n: number,
  segStride: number,
  segLen: number,
  op: AnyOp,
  firstPass: boolean,
  dst: Tensor,
  srcBase = 0,
  dstBase = 0,
): void {
  const rt = src.rt;
  const segCount = Math.ceil(n / segStride);
  const perWindow = Math.max(1, Math.floor(limitElems(rt) / segStride));
  const k = segKernel(rt, op, firstPass);
  for (let s0 = 0; s0 < segCount; s0 += perWindow) {
    const count = Math.min(perWindow, segCount - s0);
    const start = s0 * segStride;
    const len = Math.min(n - start, count * segStride);
    const w = window(rt, src, srcBase + start, len);
    const params = packParams(len, segStride, segLen, count, w.off, dstBase + s0, info(op).init, 0);
    rt.dispatch(k, [w.range, dst.range()], params, grid(count));
  }
}

/**
 * Longest row that one workgroup reduces in one pass: its lanes then loop at most
 * `LONG_ROW / WG` = 16,384 times. Mesa's llvmpipe silently ends every loop of an invocation after
 * 65,535 iterations in total, so longer rows go through per-row partials of `SEG` elements.
 */
const LONG_ROW = 1 << 20;

/** Rows longer than {@link LONG_ROW}: partials of `SEG` elements per row, then their rows. */
function longRows(t: Tensor, R: number, C: number, op: AnyOp, out: Tensor): void {
  const parts = Math.ceil(C / SEG);
  const type = info(op).type;
  const partial = new Tensor(t.rt, [R, parts], type === "f32" ? "f32" : "u32", "reduce_rows");
  for (let r = 0; r < R; r++) segments(t, C, SEG, SEG, op, true, partial, r * C, r * parts);
  segments(partial, R * parts, parts, parts, later(op), false, out);
  partial.dispose();
}

/** Reduces an `[R, C]` matrix to `[C]` through per-block partials. */
function columns(src: Tensor, R: number, C: number, op: AnyOp, firstPass: boolean): Tensor {
  const rt = src.rt;
  const type = info(op).type;
  // Rows per block: 256, fewer when 256 rows of C columns exceed one binding (each window of
  // the dispatch loop below holds whole blocks, so a block must fit one binding).
  const fit = Math.floor(limitElems(rt) / C);
  if (fit < 1) {
    throw new GpuError(
      `reduce(${src.name}, cols)`,
      `a row of ${src} is larger than one storage binding (${rt.maxBinding} bytes)`,
    );
  }
  let block = Math.min(256, fit);
  while (Math.ceil(R / block) > 65535) block *= 2;
  if (block > fit) {
    throw new GpuError(`reduce(${src.name}, cols)`, `${src} has too many rows for its row length`);
  }
  const nb = Math.max(1, Math.ceil(R / block));
  const dst = new Tensor(rt, nb > 1 ? [nb, C] : [C], type === "f32" ? "f32" : "u32", "reduce_cols");
  const k = colKernel(rt, op, firstPass);
  const rowsPerWindow = Math.max(block, Math.floor(limitElems(rt) / C / block) * block);
  for (let r0 = 0; r0 < R; r0 += rowsPerWindow) {
    const rows = Math.min(rowsPerWindow, R - r0);
    const w = window(rt, src, r0 * C, rows * C);
    const params = packParams(rows, 1, block, C, w.off, (r0 / block) * C, info(op).init, C);
    rt.dispatch(k, [w.range, dst.range()], params, [Math.ceil(C / WG), Math.ceil(rows / block)]);
  }
  if (nb === 1) return dst;
  const next = columns(dst, nb, C, later(op), false);
  dst.dispose();
  return next;
}

/** Rows of a narrow matrix: one lane per row (a workgroup per row would idle). */
function narrowRows(src: Tensor, R: number, C: number, op: AnyOp, dst: Tensor): void {
  const rt = src.rt;
  const k = colKernel(rt, op, true);
  const rowsPerWindow = Math.max(1, Math.floor(limitElems(rt) / C));
  for (let r0 = 0; r0 < R; r0 += rowsPerWindow) {
    const rows = Math.min(rowsPerWindow, R - r0);
    const w = window(rt, src, r0 * C, rows * C);
    const params = packParams(C, C, C, rows, w.off, r0, info(op).init, 1);
    const [gx, gz] = grid(Math.ceil(rows / WG));
    rt.dispatch(k, [w.range, dst.range()], params, [gx, 1, gz]);
  }
}

function run(t: Tensor, op: AnyOp, axis: ReduceAxis): Tensor {
  const what = `reduce(${t.name}, ${op}, ${axis})`;
  if (t.dtype !== "f32") throw new GpuError(what, `expects an f32 tensor, got ${t}`);
  const rt = t.rt;
  const C = t.shape.length === 0 ? 1 : t.cols;
  const R = t.shape.slice(0, -1).reduce((a, b) => a * b, 1);
  const type = info(op).type;
  const dt = type === "f32" ? "f32" : "u32";
  const outLen = axis === "all" ? 1 : axis === "rows" ? R : C;
  if (t.size === 0 || (axis === "all" && t.size === 0)) {
    const out = new Tensor(rt, [outLen], dt, what);
    if (outLen > 0 && info(op).init !== 0) {
      out.write(new Uint32Array(outLen).fill(info(op).init));
    }
    return out;
  }
  if (axis === "cols") return columns(t, R, C, op, true);
  if (axis === "rows") {
    const out = new Tensor(rt, [R], dt, what);
    if (C > LONG_ROW) longRows(t, R, C, op, out);
    else if (C >= 256) segments(t, t.size, C, C, op, true, out);
    else narrowRows(t, R, C, op, out);
    return out;
  }
  // "all": 4096-element segments, then reduce the partials until one value is left.
  let cur = t, n = t.size, firstPass = true, curOp: AnyOp = op;
  for (;;) {
    const parts = Math.ceil(n / SEG);
    const out = new Tensor(rt, [parts], dt, what);
    segments(cur, n, SEG, SEG, curOp, firstPass, out);
    if (cur !== t) cur.dispose();
    if (parts === 1) return out;
    cur = out;
    n = parts;
    firstPass = false;
    curOp = later(op);
  }
}

/**
 * Reduces `t` with `op` over all elements (→ `[1]`), each row (→ `[rows]`) or each column
 * (→ `[cols]`). A tensor is viewed as a matrix `[rows, cols]` with `cols` its last dimension.
 * Empty reductions give the identity (0 for sums and absmax, −∞ for max, +∞ for min).
 *
 * @param t an f32 tensor
 * @param op "sum" | "sumsq" | "max" | "min" | "absmax"
 * @param axis "all" (default) | "rows" | "cols"
 * @example Usage
 * ```ts ignore
 * const rowNorms2 = reduce(W, "sumsq", "rows");  // [R]
 * const peak = await reduce(x, "absmax").item();
 * ```
 */
export function reduce(t: Tensor, op: ReduceOp, axis: ReduceAxis = "all"): Tensor {
  if (!["sum", "sumsq", "max", "min", "absmax"].includes(op)) {
    throw new GpuError(`reduce(${t.name})`, `unknown op "${op}"`);
  }
  if (!["all", "rows", "cols"].includes(axis)) {
    throw new GpuError(`reduce(${t.name})`, `unknown axis "${axis}"`);
  }
  return run(t, op, axis);
}

/**
 * The Frobenius norm `sqrt(Σ x²)` as a tensor of one element.
 *
 * @param t an f32 tensor
 * @example Usage
 * ```ts ignore
 * const n = await norm(W).item();
 * ```
 */
export function norm(t: Tensor): Tensor {
  const s = run(t, "sumsq", "all");
  const rt = t.rt;
  const k = rt.kernel(
    "reduce_sqrt",
    `@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(1) fn main() { x[0] = sqrt(x[0]); }`,
  );
  rt.dispatch(k, [s.range()], null, [1]);
  return s;
}

/**
 * Number of elements equal to zero (±0) as a `u32` tensor of one element (read it with
 * `readU32()`; exact up to 2³²−1).
 *
 * @param t an f32 tensor
 * @example Usage
 * ```ts ignore
 * const zeros = (await countZeros(W).readU32())[0];
 * ```
 */
export function countZeros(t: Tensor): Tensor {
  return run(t, "zeros", "all");
}

/**
 * Number of NaN or ±∞ elements as a `u32` tensor of one element (read it with `readU32()`).
 *
 * @param t an f32 tensor
 * @example Usage
 * ```ts ignore
 * if ((await countNonFinite(G).readU32())[0] > 0) throw new Error("G has NaN/Inf");
 * ```
 */
export function countNonFinite(t: Tensor): Tensor {
  return run(t, "nonfinite", "all");
}
