/**
 * Neural-net kernels, llm.c style: one function per layer and direction, output buffers first,
 * then inputs and weights. Every function records GPU work and returns at once (no read-back).
 *
 * Size legend used in the shape lines of the docs:
 * - `T` rows (tokens) of the current call, `C` channels, `V` vocabulary (or one vocabulary piece),
 * - `H` query heads, `KH` key/value heads (`H % KH == 0`, group `g = H / KH`), `D` head size,
 * - `L` key length (cached positions), `S` sampled labels per position.
 *
 * Backward functions say whether they overwrite or accumulate (`+=`) their gradient outputs.
 * Element-wise work goes through {@link map}; matrix products through {@link matmul}.
 *
 * @module
 */
import { f32, GpuError, grid, packParams, type Runtime } from "./device.ts";
import { chunkElems, map } from "./elementwise.ts";
import { BAND_OPEN, matmul } from "./gemm.ts";
import { Tensor } from "./tensor.ts";

const WG = 256;

/** Workgroup reductions over 256 lanes, shared by the row kernels. */
const REDUCE = `
var<workgroup> red_: array<f32, 256>;
fn rsum(v: f32, lid: u32) -> f32 {
  red_[lid] = v;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) { red_[lid] = red_[lid] + red_[lid + s]; }
    workgroupBarrier();
  }
  let r = red_[0];
  workgroupBarrier();
  return r;
}
fn rmax(v: f32, lid: u32) -> f32 {
  red_[lid] = v;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) { red_[lid] = max(red_[lid], red_[lid + s]); }
    workgroupBarrier();
  }
  let r = red_[0];
  workgroupBarrier();
  return r;
}`;

/** Entry point of a kernel with one workgroup of 256 lanes per row. */
const ROW_MAIN = `@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nw: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nw.x;`;

/** Entry point of a kernel with one lane per element. */
const ELEM_MAIN = `@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nw: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nw.x) * 256u + lid;`;

/**
 * Tuning of the row kernels (norms, softmax, cross-entropy). `rowLanes`: lanes cooperating on
 * one row; 0 = automatic (1 on software adapters, where workgroup barriers are expensive, else
 * 256).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { nnTuning } from "@llm-surgeon/toolkit";
 * const saved = nnTuning.rowLanes;
 * nnTuning.rowLanes = 256; // force the many-lane row kernels, e.g. to test them on a CPU adapter
 * assert.equal(nnTuning.rowLanes, 256);
 * nnTuning.rowLanes = saved; // back to automatic
 * ```
 */
export const nnTuning: { rowLanes: number } = { rowLanes: 0 };

/**
 * Row length above which row kernels always use 256 lanes. Mesa's llvmpipe stops every loop of
 * an invocation, silently, once the invocation has run 65,535 loop iterations in total (measured:
 * a loop to 70,000 ends at 65,535; a second loop after one of 60,000 gets 5,535). One lane per
 * row makes a few passes over the row, so long rows (an OPT vocabulary of 50,272) must be split
 * over lanes.
 */
const LONG_ROW = 8192;

/**
 * Rows (tokens) one lane walks in one dispatch of the column reductions (norm parameter and
 * embedding gradients); longer inputs accumulate over several dispatches, so that a lane stays
 * well under llvmpipe's 65,535 loop iterations (see {@link LONG_ROW}).
 */
const TOKEN_CHUNK = 32768;

/**
 * Lanes per row for a row kernel whose single lane would run `passes` loops over a row of
 * `rowLen` (default 3: max, sum, write): 256 whenever one lane would exceed `3·LONG_ROW`
 * iterations.
 */
function lanesFor(rt: Runtime, rowLen: number, passes = 3): number {
  if (rowLen * Math.max(passes, 3) > 3 * LONG_ROW) return 256;
  const l = nnTuning.rowLanes || (rt.adapter.isSoftware ? 1 : 256);
  if (l !== 1 && l !== 256) {
    throw new GpuError("nnTuning", `rowLanes must be 0, 1 or 256, got ${l}`);
  }
  return l;
}

/**
 * Prelude of a row kernel: `row`, `lid`, `LANES`, reductions `rsum`/`rmax` and `rbarrier`.
 * With 1 lane, each invocation owns a whole row and nothing synchronises.
 */
function rowPrelude(lanes: number): string {
  if (lanes === 1) {
    return `const LANES = 1u;
fn rsum(v: f32, lid: u32) -> f32 { return v; }
fn rmax(v: f32, lid: u32) -> f32 { return v; }
fn rbarrier() {}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let row = gid.x + gid.y * nw.x * 64u;
  let lid = 0u;`;
  }
  return `const LANES = 256u;
${REDUCE}
fn rbarrier() { workgroupBarrier(); }
${ROW_MAIN}`;
}

function storage(binding: number, name: string, type: string, write: boolean): string {
  return `@group(0) @binding(${binding}) var<storage, ${
    write ? "read_write" : "read"
  }> ${name}: array<${type}>;`;
}

function uniform(binding: number, fields: string): string {
  return `struct P { ${fields} };\n@group(0) @binding(${binding}) var<uniform> p: P;`;
}

/** Records one dispatch with one lane per element (n elements). */
function dispatchElems(
  rt: Runtime,
  name: string,
  wgsl: string,
  bind: Tensor[],
  params: ArrayBuffer,
  n: number,
) {
  if (n === 0) return;
  rt.dispatch(rt.kernel(name, wgsl), bind.map((t) => t.range()), params, grid(Math.ceil(n / WG)));
}

/** Records one dispatch of a row kernel made by {@link rowPrelude} (`lanes` lanes per row). */
function dispatchRows(
  rt: Runtime,
  name: string,
  wgsl: string,
  bind: Tensor[],
  params: ArrayBuffer,
  rows: number,
  lanes = 256,
): void {
  if (rows === 0) return;
  const groups = lanes === 1 ? grid(Math.ceil(rows / 64)) : grid(rows);
  rt.dispatch(rt.kernel(`${name}/${lanes}`, wgsl), bind.map((t) => t.range()), params, groups);
}

const dummies = new WeakMap<Runtime, Tensor>();
/** A one-element tensor bound in place of an absent optional input. */
function dummy(rt: Runtime): Tensor {
  let t = dummies.get(rt);
  if (!t || t.disposed) {
    t = new Tensor(rt, [4], "f32", "nn.dummy");
    dummies.set(rt, t);
  }
  return t;
}

