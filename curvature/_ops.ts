/**
 * Private GPU helpers of the curvature and pruner layers: small WGSL kernels that the shared
 * `kernels/` core does not (yet) offer — row scaling, row/column dot products, batched sums of
 * squares, non-finite flags, 2-D maps with row/column vectors, row gathers and scatters, and
 * order-preserving radix selection over many tensors.
 *
 * Everything here only records dispatches; nothing waits for the GPU except the functions that
 * say they read back.
 *
 * @module
 */
import { f32, GpuError, grid, packParams, type Runtime } from "../kernels/device.ts";
import { Tensor } from "../kernels/tensor.ts";

const WG = 256;

function dims(t: Tensor): [number, number] {
  return [t.rows, t.cols];
}

function dispatch1d(
  rt: Runtime,
  name: string,
  wgsl: string,
  bindings: Tensor[],
  params: ArrayBuffer,
  n: number,
): void {
  const k = rt.kernel(name, wgsl);
  rt.dispatch(k, bindings.map((t) => t.range()), params, grid(Math.ceil(n / WG)));
}

const IDX = `let i = gid.x + gid.y * nw.x * ${WG}u;`;
const MAIN = `@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u)`;

/**
 * `out[t, j] = X[t, j] · w[t]` (scales every row of X by its weight).
 * @param x `[T, N]`
 * @param w `[T]`
 */
export function rowScale(x: Tensor, w: Tensor, name = "rowScale"): Tensor {
  const [T, N] = dims(x);
  if (w.size !== T) throw new GpuError(name, `weights ${w} do not match the ${T} rows of ${x}`);
  const out = new Tensor(x.rt, x.shape, "f32", name);
  dispatch1d(
    x.rt,
    "priv_rowScale",
    `@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
struct P { n: u32, N: u32, a: u32, b: u32 };
@group(0) @binding(3) var<uniform> p: P;
${MAIN} { ${IDX} if (i >= p.n) { return; } O[i] = X[i] * W[i / p.N]; }`,
    [x, w, out],
    packParams(T * N, N),
    T * N,
  );
  return out;
}

/**
 * Records `out[slot] = Σ x·y` over all elements (two-pass tree reduction). Use `x === y` for a
 * squared Frobenius norm.
 */
export function dotInto(x: Tensor, y: Tensor, out: Tensor, slot: number): void {
  if (x.size !== y.size) throw new GpuError("dotInto", `${x} and ${y} differ in size`);
  const rt = x.rt;
  const n = x.size;
  const per = 4096; // elements per workgroup in pass 1
  const groups = Math.max(1, Math.ceil(n / per));
  const partial = new Tensor(rt, [groups], "f32", "dotInto.partial");
  const k1 = rt.kernel(
    "priv_dot_pass1",
    `@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> Y: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
struct P { n: u32, per: u32, a: u32, b: u32 };
@group(0) @binding(3) var<uniform> p: P;
var<workgroup> sh: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u,
        @builtin(num_workgroups) nw: vec3u) {
  let g = wid.x + wid.y * nw.x;
  let start = g * p.per;
  let end = min(start + p.per, p.n);
  var s = 0.0;
  for (var i = start + lid.x; i < end; i += ${WG}u) { s = s + X[i] * Y[i]; }
  sh[lid.x] = s;
  workgroupBarrier();
  for (var w = ${WG / 2}u; w > 0u; w = w / 2u) {
    if (lid.x < w) { sh[lid.x] = sh[lid.x] + sh[lid.x + w]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) { O[g] = sh[0]; }
}`,
  );
  rt.dispatch(k1, [x.range(), y.range(), partial.range()], packParams(n, per), grid(groups));
  const k2 = rt.kernel(
    "priv_dot_pass2",
    `@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> O: array<f32>;
struct P { n: u32, slot: u32, a: u32, b: u32 };
@group(0) @binding(2) var<uniform> p: P;
var<workgroup> sh: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3u) {
  var s = 0.0;
  for (var i = lid.x; i < p.n; i += ${WG}u) { s = s + X[i]; }
  sh[lid.x] = s;
  workgroupBarrier();
  for (var w = ${WG / 2}u; w > 0u; w = w / 2u) {
    if (lid.x < w) { sh[lid.x] = sh[lid.x] + sh[lid.x + w]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) { O[p.slot] = sh[0]; }
}`,
  );
  rt.dispatch(k2, [partial.range(), out.range()], packParams(groups, slot), [1]);
  partial.dispose();
}