function check(op: string, t: Tensor, size: number, what: string): void {
  if (t.dtype === "f16") {
    throw new GpuError(op, `${what} ${t} is f16; ${op} reads 32-bit words (cast it with toF32)`);
  }
  if (t.size !== size) {
    throw new GpuError(op, `${what} ${t} must have ${size} elements, has ${t.size}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Embedding (encoder)

/**
 * Gathers rows of an embedding table: `out[t] (+)= table[ids[t] − rowStart]` for the ids that
 * fall in this table piece (tables larger than one binding are stored in row pieces; call once
 * per piece). Rows whose id is outside the piece are left untouched.
 *
 * - `out` [T, C]; `ids` [T] i32; `table` [Vp, C] (rows `rowStart … rowStart + Vp − 1`).
 *
 * @param accumulate add to `out` instead of overwriting the gathered rows (position embeddings)
 * @example Usage
 * ```ts ignore
 * embeddingForward(h, ids, wte, 0, false);
 * ```
 */
export function embeddingForward(
  out: Tensor,
  ids: Tensor,
  table: Tensor,
  rowStart = 0,
  accumulate = false,
): void {
  const [T, C] = [ids.size, table.cols];
  check("embeddingForward", out, T * C, "out");
  check("embeddingForward", table, table.size, "table");
  const wgsl = `${storage(0, "out_", "f32", true)}
${storage(1, "ids", "i32", false)}
${storage(2, "table", "f32", false)}
${uniform(3, "n: u32, C: u32, start: u32, rows: u32, acc: u32, p0: u32, p1: u32, p2: u32")}
${ELEM_MAIN}
  if (i >= p.n) { return; }
  let t = i / p.C;
  let c = i % p.C;
  let id = ids[t] - i32(p.start);
  if (id < 0 || u32(id) >= p.rows) { return; }
  let v = table[u32(id) * p.C + c];
  if (p.acc == 1u) { out_[i] = out_[i] + v; } else { out_[i] = v; }
}`;
  dispatchElems(
    out.rt,
    "nn.embedding_forward",
    wgsl,
    [out, ids, table],
    packParams(T * C, C, rowStart, table.rows, accumulate ? 1 : 0),
    T * C,
  );
}

/**
 * Embedding backward for one table piece: `dtable[v] += Σ_{t: ids[t] = rowStart + v} dout[t]`.
 * Accumulates. Cost O(Vp·C·T): meant for tests and small tables (the toolkit never needs
 * embedding gradients for pruning).
 *
 * - `dtable` [Vp, C]; `dout` [T, C]; `ids` [T] i32.
 *
 * @example Usage
 * ```ts ignore
 * // ids [T] i32, dout [T, C]; rows 0 … Vp − 1 of the table piece get their tokens' gradients
 * embeddingBackward(dwte, dh, ids, 0);
 * ```
 */
export function embeddingBackward(dtable: Tensor, dout: Tensor, ids: Tensor, rowStart = 0): void {
  const [T, C] = [ids.size, dtable.cols];
  check("embeddingBackward", dout, T * C, "dout");
  const wgsl = `${storage(0, "dtable", "f32", true)}
${storage(1, "dout", "f32", false)}
${storage(2, "ids", "i32", false)}
${uniform(3, "n: u32, C: u32, start: u32, t0: u32, t1: u32, p0: u32, p1: u32, p2: u32")}
${ELEM_MAIN}
  if (i >= p.n) { return; }
  let v = i32(i / p.C + p.start);
  let c = i % p.C;
  var s = 0.0;
  for (var t = p.t0; t < p.t1; t++) {
    if (ids[t] == v) { s = s + dout[t * p.C + c]; }
  }
  dtable[i] = dtable[i] + s;
}`;
  // Chunks of TOKEN_CHUNK tokens (accumulating): llvmpipe's per-invocation loop limit.
  for (let t0 = 0; t0 < T; t0 += TOKEN_CHUNK) {
    dispatchElems(
      dtable.rt,
      "nn.embedding_backward",
      wgsl,
      [dtable, dout, ids],
      packParams(dtable.size, C, rowStart, t0, Math.min(T, t0 + TOKEN_CHUNK)),
      dtable.size,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm and RMSNorm

/**
 * LayerNorm over the last dimension: `out = (inp − mean)·rstd·weight + bias`, saving `mean` and
 * `rstd` for the backward. `weight`/`bias` null means no affine part.
 *
 * - `out` [T, C]; `mean` [T]; `rstd` [T]; `inp` [T, C]; `weight` [C]; `bias` [C].
 *
 * @example Usage
 * ```ts ignore
 * layernormForward(ln, mean, rstd, h, w, b, 1e-5);
 * ```
 */
export function layernormForward(
  out: Tensor,
  mean: Tensor,
  rstd: Tensor,
  inp: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
  eps: number,
): void {
  const [T, C] = [inp.rows, inp.cols];
  check("layernormForward", out, T * C, "out");
  check("layernormForward", mean, T, "mean");
  check("layernormForward", rstd, T, "rstd");
  const rt = inp.rt;
  const lanes = lanesFor(rt, C);
  const wgsl = `${storage(0, "out_", "f32", true)}
${storage(1, "mean_", "f32", true)}
${storage(2, "rstd_", "f32", true)}
${storage(3, "inp", "f32", false)}
${storage(4, "w", "f32", false)}
${storage(5, "b", "f32", false)}
${uniform(6, "rows: u32, C: u32, hasW: u32, hasB: u32, eps: f32, p1: f32, p2: f32, p3: f32")}
${rowPrelude(lanes)}
  if (row >= p.rows) { return; }
  let base = row * p.C;
  var s = 0.0;
  for (var c = lid; c < p.C; c += LANES) { s = s + inp[base + c]; }
  let m = rsum(s, lid) / f32(p.C);
  var v = 0.0;
  for (var c = lid; c < p.C; c += LANES) { let d = inp[base + c] - m; v = v + d * d; }
  let r = inverseSqrt(rsum(v, lid) / f32(p.C) + p.eps);
  for (var c = lid; c < p.C; c += LANES) {
    var y = (inp[base + c] - m) * r;
    if (p.hasW == 1u) { y = y * w[c]; }
    if (p.hasB == 1u) { y = y + b[c]; }
    out_[base + c] = y;
  }
  if (lid == 0u) { mean_[row] = m; rstd_[row] = r; }
}`;
  dispatchRows(
    rt,
    "nn.layernorm_forward",
    wgsl,
    [out, mean, rstd, inp, weight ?? dummy(rt), bias ?? dummy(rt)],
    packParams(T, C, weight ? 1 : 0, bias ? 1 : 0, f32(eps)),
    T,
    lanes,
  );
}

/**
 * LayerNorm backward to the input: `dinp (+)= rstd·(w⊙dout − mean(w⊙dout) − n·mean(w⊙dout⊙n))`
 * with `n = (inp − mean)·rstd`. Overwrites `dinp`, or accumulates when `accumulate`.
 * Parameter gradients: {@link layernormParamBackward}.
 *
 * - `dinp` [T, C]; `dout` [T, C]; `inp` [T, C]; `weight` [C] or null; `mean`, `rstd` [T].
 *
 * @example Usage
 * ```ts ignore
 * layernormForward(ln, mean, rstd, h, w, b, 1e-5); // keeps mean and rstd for the backward
 * layernormBackward(dh, dln, h, w, mean, rstd, true); // adds into the residual gradient
 * ```
 */
export function layernormBackward(
  dinp: Tensor,
  dout: Tensor,
  inp: Tensor,
  weight: Tensor | null,
  mean: Tensor,
  rstd: Tensor,
  accumulate = false,
): void {
  const [T, C] = [inp.rows, inp.cols];
  check("layernormBackward", dinp, T * C, "dinp");
  check("layernormBackward", dout, T * C, "dout");
  const rt = inp.rt;
  const lanes = lanesFor(rt, C);
  const wgsl = `${storage(0, "dinp", "f32", true)}
${storage(1, "dout", "f32", false)}
${storage(2, "inp", "f32", false)}
${storage(3, "w", "f32", false)}
${storage(4, "mean_", "f32", false)}
${storage(5, "rstd_", "f32", false)}
${uniform(6, "rows: u32, C: u32, hasW: u32, acc: u32")}
fn wt(c: u32) -> f32 { if (p.hasW == 1u) { return w[c]; } return 1.0; }
${rowPrelude(lanes)}
  if (row >= p.rows) { return; }
  let base = row * p.C;
  let m = mean_[row];
  let r = rstd_[row];
  var s1 = 0.0;
  var s2 = 0.0;
  for (var c = lid; c < p.C; c += LANES) {
    let dn = wt(c) * dout[base + c];
    s1 = s1 + dn;
    s2 = s2 + dn * (inp[base + c] - m) * r;
  }
  let a = rsum(s1, lid) / f32(p.C);
  let b = rsum(s2, lid) / f32(p.C);
  for (var c = lid; c < p.C; c += LANES) {
    let n = (inp[base + c] - m) * r;
    let g = r * (wt(c) * dout[base + c] - a - n * b);
    if (p.acc == 1u) { dinp[base + c] = dinp[base + c] + g; } else { dinp[base + c] = g; }
  }
}`;
  dispatchRows(
    rt,
    "nn.layernorm_backward",
    wgsl,
    [dinp, dout, inp, weight ?? dummy(rt), mean, rstd],
    packParams(T, C, weight ? 1 : 0, accumulate ? 1 : 0),
    T,
    lanes,
  );
}

/**
 * LayerNorm parameter gradients: `dweight += Σ_t dout⊙n`, `dbias += Σ_t dout` with
 * `n = (inp − mean)·rstd`. Accumulates. (Not needed for pruning; used by tests and fine-tuning.)
 *
 * - `dweight` [C]; `dbias` [C] or null; `dout` [T, C]; `inp` [T, C]; `mean`, `rstd` [T].
 *
 * @example Usage
 * ```ts ignore
 * layernormParamBackward(dw, db, dln, h, mean, rstd); // dw += Σ dln⊙n, db += Σ dln
 * ```
 */
export function layernormParamBackward(
  dweight: Tensor,
  dbias: Tensor | null,
  dout: Tensor,
  inp: Tensor,
  mean: Tensor,
  rstd: Tensor,
): void {
  normParamBackward(dweight, dbias, dout, inp, mean, rstd);
}

/** Column reduction shared by the LayerNorm (with mean) and RMSNorm (mean null) parameter grads. */
function normParamBackward(
  dweight: Tensor,
  dbias: Tensor | null,
  dout: Tensor,
  inp: Tensor,
  mean: Tensor | null,
  rstd: Tensor,
): void {
  const [T, C] = [inp.rows, inp.cols];
  const rt = inp.rt;
  const wgsl = `${storage(0, "dw", "f32", true)}