/**
 * Records `flags[slot] |= 1` if any element of `x` is NaN or ±∞ (`flags` is a u32 tensor).
 */
export function flagNonFinite(x: Tensor, flags: Tensor, slot: number): void {
  if (x.size === 0) return;
  dispatch1d(
    x.rt,
    "priv_flagNonFinite",
    `@group(0) @binding(0) var<storage, read> X: array<u32>;
@group(0) @binding(1) var<storage, read_write> F: array<atomic<u32>>;
struct P { n: u32, slot: u32, a: u32, b: u32 };
@group(0) @binding(2) var<uniform> p: P;
${MAIN} { ${IDX} if (i >= p.n) { return; }
  if ((X[i] & 0x7f800000u) == 0x7f800000u) { atomicOr(&F[p.slot], 1u); } }`,
    [x, flags],
    packParams(x.size, slot),
    x.size,
  );
}

/**
 * A 2-D element-wise map over an `[R, C]` matrix with per-row and per-column vectors:
 * the WGSL expression sees `a`, `b` (matrix inputs, `b` optional, else 0), `u` = `urow[r]`,
 * `v` = `vcol[c]` (optional, else 0), the indices `r`, `c` (u32) and scalars `s0`, `s1`.
 * Writes a new tensor, or `out` (which may alias `a`).
 */
export function rowColMap(
  expr: string,
  a: Tensor,
  opts: { b?: Tensor; u?: Tensor; v?: Tensor; s?: number[]; out?: Tensor; name?: string } = {},
): Tensor {
  const [R, C] = dims(a);
  const name = opts.name ?? "rowColMap";
  if (opts.b && opts.b.size !== a.size) throw new GpuError(name, `${opts.b} does not match ${a}`);
  if (opts.u && opts.u.size !== R) {
    throw new GpuError(name, `row vector ${opts.u} needs ${R} entries`);
  }
  if (opts.v && opts.v.size !== C) {
    throw new GpuError(name, `column vector ${opts.v} needs ${C} entries`);
  }
  const out = opts.out ?? new Tensor(a.rt, a.shape, "f32", name);
  if (out.size !== a.size) throw new GpuError(name, `output ${out} does not match ${a}`);
  const inPlace = out === a;
  const rt = a.rt;
  const decl: string[] = [`@group(0) @binding(0) var<storage, read_write> O: array<f32>;`];
  const binds: Tensor[] = [out];
  const add = (nm: string, t: Tensor | undefined) => {
    if (!t) return;
    decl.push(`@group(0) @binding(${binds.length}) var<storage, read> ${nm}: array<f32>;`);
    binds.push(t);
  };
  if (!inPlace) add("IA", a);
  add("IB", opts.b);
  add("IU", opts.u);
  add("IV", opts.v);
  const key = `priv_rcmap:${expr}|${inPlace ? "=" : "a"}${opts.b ? "b" : ""}${opts.u ? "u" : ""}${
    opts.v ? "v" : ""
  }`;
  const wgsl = `${decl.join("\n")}
struct P { R: u32, C: u32, x: u32, y: u32, s0: f32, s1: f32, s2: f32, s3: f32 };
@group(0) @binding(${binds.length}) var<uniform> p: P;
${MAIN} { ${IDX} if (i >= p.R * p.C) { return; }
  let r = i / p.C; let c = i % p.C; let s0 = p.s0; let s1 = p.s1;
  let a = ${inPlace ? "O[i]" : "IA[i]"};
  let b = ${opts.b ? "IB[i]" : "0.0"};
  let u = ${opts.u ? "IU[r]" : "0.0"};
  let v = ${opts.v ? "IV[c]" : "0.0"};
  O[i] = ${expr}; }`;
  const s = [...(opts.s ?? []), 0, 0, 0, 0].slice(0, 4);
  dispatch1d(rt, key, wgsl, binds, packParams(R, C, 0, 0, ...s.map(f32)), R * C);
  return out;
}

/** `dst[idx[i], :] += alpha·src[i, :]` (indices must be distinct). */
export function scatterAddRows(dst: Tensor, idx: Tensor, src: Tensor, alpha = 1): void {
  const [, C] = dims(dst);
  const k = idx.size;
  if (src.size !== k * C) throw new GpuError("scatterAddRows", `${src} is not [${k}, ${C}]`);
  dispatch1d(
    dst.rt,
    "priv_scatterAddRows",
    `@group(0) @binding(0) var<storage, read_write> D: array<f32>;
@group(0) @binding(1) var<storage, read> I: array<u32>;
@group(0) @binding(2) var<storage, read> S: array<f32>;
struct P { n: u32, C: u32, a: u32, b: u32, alpha: f32, x: f32, y: f32, z: f32 };
@group(0) @binding(3) var<uniform> p: P;
${MAIN} { ${IDX} if (i >= p.n) { return; } let r = i / p.C; let c = i % p.C;
  let j = I[r] * p.C + c; D[j] = D[j] + p.alpha * S[i]; }`,
    [dst, idx, src],
    packParams(k * C, C, 0, 0, f32(alpha), f32(0), f32(0), f32(0)),
    k * C,
  );
}

/**
 * Per-row and per-column counts of non-zero entries of the augmented matrix `[W | b]`
 * (`bias` optional). Returns u32 tensors `[R]` and `[C0 (+1)]`.
 */
export function nonZeroCounts(w: Tensor, bias: Tensor | null): { rows: Tensor; cols: Tensor } {
  const [R, C0] = dims(w);
  const C = C0 + (bias ? 1 : 0);
  const rows = new Tensor(w.rt, [R], "u32", "nnz.rows");
  const cols = new Tensor(w.rt, [C], "u32", "nnz.cols");
  const b = bias ?? w; // dummy binding when there is no bias
  dispatch1d(
    w.rt,
    "priv_nnz",
    `@group(0) @binding(0) var<storage, read> W: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> RO: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read_write> CO: array<atomic<u32>>;
struct P { R: u32, C0: u32, hasB: u32, x: u32 };
@group(0) @binding(4) var<uniform> p: P;
${MAIN} { ${IDX} let C = p.C0 + p.hasB; if (i >= p.R * C) { return; }
  let r = i / C; let c = i % C;
  var x = 0.0;
  if (c < p.C0) { x = W[r * p.C0 + c]; } else { x = B[r]; }
  if (x != 0.0) { atomicAdd(&RO[r], 1u); atomicAdd(&CO[c], 1u); } }`,
    [w, b, rows, cols],
    packParams(R, C0, bias ? 1 : 0),
    R * C,
  );
  return { rows, cols };
}

/** Augmented `[R, C0 (+1)]` copy `[W | b]` of a weight and optional bias. */
export function augment(w: Tensor, bias: Tensor | null, name = "Waug"): Tensor {
  const [R, C0] = dims(w);
  if (!bias) return w.clone(name);
  const out = new Tensor(w.rt, [R, C0 + 1], "f32", name);
  dispatch1d(
    w.rt,
    "priv_augment",
    `@group(0) @binding(0) var<storage, read> W: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
struct P { R: u32, C0: u32, a: u32, b: u32 };
@group(0) @binding(3) var<uniform> p: P;
${MAIN} { ${IDX} let C = p.C0 + 1u; if (i >= p.R * C) { return; }
  let r = i / C; let c = i % C;
  if (c < p.C0) { O[i] = W[r * p.C0 + c]; } else { O[i] = B[r]; } }`,
    [w, bias, out],
    packParams(R, C0),
    R * (C0 + 1),
  );
  return out;
}

/** Writes an augmented `[R, C0 (+1)]` matrix back into a weight and optional bias. */
export function splitAugmented(aug: Tensor, w: Tensor, bias: Tensor | null): void {
  const [R, C0] = dims(w);
  if (aug.size !== R * (C0 + (bias ? 1 : 0))) {
    throw new GpuError("splitAugmented", `${aug} does not match ${w}${bias ? " + bias" : ""}`);
  }
  if (!bias) {
    w.copyFrom(aug);
    return;
  }
  dispatch1d(
    w.rt,
    "priv_split",
    `@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read_write> W: array<f32>;
@group(0) @binding(2) var<storage, read_write> B: array<f32>;
struct P { R: u32, C0: u32, a: u32, b: u32 };
@group(0) @binding(3) var<uniform> p: P;
${MAIN} { ${IDX} let C = p.C0 + 1u; if (i >= p.R * C) { return; }
  let r = i / C; let c = i % C;
  if (c < p.C0) { W[r * p.C0 + c] = A[i]; } else { B[r] = A[i]; } }`,
    [aug, w, bias],
    packParams(R, C0),
    R * (C0 + 1),
  );
}