${storage(1, "db", "f32", true)}
${storage(2, "dout", "f32", false)}
${storage(3, "inp", "f32", false)}
${storage(4, "mean_", "f32", false)}
${storage(5, "rstd_", "f32", false)}
${uniform(6, "t0: u32, C: u32, hasB: u32, rms: u32, t1: u32, p0: u32, p1: u32, p2: u32")}
${ELEM_MAIN}
  if (i >= p.C) { return; }
  var sw = 0.0;
  var sb = 0.0;
  for (var t = p.t0; t < p.t1; t++) {
    let d = dout[t * p.C + i];
    var x = inp[t * p.C + i];
    if (p.rms == 0u) { x = x - mean_[t]; }
    sw = sw + d * x * rstd_[t];
    sb = sb + d;
  }
  dw[i] = dw[i] + sw;
  if (p.hasB == 1u) { db[i] = db[i] + sb; }
}`;
  // One lane per column walks the rows: chunks of TOKEN_CHUNK rows (accumulating) keep it under
  // llvmpipe's per-invocation loop limit.
  for (let t0 = 0; t0 < T; t0 += TOKEN_CHUNK) {
    dispatchElems(
      rt,
      "nn.norm_param_backward",
      wgsl,
      [dweight, dbias ?? dummy(rt), dout, inp, mean ?? rstd, rstd],
      packParams(t0, C, dbias ? 1 : 0, mean ? 0 : 1, Math.min(T, t0 + TOKEN_CHUNK)),
      C,
    );
  }
}

/**
 * RMSNorm (Llama, computed in f32): `out = inp·rstd ⊙ weight`, `rstd = 1/√(mean(inp²) + eps)`,
 * saving `rstd` for the backward.
 *
 * - `out` [T, C]; `rstd` [T]; `inp` [T, C]; `weight` [C].
 *
 * @example Usage
 * ```ts ignore
 * rmsnormForward(n1, rstd, h, w, 1e-5);
 * ```
 */
export function rmsnormForward(
  out: Tensor,
  rstd: Tensor,
  inp: Tensor,
  weight: Tensor,
  eps: number,
): void {
  const [T, C] = [inp.rows, inp.cols];
  check("rmsnormForward", out, T * C, "out");
  check("rmsnormForward", rstd, T, "rstd");
  check("rmsnormForward", weight, C, "weight");
  const lanes = lanesFor(inp.rt, C);
  const wgsl = `${storage(0, "out_", "f32", true)}
${storage(1, "rstd_", "f32", true)}
${storage(2, "inp", "f32", false)}
${storage(3, "w", "f32", false)}
${uniform(4, "rows: u32, C: u32, p0: u32, p1: u32, eps: f32, q0: f32, q1: f32, q2: f32")}
${rowPrelude(lanes)}
  if (row >= p.rows) { return; }
  let base = row * p.C;
  var s = 0.0;
  for (var c = lid; c < p.C; c += LANES) { let x = inp[base + c]; s = s + x * x; }
  let r = inverseSqrt(rsum(s, lid) / f32(p.C) + p.eps);
  for (var c = lid; c < p.C; c += LANES) { out_[base + c] = w[c] * (inp[base + c] * r); }
  if (lid == 0u) { rstd_[row] = r; }
}`;
  dispatchRows(
    inp.rt,
    "nn.rmsnorm_forward",
    wgsl,
    [out, rstd, inp, weight],
    packParams(T, C, 0, 0, f32(eps)),
    T,
    lanes,
  );
}

/**
 * RMSNorm backward to the input: `dinp (+)= rstd·w⊙dout − inp·rstd³·mean(inp⊙w⊙dout)`.
 * Overwrites `dinp`, or accumulates when `accumulate`. Weight gradient:
 * {@link rmsnormParamBackward}.
 *
 * - `dinp` [T, C]; `dout` [T, C]; `inp` [T, C]; `weight` [C]; `rstd` [T].
 *
 * @example Usage
 * ```ts ignore
 * rmsnormForward(n1, rstd, h, w, 1e-5);
 * rmsnormBackward(dh, dn1, h, w, rstd, true);
 * ```
 */
export function rmsnormBackward(
  dinp: Tensor,
  dout: Tensor,
  inp: Tensor,
  weight: Tensor,
  rstd: Tensor,
  accumulate = false,
): void {
  const [T, C] = [inp.rows, inp.cols];
  check("rmsnormBackward", dinp, T * C, "dinp");
  check("rmsnormBackward", dout, T * C, "dout");
  const lanes = lanesFor(inp.rt, C);
  const wgsl = `${storage(0, "dinp", "f32", true)}
${storage(1, "dout", "f32", false)}
${storage(2, "inp", "f32", false)}
${storage(3, "w", "f32", false)}
${storage(4, "rstd_", "f32", false)}
${uniform(5, "rows: u32, C: u32, acc: u32, p0: u32")}
${rowPrelude(lanes)}
  if (row >= p.rows) { return; }
  let base = row * p.C;
  let r = rstd_[row];
  var s = 0.0;
  for (var c = lid; c < p.C; c += LANES) { s = s + inp[base + c] * w[c] * dout[base + c]; }
  let a = rsum(s, lid) / f32(p.C);
  for (var c = lid; c < p.C; c += LANES) {
    let g = r * w[c] * dout[base + c] - inp[base + c] * r * r * r * a;
    if (p.acc == 1u) { dinp[base + c] = dinp[base + c] + g; } else { dinp[base + c] = g; }
  }
}`;
  dispatchRows(
    inp.rt,
    "nn.rmsnorm_backward",
    wgsl,
    [dinp, dout, inp, weight, rstd],
    packParams(T, C, accumulate ? 1 : 0, 0),
    T,
    lanes,
  );
}

/**
 * RMSNorm weight gradient: `dweight += Σ_t dout⊙inp·rstd`. Accumulates.
 *
 * - `dweight` [C]; `dout` [T, C]; `inp` [T, C]; `rstd` [T].
 *
 * @example Usage
 * ```ts ignore
 * rmsnormParamBackward(dw, dn1, h, rstd);
 * ```
 */
export function rmsnormParamBackward(
  dweight: Tensor,
  dout: Tensor,
  inp: Tensor,
  rstd: Tensor,
): void {
  normParamBackward(dweight, null, dout, inp, null, rstd);
}

// ---------------------------------------------------------------------------------------------
// Rotary position embedding

/**
 * RoPE inverse frequencies as Hugging Face computes them (in f32): `θ^(−2i/D)`, modified by
 * `rope_scaling` (`linear`: divided by the factor; `llama3`: per-frequency smoothing).
 *
 * @param headDim D
 * @param theta rope_theta
 * @param scaling null, `{type: "linear", factor}` or the llama3 parameters
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { ropeInvFreq } from "@llm-surgeon/toolkit";
 * const inv = ropeInvFreq(8, 10000, null); // θ^(−2i/D) in f32: ≈ [1, 0.1, 0.01, 0.001]
 * assert.equal(inv.length, 4);
 * assert.ok(Math.abs(inv[3] - 0.001) < 1e-9);
 * ```
 */