/**
 * Reads several tensors with one host synchronisation (copies them into one buffer first).
 * Returns the raw bytes of each (view them as f32 or u32 according to the tensor's dtype).
 */
export async function readAll(ts: Tensor[]): Promise<ArrayBuffer[]> {
  const total = ts.reduce((s, t) => s + t.size, 0);
  if (ts.length === 0) return [];
  const rt = ts[0].rt;
  const buf = new Tensor(rt, [Math.max(total, 1)], "u32", "readAll");
  let off = 0;
  for (const t of ts) {
    if (t.size > 0) buf.copyFrom(t, 0, off, t.size);
    off += t.size;
  }
  const bytes = await rt.readBytes(buf.buffer, 0, total * 4);
  buf.dispose();
  const out: ArrayBuffer[] = [];
  off = 0;
  for (const t of ts) {
    out.push(bytes.slice(off * 4, (off + t.size) * 4));
    off += t.size;
  }
  return out;
}

/**
 * N:M group statistics of an element-cost matrix `[R, C]`: for each row and each group of `m`
 * consecutive columns among the first `c0` (the bias column and a remainder are not grouped),
 * the sum of the `n` smallest costs and the `n`-th smallest cost. Returns `[R, ⌊c0/m⌋]` tensors.
 */
export function nmGroupCosts(
  cost: Tensor,
  c0: number,
  n: number,
  m: number,
): { sum: Tensor; nth: Tensor } {
  const [R, C] = dims(cost);
  if (m > 32 || n < 1 || n > m) {
    throw new GpuError("nmGroupCosts", `unsupported N:M = ${n}:${m} (M ≤ 32)`);
  }
  const groups = Math.floor(c0 / m);
  const sum = new Tensor(cost.rt, [R, groups], "f32", "nm.sum");
  const nth = new Tensor(cost.rt, [R, groups], "f32", "nm.nth");
  dispatch1d(
    cost.rt,
    "priv_nmGroups",
    `@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> S: array<f32>;
@group(0) @binding(2) var<storage, read_write> K: array<f32>;
struct P { R: u32, C: u32, G: u32, N: u32, M: u32, a: u32, b: u32, c: u32 };
@group(0) @binding(3) var<uniform> p: P;
${MAIN} { ${IDX} if (i >= p.R * p.G) { return; }
  let r = i / p.G; let j = i % p.G;
  var v: array<f32, 32>;
  for (var t = 0u; t < p.M; t++) {
    let x = X[r * p.C + j * p.M + t];
    var q = t;
    while (q > 0u && v[q - 1u] > x) { v[q] = v[q - 1u]; q = q - 1u; }
    v[q] = x;
  }
  var s = 0.0;
  for (var t = 0u; t < p.N; t++) { s = s + v[t]; }
  S[i] = s; K[i] = v[p.N - 1u]; }`,
    [cost, sum, nth],
    packParams(R, C, groups, n, m),
    R * groups,
  );
  return { sum, nth };
}

/**
 * N:M element mask from group statistics: `mask[r, c] = 1` when column c lies in a group whose
 * summed cost is ≤ τ and its own cost is ≤ the group's n-th smallest; else 0.
 */
export function nmMask(
  cost: Tensor,
  sum: Tensor,
  nth: Tensor,
  m: number,
  tau: number,
): Tensor {
  const [R, C] = dims(cost);
  const groups = sum.cols;
  const out = new Tensor(cost.rt, [R, C], "f32", "nm.mask");
  dispatch1d(
    cost.rt,
    "priv_nmMask",
    `@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> S: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
struct P { R: u32, C: u32, G: u32, M: u32, tau: f32, x: f32, y: f32, z: f32 };
@group(0) @binding(4) var<uniform> p: P;
${MAIN} { ${IDX} if (i >= p.R * p.C) { return; }
  let r = i / p.C; let c = i % p.C; let j = c / p.M;
  var o = 0.0;
  if (j < p.G) { let g = r * p.G + j; if (S[g] <= p.tau && X[i] <= K[g]) { o = 1.0; } }
  O[i] = o; }`,
    [cost, sum, nth, out],
    packParams(R, C, groups, m, f32(tau), f32(0), f32(0), f32(0)),
    R * C,
  );
  return out;
}