export function ropeInvFreq(
  headDim: number,
  theta: number,
  scaling:
    | null
    | { type: "linear"; factor: number }
    | {
      type: "llama3";
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositions: number;
    },
): Float32Array {
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    inv[i] = 1 / Math.fround(Math.pow(theta, Math.fround((2 * i) / headDim)));
  }
  if (scaling?.type === "linear") {
    for (let i = 0; i < half; i++) inv[i] = inv[i] / scaling.factor;
  } else if (scaling?.type === "llama3") {
    const { factor, lowFreqFactor: lo, highFreqFactor: hi, originalMaxPositions: old } = scaling;
    const lowWavelen = old / lo;
    const highWavelen = old / hi;
    for (let i = 0; i < half; i++) {
      const f = inv[i];
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < highWavelen) continue;
      if (wavelen > lowWavelen) {
        inv[i] = f / factor;
        continue;
      }
      const smooth = (old / wavelen - lo) / (hi - lo);
      inv[i] = (1 - smooth) * (f / factor) + smooth * f;
    }
  }
  return inv;
}

/**
 * Cos/sin tables for positions `0 … n − 1` (f32 angles `fround(p·invFreq)`, like HF).
 *
 * @returns `{cos, sin}`, each `[n, D/2]` row-major
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { ropeInvFreq, ropeTables } from "@llm-surgeon/toolkit";
 * const { cos, sin } = ropeTables(ropeInvFreq(4, 10000, null), 3); // D = 4, positions 0, 1, 2
 * assert.equal(cos.length, 3 * 2);
 * assert.deepEqual(Array.from(cos.subarray(0, 2)), [1, 1]); // position 0: no rotation
 * assert.ok(Math.abs(sin[2] - Math.sin(1)) < 1e-7); // position 1, frequency 1
 * ```
 */
export function ropeTables(
  invFreq: Float32Array,
  n: number,
): { cos: Float32Array; sin: Float32Array } {
  const half = invFreq.length;
  const cos = new Float32Array(n * half);
  const sin = new Float32Array(n * half);
  for (let p = 0; p < n; p++) {
    for (let i = 0; i < half; i++) {
      const a = Math.fround(p * invFreq[i]);
      cos[p * half + i] = Math.cos(a);
      sin[p * half + i] = Math.sin(a);
    }
  }
  return { cos, sin };
}

function rope(
  x: Tensor,
  cos: Tensor,
  sin: Tensor,
  heads: number,
  pos0: number,
  sign: number,
  op: string,
): void {
  const T = x.rows;
  const D = x.cols / heads;
  if (!Number.isInteger(D) || D % 2 !== 0) {
    throw new GpuError(op, `${x} columns ${x.cols} are not ${heads} heads of an even size`);
  }
  const half = D / 2;
  if (cos.cols !== half || (pos0 + T) * half > cos.size) {
    throw new GpuError(
      op,
      `rope table ${cos} does not cover positions ${pos0}…${pos0 + T - 1} with D/2 = ${half}`,
    );
  }
  const wgsl = `${storage(0, "x", "f32", true)}
${storage(1, "cs", "f32", false)}
${storage(2, "sn", "f32", false)}
${uniform(3, "n: u32, H: u32, half: u32, pos0: u32, sign: f32, q0: f32, q1: f32, q2: f32")}
${ELEM_MAIN}
  if (i >= p.n) { return; }
  let j = i % p.half;
  let th = i / p.half;
  let h = th % p.H;
  let t = th / p.H;
  let base = (t * p.H + h) * 2u * p.half + j;
  let c = cs[(t + p.pos0) * p.half + j];
  let s = p.sign * sn[(t + p.pos0) * p.half + j];
  let x1 = x[base];
  let x2 = x[base + p.half];
  x[base] = x1 * c - x2 * s;
  x[base + p.half] = x2 * c + x1 * s;
}`;
  const n = T * heads * half;
  dispatchElems(
    x.rt,
    "nn.rope",
    wgsl,
    [x, cos, sin],
    packParams(n, heads, half, pos0, f32(sign)),
    n,
  );
}

/**
 * Applies HF `rotate_half` RoPE in place: for each head, pairs `(x[i], x[i + D/2])` are rotated
 * by the angle of row `pos0 + t` of the tables.
 *
 * - `x` [T, heads·D] (in place); `cos`, `sin` [P, D/2] with P ≥ pos0 + T.
 *
 * @example Usage
 * ```ts ignore
 * ropeForward(q, cos, sin, numHeads, 0);
 * ```
 */
export function ropeForward(x: Tensor, cos: Tensor, sin: Tensor, heads: number, pos0 = 0): void {
  rope(x, cos, sin, heads, pos0, 1, "ropeForward");
}

/**
 * RoPE backward in place: rotates the gradient by the opposite angle (the transpose of the
 * rotation). Overwrites `dx` (which holds `dout` on entry).
 *
 * - `dx` [T, heads·D]; `cos`, `sin` [P, D/2].
 *
 * @example Usage
 * ```ts ignore
 * ropeForward(q, cos, sin, numHeads, 0);
 * // … later, dq holds ∂L/∂(rotated q):
 * ropeBackward(dq, cos, sin, numHeads, 0); // now ∂L/∂q
 * ```
 */
export function ropeBackward(dx: Tensor, cos: Tensor, sin: Tensor, heads: number, pos0 = 0): void {
  rope(dx, cos, sin, heads, pos0, -1, "ropeBackward");
}

// ---------------------------------------------------------------------------------------------
// Attention

/**
 * Shape parameters of {@link attentionForward} / {@link attentionBackward}.
 *
 * @example Usage
 * ```ts ignore
 * import { attentionForward, type AttentionShape } from "@llm-surgeon/toolkit";
 * // Llama with grouped-query attention: 32 query heads share 8 key/value heads of size 64.
 * const sh: AttentionShape = { numHeads: 32, numKvHeads: 8, headDim: 64 };
 * attentionForward(att, q, k, v, sh);
 * ```
 */
export interface AttentionShape {
  /** H, number of query heads. */
  numHeads: number;
  /** KH, number of key/value heads (H must be a multiple). */
  numKvHeads: number;
  /** D, head size. */
  headDim: number;
  /** Score scale, default `D^-1/2`. */
  scale?: number;
  /** Number of valid key rows L (default: all rows of k). */
  keyLen?: number;
  /** Absolute position of query row 0 (default `L − T`: the queries are the last rows). */
  qOffset?: number;
  /** Sliding window: a query at position p sees keys `p − window < s ≤ p` (0 = unlimited). */
  window?: number;
  /** Cap on score elements per head chunk (default: one binding); small values test chunking. */
  maxScoreElems?: number;
}

/**
 * Copies heads `h0 … h0 + Hc − 1` of a `[rows, n·D]` matrix into a head-major `[Hc, rows, D]`
 * buffer; query head h reads source head `h / group` (repeat_kv for grouped-query attention).
 */
function headsSplit(out: Tensor, inp: Tensor, h0: number, group: number, D: number): void {
  const rows = inp.rows;
  const wgsl = `${storage(0, "out_", "f32", true)}
${storage(1, "inp", "f32", false)}
${uniform(2, "n: u32, rows: u32, D: u32, h0: u32, g: u32, cols: u32, p0: u32, p1: u32")}
${ELEM_MAIN}
  if (i >= p.n) { return; }
  let d = i % p.D;
  let rt = i / p.D;
  let t = rt % p.rows;
  let hl = rt / p.rows;
  let src = (p.h0 + hl) / p.g;
  out_[i] = inp[t * p.cols + src * p.D + d];
}`;
  dispatchElems(
    inp.rt,
    "nn.heads_split",
    wgsl,
    [out, inp],
    packParams(out.size, rows, D, h0, group, inp.cols),
    out.size,
  );
}

/**
 * Inverse of headsSplit, summing each group: `out[t, kh·D + d] (+)= Σ_j inp[kh·g + j − h0, t, d]`
 * for the key/value heads kh covered by the chunk.
 */
function headsMerge(
  out: Tensor,
  inp: Tensor,
  h0: number,
  group: number,
  D: number,
  accumulate: boolean,
): void {
  const [Hc, rows] = [inp.shape[0], inp.shape[1]];
  const kvc = Hc / group;
  const n = rows * kvc * D;
  const wgsl = `${storage(0, "out_", "f32", true)}
${storage(1, "inp", "f32", false)}
${uniform(2, "n: u32, rows: u32, D: u32, kh0: u32, g: u32, cols: u32, kvc: u32, acc: u32")}
${ELEM_MAIN}
  if (i >= p.n) { return; }
  let d = i % p.D;
  let tk = i / p.D;
  let kl = tk % p.kvc;
  let t = tk / p.kvc;
  var s = 0.0;
  for (var j = 0u; j < p.g; j++) {
    s = s + inp[((kl * p.g + j) * p.rows + t) * p.D + d];
  }
  let o = t * p.cols + (p.kh0 + kl) * p.D + d;
  if (p.acc == 1u) { out_[o] = out_[o] + s; } else { out_[o] = s; }
}`;
  dispatchElems(
    inp.rt,
    "nn.heads_merge",
    wgsl,
    [out, inp],
    packParams(n, rows, D, h0 / group, group, out.cols, kvc, accumulate ? 1 : 0),
    n,
  );
}

/**
 * Masked softmax in place over the last axis of scores `[Hc, T, L]`: row t (absolute position
 * `qOffset + t`) sees keys `s ≤ qOffset + t`, `s < keyLen` and, with a window, `s > pos − window`;
 * masked entries become 0. The scores are multiplied by `scale` first.
 *
 * - `s` [Hc, T, L] (in place: scores in, probabilities out).
 *
 * @example Usage
 * ```ts ignore
 * // scores [H, T, L] of T new queries after a cache of L − T keys
 * softmaxForward(scores, 1 / Math.sqrt(64), L - T, L);
 * ```
 */
export function softmaxForward(
  s: Tensor,
  scale: number,
  qOffset: number,
  keyLen: number,
  window = 0,
): void {
  const [T, L] = [s.shape[s.shape.length - 2], s.cols];
  const lanes = lanesFor(s.rt, L);
  const wgsl = `${storage(0, "x", "f32", true)}
${
    uniform(
      1,
      "rows: u32, T: u32, L: u32, off: u32, klen: u32, win: u32, p0: u32, p1: u32, scale: f32, q0: f32, q1: f32, q2: f32",
    )
  }
${rowPrelude(lanes)}
  if (row >= p.rows) { return; }
  let base = row * p.L;
  let pos = p.off + row % p.T;
  let hi = min(pos + 1u, p.klen);
  var lo = 0u;
  if (p.win > 0u && pos + 1u > p.win) { lo = pos + 1u - p.win; }
  var m = -3.0e38;
  for (var c = lo + lid; c < hi; c += LANES) { m = max(m, p.scale * x[base + c]); }
  m = rmax(m, lid);
  var z = 0.0;
  for (var c = lo + lid; c < hi; c += LANES) { z = z + exp(p.scale * x[base + c] - m); }
  z = rsum(z, lid);
  for (var c = lid; c < p.L; c += LANES) {
    var v = 0.0;
    if (c >= lo && c < hi) { v = exp(p.scale * x[base + c] - m) / z; }
    x[base + c] = v;
  }
}`;
  dispatchRows(
    s.rt,
    "nn.softmax_forward",
    wgsl,
    [s],
    packParams(s.rows, T, L, qOffset, keyLen, window, 0, 0, f32(scale)),
    s.rows,
    lanes,
  );
}

/**
 * Softmax backward in place: `dS = scale · P ⊙ (dP − Σ_s P⊙dP)` row by row. Overwrites `dp`
 * (which holds ∂L/∂P on entry and ∂L/∂scores on exit, scores before scaling). Entries of `dp`
 * where P is 0 are never read (they may hold anything) and become 0.
 *
 * - `dp` [Hc, T, L]; `prob` [Hc, T, L].
 *
 * @example Usage
 * ```ts ignore
 * softmaxBackward(dScores, probs, 1 / Math.sqrt(64)); // dScores: ∂L/∂P in, ∂L/∂scores out
 * ```
 */
export function softmaxBackward(dp: Tensor, prob: Tensor, scale: number): void {
  const L = prob.cols;
  const lanes = lanesFor(dp.rt, L);
  const wgsl = `${storage(0, "dx", "f32", true)}
${storage(1, "pr", "f32", false)}
${uniform(2, "rows: u32, L: u32, p0: u32, p1: u32, scale: f32, q0: f32, q1: f32, q2: f32")}
${rowPrelude(lanes)}
  if (row >= p.rows) { return; }
  let base = row * p.L;
  var s = 0.0;
  // Where P is 0 (masked keys) dP may be unspecified (a banded GEMM skips it): select, not ×.
  for (var c = lid; c < p.L; c += LANES) {
    let q = pr[base + c];
    s = s + select(0.0, q * dx[base + c], q != 0.0);
  }
  s = rsum(s, lid);
  for (var c = lid; c < p.L; c += LANES) {
    let q = pr[base + c];
    dx[base + c] = select(0.0, p.scale * q * (dx[base + c] - s), q != 0.0);
  }
}`;
  dispatchRows(
    dp.rt,
    "nn.softmax_backward",
    wgsl,
    [dp, prob],
    packParams(prob.rows, L, 0, 0, f32(scale)),
    prob.rows,
    lanes,
  );
}

interface AttentionPlan {
  H: number;
  KH: number;
  D: number;
  g: number;
  T: number;
  L: number;
  scale: number;
  qOffset: number;
  window: number;
  headsPerChunk: number;
  /**
   * The causal band of the scores as GEMM hints: query i (position qOffset + i) sees keys j with
   * band[0] ≤ j − i ≤ band[1] (band[1] = qOffset; band[0] from the window, else open).
   */
  band: [number, number];
}

function planAttention(
  op: string,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  sh: AttentionShape,
): AttentionPlan {
  const { numHeads: H, numKvHeads: KH, headDim: D } = sh;
  if (H % KH !== 0) throw new GpuError(op, `numHeads ${H} is not a multiple of numKvHeads ${KH}`);
  if (q.cols !== H * D) throw new GpuError(op, `q ${q} must have ${H}·${D} columns`);
  if (k.cols !== KH * D || v.cols !== KH * D || k.rows !== v.rows) {
    throw new GpuError(op, `k ${k} and v ${v} must both be [L, ${KH}·${D}]`);
  }
  const T = q.rows;
  const L = sh.keyLen ?? k.rows;
  const qOffset = sh.qOffset ?? L - T;
  if (L > k.rows || qOffset < 0) {
    throw new GpuError(op, `keyLen ${L} / qOffset ${qOffset} invalid for ${k}`);
  }
  const g = H / KH;
  const per = T * k.rows;
  const fit = Math.floor(
    Math.min(chunkElems(q.rt), sh.maxScoreElems ?? Infinity) / Math.max(per, 1),
  );
  const headsPerChunk = Math.min(H, Math.floor(fit / g) * g);
  if (headsPerChunk === 0) {
    throw new GpuError(
      op,
      `one group of ${g} heads of ${T}×${k.rows} scores does not fit one ${q.rt.maxBinding}-byte binding`,
    );
  }
  return {
    H,
    KH,
    D,
    g,
    T,
    L,
    scale: sh.scale ?? 1 / Math.sqrt(D),
    qOffset,
    window: sh.window ?? 0,
    headsPerChunk,
    band: [sh.window ? qOffset - sh.window + 1 : -BAND_OPEN, qOffset],
  };
}