/**
 * The OBS chunk matrix `Cm[i, j] = Ĝ[r_i, r_j]·Â[c_i, c_j]` (ALGORITHM.md §7.3) for entries
 * `(r_i, c_i)` given as u32 index tensors.
 * @param gh `[R, R]` Ĝ
 * @param ah `[C, C]` Â
 */
export function chunkMatrix(gh: Tensor, ah: Tensor, ri: Tensor, ci: Tensor): Tensor {
  const P = ri.size, R = gh.rows, C = ah.rows;
  const out = new Tensor(gh.rt, [P, P], "f32", "Cm");
  dispatch1d(
    gh.rt,
    "priv_chunkMatrix",
    `@group(0) @binding(0) var<storage, read> G: array<f32>;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> RI: array<u32>;
@group(0) @binding(3) var<storage, read> CI: array<u32>;
@group(0) @binding(4) var<storage, read_write> O: array<f32>;
struct P { P: u32, R: u32, C: u32, x: u32 };
@group(0) @binding(5) var<uniform> p: P;
${MAIN} { ${IDX} if (i >= p.P * p.P) { return; } let a = i / p.P; let b = i % p.P;
  O[i] = G[RI[a] * p.R + RI[b]] * A[CI[a] * p.C + CI[b]]; }`,
    [gh, ah, ri, ci, out],
    packParams(P, R, C),
    P * P,
  );
  return out;
}

/** `out[i] = X[idx[i]]` over the flat elements of X (`[len(idx)]`). */
export function gatherFlat(x: Tensor, idx: Tensor, name = "gatherFlat"): Tensor {
  const out = new Tensor(x.rt, [idx.size], "f32", name);
  dispatch1d(
    x.rt,
    "priv_gatherFlat",
    `@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> I: array<u32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
struct P { n: u32, a: u32, b: u32, c: u32 };
@group(0) @binding(3) var<uniform> p: P;
${MAIN} { ${IDX} if (i >= p.n) { return; } O[i] = X[I[i]]; }`,
    [x, idx, out],
    packParams(idx.size),
    idx.size,
  );
  return out;
}

/** `dst[idx[i]] += alpha·src[i]` over the flat elements of dst (indices distinct). */
export function scatterAddFlat(dst: Tensor, idx: Tensor, src: Tensor, alpha = 1): void {
  dispatch1d(
    dst.rt,
    "priv_scatterAddFlat",
    `@group(0) @binding(0) var<storage, read_write> D: array<f32>;
@group(0) @binding(1) var<storage, read> I: array<u32>;
@group(0) @binding(2) var<storage, read> S: array<f32>;
struct P { n: u32, a: u32, b: u32, c: u32, alpha: f32, x: f32, y: f32, z: f32 };
@group(0) @binding(3) var<uniform> p: P;
${MAIN} { ${IDX} if (i >= p.n) { return; } D[I[i]] = D[I[i]] + p.alpha * S[i]; }`,
    [dst, idx, src],
    packParams(idx.size, 0, 0, 0, f32(alpha), f32(0), f32(0), f32(0)),
    idx.size,
  );
}

/**
 * Rows of `(K₁⊗K₂)·diag(w)` for entries `(r_i, c_i)`: `out[i, a·C + b] = K₁[r_i, a]·K₂[c_i, b]·w[a, b]`
 * (`[n, R·C]`).
 * @param k1 `[R, R]`
 * @param k2 `[C, C]`
 * @param w `[R, C]`
 */
export function kronRows(k1: Tensor, k2: Tensor, ri: Tensor, ci: Tensor, w: Tensor): Tensor {
  const n = ri.size, R = k1.rows, C = k2.rows;
  const out = new Tensor(k1.rt, [n, R * C], "f32", "kronRows");
  dispatch1d(
    k1.rt,
    "priv_kronRows",
    `@group(0) @binding(0) var<storage, read> K1: array<f32>;
@group(0) @binding(1) var<storage, read> K2: array<f32>;
@group(0) @binding(2) var<storage, read> RI: array<u32>;
@group(0) @binding(3) var<storage, read> CI: array<u32>;
@group(0) @binding(4) var<storage, read> Wt: array<f32>;
@group(0) @binding(5) var<storage, read_write> O: array<f32>;
struct P { n: u32, R: u32, C: u32, x: u32 };
@group(0) @binding(6) var<uniform> p: P;
${MAIN} { ${IDX} let RC = p.R * p.C; if (i >= p.n * RC) { return; }
  let e = i / RC; let q = i % RC; let a = q / p.C; let b = q % p.C;
  O[i] = K1[RI[e] * p.R + a] * K2[CI[e] * p.C + b] * Wt[q]; }`,
    [k1, k2, ri, ci, w, out],
    packParams(n, R, C),
    n * R * C,
  );
  return out;
}

/** Index value marking a padding slot in {@link batchedChunkMatrix} (identity row, zero rhs). */
export const PAD = 0xffffffff;

/**
 * Batched OBS chunk matrices `[b, n, n]`: for slot `(s, i)` with entry `(r, c)` = `(ri, ci)[s·n+i]`,
 * `Cm[s, i, j] = Ĝ[r_i, r_j]·Â[c_i, c_j]`; padding slots (`ri = PAD`) get identity rows/columns.
 */
export function batchedChunkMatrix(
  gh: Tensor,
  ah: Tensor,
  ri: Tensor,
  ci: Tensor,
  b: number,
  n: number,
): Tensor {
  const R = gh.rows, C = ah.rows;
  const out = new Tensor(gh.rt, [b, n, n], "f32", "Cm batch");
  dispatch1d(
    gh.rt,
    "priv_batchedChunkMatrix",
    `@group(0) @binding(0) var<storage, read> G: array<f32>;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> RI: array<u32>;
@group(0) @binding(3) var<storage, read> CI: array<u32>;
@group(0) @binding(4) var<storage, read_write> O: array<f32>;
struct P { b: u32, n: u32, R: u32, C: u32 };
@group(0) @binding(5) var<uniform> p: P;
${MAIN} { ${IDX} let nn = p.n * p.n; if (i >= p.b * nn) { return; }
  let s = i / nn; let q = i % nn; let x = s * p.n + q / p.n; let y = s * p.n + q % p.n;
  if (RI[x] == ${PAD}u || RI[y] == ${PAD}u) { O[i] = select(0.0, 1.0, x == y); return; }
  O[i] = G[RI[x] * p.R + RI[y]] * A[CI[x] * p.C + CI[y]]; }`,
    [gh, ah, ri, ci, out],
    packParams(b, n, R, C),
    b * n * n,
  );
  return out;
}

/** `out[i] = X[idx[i]]`, or 0 where `idx[i] = PAD`. */
export function gatherFlatPadded(x: Tensor, idx: Tensor, shape: number[]): Tensor {
  const out = new Tensor(x.rt, shape, "f32", "rhs batch");
  dispatch1d(
    x.rt,
    "priv_gatherFlatPadded",
    `@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> I: array<u32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
struct P { n: u32, a: u32, b: u32, c: u32 };
@group(0) @binding(3) var<uniform> p: P;
${MAIN} { ${IDX} if (i >= p.n) { return; } O[i] = select(X[I[i]], 0.0, I[i] == ${PAD}u); }`,
    [x, idx, out],
    packParams(idx.size),
    idx.size,
  );
  return out;
}

/** `dst[idx[i]] += src[i]`, skipping `idx[i] = PAD` (indices otherwise distinct). */
export function scatterAddFlatPadded(dst: Tensor, idx: Tensor, src: Tensor): void {
  dispatch1d(
    dst.rt,
    "priv_scatterAddFlatPadded",
    `@group(0) @binding(0) var<storage, read_write> D: array<f32>;
@group(0) @binding(1) var<storage, read> I: array<u32>;
@group(0) @binding(2) var<storage, read> S: array<f32>;
struct P { n: u32, a: u32, b: u32, c: u32 };
@group(0) @binding(3) var<uniform> p: P;
${MAIN} { ${IDX} if (i >= p.n) { return; } if (I[i] != ${PAD}u) { D[I[i]] = D[I[i]] + S[i]; } }`,
    [dst, idx, src],
    packParams(idx.size),
    idx.size,
  );
}