/** Splits the heads `h0…` of one chunk and computes their probabilities `[Hc, T, Lk]`. */
function attentionProbs(P: AttentionPlan, q: Tensor, k: Tensor, v: Tensor, h0: number) {
  const hc = Math.min(P.headsPerChunk, P.H - h0);
  const qh = new Tensor(q.rt, [hc, P.T, P.D], "f32", "attention.q_heads");
  const kh = new Tensor(q.rt, [hc, k.rows, P.D], "f32", "attention.k_heads");
  const vh = new Tensor(q.rt, [hc, k.rows, P.D], "f32", "attention.v_heads");
  headsSplit(qh, q, h0, 1, P.D);
  headsSplit(kh, k, h0, P.g, P.D);
  headsSplit(vh, v, h0, P.g, P.D);
  const prob = matmul(qh, kh, { transB: true, band: { out: P.band }, name: "attention.probs" });
  softmaxForward(prob, P.scale, P.qOffset, P.L, P.window);
  return { qh, kh, vh, prob };
}

/**
 * Causal multi-head attention (grouped-query, optional sliding window), computed per chunk of
 * heads with the GEMM: `out = softmax(scale·q·kᵀ + mask)·v`. Keeps nothing: the backward
 * recomputes the probabilities (memory O(T·L) per head chunk, never all heads at once).
 *
 * - `out` [T, H·D] (overwritten); `q` [T, H·D]; `k`, `v` [Lk, KH·D] (rows ≥ keyLen ignored).
 *
 * @example Usage
 * ```ts ignore
 * attentionForward(att, q, k, v, { numHeads: 12, numKvHeads: 12, headDim: 64 });
 * ```
 */
export function attentionForward(
  out: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  sh: AttentionShape,
): void {
  const P = planAttention("attentionForward", q, k, v, sh);
  check("attentionForward", out, q.size, "out");
  for (let h0 = 0; h0 < P.H; h0 += P.headsPerChunk) {
    const { qh, kh, vh, prob: s } = attentionProbs(P, q, k, v, h0);
    const oh = matmul(s, vh, { band: { a: P.band }, name: "attention.out_heads" });
    headsMerge(out, oh, h0, 1, P.D, false);
    for (const t of [qh, kh, vh, s, oh]) t.dispose();
  }
}

/**
 * Attention backward: recomputes the probabilities, then
 * `dv = Pᵀ·dout`, `dS = softmax'(P, dout·vᵀ)`, `dq = scale·dS·k`, `dk = scale·dSᵀ·q`, summing
 * over the heads of a group for `dk`/`dv`. Overwrites `dq`, `dk`, `dv`.
 *
 * - `dq` [T, H·D]; `dk`, `dv` [Lk, KH·D]; `dout` [T, H·D]; `q`, `k`, `v` as in the forward.
 *
 * @example Usage
 * ```ts ignore
 * const sh = { numHeads: 12, numKvHeads: 12, headDim: 64 };
 * attentionForward(att, q, k, v, sh);
 * attentionBackward(dq, dk, dv, datt, q, k, v, sh);
 * ```
 */
export function attentionBackward(
  dq: Tensor,
  dk: Tensor,
  dv: Tensor,
  dout: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  sh: AttentionShape,
): void {
  const P = planAttention("attentionBackward", q, k, v, sh);
  check("attentionBackward", dq, q.size, "dq");
  check("attentionBackward", dk, k.size, "dk");
  check("attentionBackward", dv, v.size, "dv");
  check("attentionBackward", dout, q.size, "dout");
  for (let h0 = 0; h0 < P.H; h0 += P.headsPerChunk) {
    const { qh, kh, vh, prob } = attentionProbs(P, q, k, v, h0);
    const doh = new Tensor(q.rt, [qh.shape[0], P.T, P.D], "f32", "attention.dout_heads");
    headsSplit(doh, dout, h0, 1, P.D);
    // Pᵀ and dSᵀ are banded too: key j sees queries i with lo ≤ j − i ≤ hi.
    const bandT: [number, number] = [-P.band[1], -P.band[0]];
    const dvh = matmul(prob, doh, { transA: true, band: { a: bandT }, name: "attention.dv_heads" });
    const ds = matmul(doh, vh, { transB: true, band: { out: P.band }, name: "attention.dscores" });
    softmaxBackward(ds, prob, P.scale);
    const dqh = matmul(ds, kh, { band: { a: P.band }, name: "attention.dq_heads" });
    const dkh = matmul(ds, qh, { transA: true, band: { a: bandT }, name: "attention.dk_heads" });
    headsMerge(dq, dqh, h0, 1, P.D, false);
    headsMerge(dk, dkh, h0, P.g, P.D, false);
    headsMerge(dv, dvh, h0, P.g, P.D, false);
    for (const t of [qh, kh, vh, doh, prob, dvh, ds, dqh, dkh]) t.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy and sampling

/**
 * Fused cross-entropy forward and (optionally) backward over logit rows, llm.c's
 * "fused classifier". For row r (global row `rowBase + r`) with labels `y_1…y_S`
 * (`targets[(rowBase + r)·S + s]`; a negative first label means "no loss at this row"):
 * `losses[rowBase + r] = mean_s (logsumexp(z) − z[y_s])`; with `grad`, the logits are
 * overwritten by `weight·(softmax(z) − mean_s onehot(y_s))` (0 for rows without loss).
 *
 * - `logits` [Tc, V] (overwritten with dlogits when `grad`); `losses` [T]; `targets` [T·S] i32.
 *
 * @example Usage
 * ```ts ignore
 * crossentropyForward(logits, losses, targets, 1, 0, true, 1 / (T - 1));
 * ```
 */
export function crossentropyForward(
  logits: Tensor,
  losses: Tensor,
  targets: Tensor,
  samples = 1,
  rowBase = 0,
  grad = false,
  weight = 1,
): void {
  const [Tc, V] = [logits.rows, logits.cols];
  if ((rowBase + Tc) > losses.size || (rowBase + Tc) * samples > targets.size) {
    throw new GpuError(
      "crossentropyForward",
      `rows ${rowBase}…${rowBase + Tc - 1} exceed ${losses} / ${targets}`,
    );
  }
  // The gradient pass scans the S labels for every column: 3 + S passes for one lane.
  const lanes = lanesFor(logits.rt, V, grad ? 3 + samples : 3);
  const wgsl = `${storage(0, "z", "f32", true)}
${storage(1, "losses", "f32", true)}
${storage(2, "tg", "i32", false)}
${
    uniform(
      3,
      "rows: u32, V: u32, S: u32, base: u32, grad: u32, p0: u32, p1: u32, p2: u32, w: f32, q0: f32, q1: f32, q2: f32",
    )
  }
${rowPrelude(lanes)}
  if (row >= p.rows) { return; }
  let base = row * p.V;
  let tb = (p.base + row) * p.S;
  let valid = tg[tb] >= 0;
  var m = -3.0e38;
  for (var c = lid; c < p.V; c += LANES) { m = max(m, z[base + c]); }
  m = rmax(m, lid);
  var s = 0.0;
  for (var c = lid; c < p.V; c += LANES) { s = s + exp(z[base + c] - m); }
  s = rsum(s, lid);
  let lse = m + log(s);
  var loss = 0.0;
  if (valid) {
    for (var j = 0u; j < p.S; j++) { loss = loss + lse - z[base + u32(tg[tb + j])]; }
    loss = loss / f32(p.S);
  }
  rbarrier();
  if (lid == 0u) { losses[p.base + row] = loss; }
  if (p.grad == 0u) { return; }
  for (var c = lid; c < p.V; c += LANES) {
    var g = 0.0;
    if (valid) {
      var cnt = 0.0;
      for (var j = 0u; j < p.S; j++) { if (u32(tg[tb + j]) == c) { cnt = cnt + 1.0; } }
      g = p.w * (exp(z[base + c] - m) / s - cnt / f32(p.S));
    }
    z[base + c] = g;
  }
}`;
  dispatchRows(
    logits.rt,
    "nn.crossentropy",
    wgsl,
    [logits, losses, targets],
    packParams(Tc, V, samples, rowBase, grad ? 1 : 0, 0, 0, 0, f32(weight)),
    Tc,
    lanes,
  );
}

/**
 * `taken(c, n)`: whether label c is among the first n chosen ones, as straight-line code. A loop
 * here would run inside the per-column loops of sampleLabels and multiply their iteration count
 * by up to 16, past llvmpipe's per-invocation loop limit (see {@link LONG_ROW}) for vocabularies
 * above ~54,000.
 */
const TAKEN = `fn taken(c: u32, n: u32) -> bool {
  let ic = i32(c);
  return ${
  [...Array(16).keys()].map((j) => `(n > ${j}u && chosen_[${j}] == ic)`).join(" ||\n    ")
};
}`;

/**
 * Draws `S` distinct labels per row from `softmax(logits)` (sampling without replacement, as the
 * reference's sampled Fisher does), by inverse CDF with the given uniforms. Rows with global
 * index ≥ `validRows` get label −1 (no loss).
 *
 * - `labels` [T·S] i32 (rows `rowBase …` written); `logits` [Tc, V]; `uniforms` [T·S] in [0, 1).
 *
 * @example Usage
 * ```ts ignore
 * // one label per position for the first T rows of a [T, V] logits chunk
 * const uniforms = await Tensor.from(Float32Array.from({ length: T }, () => Math.random()));
 * sampleLabels(labels, logits, uniforms, 1, 0, T);
 * ```
 */
export function sampleLabels(
  labels: Tensor,
  logits: Tensor,
  uniforms: Tensor,
  samples: number,
  rowBase: number,
  validRows: number,
): void {
  const [Tc, V] = [logits.rows, logits.cols];
  if (samples < 1 || samples > 16 || samples > V) {
    throw new GpuError(
      "sampleLabels",
      `samples per position must be in 1…min(16, V), got ${samples}`,
    );
  }
  const wgsl = `${storage(0, "lab", "i32", true)}
${storage(1, "z", "f32", false)}
${storage(2, "u", "f32", false)}
${uniform(3, "rows: u32, V: u32, S: u32, base: u32, valid: u32, p0: u32, p1: u32, p2: u32")}
${REDUCE}
var<workgroup> part_: array<f32, 256>;
var<workgroup> chosen_: array<i32, 16>;
${TAKEN}
${ROW_MAIN}
  if (row >= p.rows) { return; }
  let base = row * p.V;
  let g = p.base + row;
  if (g >= p.valid) {
    if (lid < p.S) { lab[g * p.S + lid] = -1; }
    return;
  }
  var m = -3.0e38;
  for (var c = lid; c < p.V; c += 256u) { m = max(m, z[base + c]); }
  m = rmax(m, lid);
  let seg = (p.V + 255u) / 256u;
  let c0 = min(lid * seg, p.V);
  let c1 = min(c0 + seg, p.V);
  for (var j = 0u; j < p.S; j++) {
    var local = 0.0;
    for (var c = c0; c < c1; c++) { if (!taken(c, j)) { local = local + exp(z[base + c] - m); } }
    part_[lid] = local;
    workgroupBarrier();
    if (lid == 0u) {
      var total = 0.0;
      for (var k = 0u; k < 256u; k++) { total = total + part_[k]; }
      let goal = u[g * p.S + j] * total;
      var acc = 0.0;
      var pick = -1;
      for (var k = 0u; k < 256u; k++) {
        if (acc + part_[k] <= goal) { acc = acc + part_[k]; continue; }
        let k0 = min(k * seg, p.V);
        let k1 = min(k0 + seg, p.V);
        for (var c = k0; c < k1; c++) {
          if (taken(c, j)) { continue; }
          acc = acc + exp(z[base + c] - m);
          if (acc > goal) { pick = i32(c); break; }
        }
        if (pick >= 0) { break; }
      }
      if (pick < 0) {
        // Rounding left the goal unreached: the last eligible column, searched from the last
        // segment with mass (a scan over all of V could pass the loop limit).
        for (var k = 256u; k > 0u && pick < 0; k--) {
          if (!(part_[k - 1u] > 0.0)) { continue; }
          let k0 = min((k - 1u) * seg, p.V);
          let k1 = min(k0 + seg, p.V);
          for (var c = k1; c > k0; c--) {
            if (!taken(c - 1u, j) && exp(z[base + c - 1u] - m) > 0.0) { pick = i32(c - 1u); break; }
          }
        }
      }
      chosen_[j] = pick;
    }
    workgroupBarrier();
  }
  if (lid < p.S) { lab[g * p.S + lid] = chosen_[lid]; }
}`;
  dispatchRows(
    logits.rt,
    "nn.sample_labels",
    wgsl,
    [labels, logits, uniforms],
    packParams(Tc, V, samples, rowBase, validRows),
    Tc,
  );
}

// ---------------------------------------------------------------------------------------------
// Activations, residual, linear

/**
 * `out = max(inp, 0)`. Shapes: `out`, `inp` [N].
 *
 * @example Usage
 * ```ts ignore
 * reluForward(act, pre); // OPT: fc1 → ReLU → fc2
 * ```
 */
export function reluForward(out: Tensor, inp: Tensor): void {
  map("max(a, 0.0)", [inp], [], { out });
}

/**
 * `dinp = dout·[inp > 0]`. Overwrites. Shapes: all [N].
 *
 * @example Usage
 * ```ts ignore
 * reluBackward(dpre, dact, pre);
 * ```
 */
export function reluBackward(dinp: Tensor, dout: Tensor, inp: Tensor): void {
  map("select(0.0, b, a > 0.0)", [inp, dout], [], { out: dinp });
}

/** erf with ~1.2e-7 relative error (Chebyshev fit of erfc), for the exact GELU. */
const ERF = `
fn erf_(x: f32) -> f32 {
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.5 * z);
  let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
    t * (-0.82215223 + t * 0.17087277)))))))));
  return select(r - 1.0, 1.0 - r, x >= 0.0);
}`;

function gelu(out: Tensor, inp: Tensor, dout: Tensor | null): void {
  const n = inp.size;
  const wgsl = `${storage(0, "out_", "f32", true)}
${storage(1, "x", "f32", false)}
${storage(2, "dy", "f32", false)}
${uniform(3, "n: u32, bwd: u32, p0: u32, p1: u32")}
${ERF}
${ELEM_MAIN}
  if (i >= p.n) { return; }
  let v = x[i];
  let cdf = 0.5 * (1.0 + erf_(v * 0.7071067811865476));
  if (p.bwd == 0u) { out_[i] = v * cdf; return; }
  let pdf = 0.3989422804014327 * exp(-0.5 * v * v);
  out_[i] = dy[i] * (cdf + v * pdf);
}`;
  if (n > chunkElems(inp.rt)) {
    throw new GpuError("gelu", `${inp} exceeds one binding; split the call`);
  }
  dispatchElems(
    inp.rt,
    "nn.gelu",
    wgsl,
    [out, inp, dout ?? dummy(inp.rt)],
    packParams(n, dout ? 1 : 0),
    n,
  );
}

/**
 * Exact (erf) GELU, HF `"gelu"`: `out = x·Φ(x)`. Shapes: `out`, `inp` [N].
 *
 * @example Usage
 * ```ts ignore
 * geluForward(act, pre);
 * ```
 */
export function geluForward(out: Tensor, inp: Tensor): void {
  gelu(out, inp, null);
}

/**
 * GELU backward: `dinp = dout·(Φ(x) + x·φ(x))`. Overwrites. Shapes: all [N].
 *
 * @example Usage
 * ```ts ignore
 * geluBackward(dpre, dact, pre);
 * ```
 */
export function geluBackward(dinp: Tensor, dout: Tensor, inp: Tensor): void {
  gelu(dinp, inp, dout);
}

/**
 * SiLU-gated unit of the Llama MLP: `out = silu(gate) ⊙ up`. Shapes: all [T, F].
 *
 * @example Usage
 * ```ts ignore
 * swigluForward(act, gate, up); // Llama: down_proj(silu(gate_proj x) ⊙ up_proj x)
 * ```
 */
export function swigluForward(out: Tensor, gate: Tensor, up: Tensor): void {
  map("a / (1.0 + exp(-a)) * b", [gate, up], [], { out });
}

/**
 * SwiGLU backward: `dgate = dout ⊙ up ⊙ σ(g)(1 + g(1 − σ(g)))`, `dup = dout ⊙ silu(gate)`.
 * Overwrites both. Shapes: all [T, F].
 *
 * @example Usage
 * ```ts ignore
 * swigluBackward(dgate, dup, dact, gate, up);
 * ```
 */
export function swigluBackward(
  dgate: Tensor,
  dup: Tensor,
  dout: Tensor,
  gate: Tensor,
  up: Tensor,
): void {
  map(
    "c * b * (1.0 / (1.0 + exp(-a))) * (1.0 + a * (1.0 - 1.0 / (1.0 + exp(-a))))",
    [gate, up, dout],
    [],
    { out: dgate },
  );
  map("b * a / (1.0 + exp(-a))", [gate, dout], [], { out: dup });
}

/**
 * Residual connection `out = a + b` (`out` may alias `a`). Shapes: all [T, C].
 *
 * @example Usage
 * ```ts ignore
 * residualForward(h, h, attnOut); // h += attention output
 * ```
 */
export function residualForward(out: Tensor, a: Tensor, b: Tensor): void {
  map("a + b", [a, b], [], { out });
}

/**
 * Residual backward: `da += dout`, `db += dout` (either may be null). Accumulates.
 *
 * @example Usage
 * ```ts ignore
 * residualBackward(dh, dattnOut, dout); // the gradient flows into both branches
 * ```
 */
export function residualBackward(da: Tensor | null, db: Tensor | null, dout: Tensor): void {
  if (da) map("o + a", [dout], [], { out: da });
  if (db) map("o + a", [dout], [], { out: db });
}

/**
 * Linear layer `out = inp·Wᵀ + b`, plus an optional LoRA adapter `+ (inp·Aᵀ)·Bᵀ`.
 *
 * - `out` [T, R]; `inp` [T, C]; `weight` [R, C]; `bias` [R] or null; `A` [r, C]; `B` [R, r].
 *
 * @example Usage
 * ```ts ignore
 * linearForward(y, x, w, b);
 * ```
 */
export function linearForward(
  out: Tensor,
  inp: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  adapter: { A: Tensor; B: Tensor } | null = null,
): void {
  matmul(inp, weight, { transB: true, bias: bias ?? undefined, out });
  if (adapter) {
    const ax = matmul(inp, adapter.A, { transB: true, name: "lora.ax" });
    matmul(ax, adapter.B, { transB: true, beta: 1, out });
    ax.dispose();
  }
}

/**
 * Linear backward to the input: `dinp (+)= dout·W (+ (dout·B)·A)`. Overwrites, or accumulates
 * when `accumulate`. (The weight gradient `doutᵀ·inp` is what the taps hand out.)
 *
 * - `dinp` [T, C]; `dout` [T, R]; `weight` [R, C].
 *
 * @example Usage
 * ```ts ignore
 * linearForward(y, x, w, b);
 * linearBackward(dx, dy, w, null, true); // dx += dy·W
 * ```
 */
export function linearBackward(
  dinp: Tensor,
  dout: Tensor,
  weight: Tensor,
  adapter: { A: Tensor; B: Tensor } | null = null,
  accumulate = false,
): void {
  matmul(dout, weight, { out: dinp, beta: accumulate ? 1 : 0 });
  if (adapter) {
    const db = matmul(dout, adapter.B, { name: "lora.dout_b" });
    matmul(db, adapter.A, { beta: 1, out: dinp });
    db.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// Copies and gradient hygiene

/**
 * Copies a block of columns between row-major matrices:
 * `out[r, outCol + c] = inp[r, inCol + c]` for `r < rows`, `c < cols`.
 *
 * - `out` [rows, ≥ outCol + cols]; `inp` [rows, ≥ inCol + cols].
 *
 * @example Usage
 * ```ts ignore
 * // the first 64 columns of x [T, 768] into columns 128 … 191 of out [T, 256]
 * copyColumns(out, 128, x, 0, 64);
 * ```
 */
export function copyColumns(
  out: Tensor,
  outCol: number,
  inp: Tensor,
  inCol: number,
  cols: number,
): void {
  const rows = Math.min(out.rows, inp.rows);
  const wgsl = `${storage(0, "out_", "f32", true)}
${storage(1, "inp", "f32", false)}
${uniform(2, "n: u32, cols: u32, os: u32, oc: u32, is_: u32, ic: u32, p0: u32, p1: u32")}
${ELEM_MAIN}
  if (i >= p.n) { return; }
  let r = i / p.cols;
  let c = i % p.cols;
  out_[r * p.os + p.oc + c] = inp[r * p.is_ + p.ic + c];
}`;
  dispatchElems(
    out.rt,
    "nn.copy_columns",
    wgsl,
    [out, inp],
    packParams(rows * cols, cols, out.cols, outCol, inp.cols, inCol),
    rows * cols,
  );
}

/**
 * Tap augmentation: `out = [inp | 1]`, the layer input with a ones column appended (for layers
 * with a bias, ALGORITHM.md §0).
 *
 * - `out` [T, C + 1]; `inp` [T, C].
 *
 * @example Usage
 * ```ts ignore
 * const xa = Tensor.emptySync(x.rt, [x.rows, x.cols + 1]);
 * appendOnes(xa, x); // [x | 1]: the input the bias column of [W | b] sees
 * ```
 */
export function appendOnes(out: Tensor, inp: Tensor): void {
  check("appendOnes", out, inp.rows * (inp.cols + 1), "out");
  const wgsl = `${storage(0, "out_", "f32", true)}
${storage(1, "inp", "f32", false)}
${uniform(2, "n: u32, C: u32, p0: u32, p1: u32")}
${ELEM_MAIN}
  if (i >= p.n) { return; }
  let r = i / (p.C + 1u);
  let c = i % (p.C + 1u);
  if (c == p.C) { out_[i] = 1.0; } else { out_[i] = inp[r * p.C + c]; }
}`;
  dispatchElems(
    out.rt,
    "nn.append_ones",
    wgsl,
    [out, inp],
    packParams(out.size, inp.cols),
    out.size,
  );
}

/**
 * Gradient hygiene for taps (ALGORITHM.md §2.1): NaN → 0, then clamp to `[−maxAbs, maxAbs]`
 * when `maxAbs > 0`. In place. Shapes: `g` [N].
 *
 * @example Usage
 * ```ts ignore
 * sanitizeGrad(g, 10); // NaN → 0, then clamp to [−10, 10] (`--max_outgrad 10`)
 * ```
 */
export function sanitizeGrad(g: Tensor, maxAbs = 0): void {
  const nan = "(bitcast<u32>(a) & 0x7fffffffu) > 0x7f800000u";
  const expr = maxAbs > 0 ? `select(clamp(a, -s0, s0), 0.0, ${nan})` : `select(a, 0.0, ${nan})`;
  map(expr, [g], [maxAbs], { out: g });
}
