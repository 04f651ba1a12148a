/**
 * Symmetric eigendecomposition on the GPU by the parallel cyclic Jacobi method.
 *
 * Each sweep visits every index pair once in n−1 rounds of a round-robin ("chess tournament")
 * schedule; in one round the n/2 pairs are disjoint, so all their rotations are applied at once.
 * Two dispatches per round: one computes the n/2 rotations from the current matrix, the next
 * updates every 2×2 block of `A ← JᵀAJ` (reading one buffer, writing the other: ping-pong, so
 * there are no races) and every row of `V ← V·J`. Sweeps are recorded without waiting; the
 * off-diagonal norm is read back after a batch of sweeps to decide whether to continue. Finally
 * the eigenvalues are sorted ascending on the GPU and the eigenvector columns permuted alike.
 *
 * Used only by the `krank = 2` research paths (ALGORITHM.md §4.3): correctness over speed.
 * Cost per sweep ≈ 9n³ flops in 2(n−1) dispatches; 6–12 sweeps are typical.
 *
 * @module
 */
import { GpuError, packParams } from "./device.ts";
import { Tensor } from "./tensor.ts";

/**
 * Pads/symmetrises M into the m×m working matrix A = (M + Mᵀ)/2 and sets V = I. With odd n the
 * zero dummy row/column sits at position 0, which the schedule never moves.
 */
const INIT = `
@group(0) @binding(0) var<storage, read> M: array<f32>;
@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read_write> V: array<f32>;
struct P { n: u32, m: u32, p0: u32, p1: u32 };
@group(0) @binding(3) var<uniform> p: P;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.y; let j = gid.x; let n = p.n; let m = p.m; let off = m - n;
  if (i >= m || j >= m) { return; }
  var v = 0.0;
  if (i >= off && j >= off) { v = 0.5 * (M[(i - off) * n + j - off] + M[(j - off) * n + i - off]); }
  A[i * m + j] = v;
  V[i * m + j] = select(0.0, 1.0, i == j);
}`;

/**
 * Round-robin schedule in position space: positions (2k, 2k+1) form pair k; after each round
 * position 0 stays and the others move one step along the cycle top1 → top2 → … → top(h−1) →
 * bottom(h−1) → … → bottom0 → top1 (top k = 2k, bottom k = 2k+1). After m−1 rounds every pair
 * has met once and the layout is back where it started.
 */
const NEWPOS = `
fn newpos(x: u32, h: u32) -> u32 {
  if (x == 0u || h == 1u) { return x; }
  let k = x / 2u;
  if (x % 2u == 0u) {
    if (k == h - 1u) { return 2u * k + 1u; }
    return 2u * (k + 1u);
  }
  if (k == 0u) { return 2u; }
  return 2u * (k - 1u) + 1u;
}`;

/** The rotations (c, s) of one round, one invocation per pair (Golub & Van Loan, sym.schur2). */
const ROTATIONS = `
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read_write> rot: array<vec2f>;
struct P { m: u32, p0: u32, p1: u32, p2: u32 };
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let k = gid.x; let m = p.m;
  if (k >= m / 2u) { return; }
  let pp = 2u * k; let qq = pp + 1u;
  let apq = A[pp * m + qq];
  if (apq == 0.0) { rot[k] = vec2f(1.0, 0.0); return; }
  let theta = (A[qq * m + qq] - A[pp * m + pp]) / (2.0 * apq);
  var t: f32;
  if (abs(theta) > 1.0e15) { t = 0.5 / theta; }
  else {
    let sg = select(-1.0, 1.0, theta >= 0.0);
    t = sg / (abs(theta) + sqrt(theta * theta + 1.0));
  }
  // c = 1/√(1 + t²) with one Newton step: GPUs evaluate inverseSqrt (and 1/sqrt) to a few ulp,
  // often with a bias; a rotation with c² + s² ≠ 1 scales V, and the scale accumulates over
  // the ~n rotations per sweep (residuals 10× larger on an NVIDIA H200 without this step).
  let u = t * t + 1.0;
  var c = inverseSqrt(u);
  c = c * (1.5 - 0.5 * (u * c) * c);
  rot[k] = vec2f(c, t * c);
}`;

/**
 * Applies one round: workgroup row y < h updates the 2×2 blocks (y, b) of A ← JᵀAJ; row y ≥ h
 * updates row y − h of V ← V·J. Results go to the next round's positions (ping-pong buffers).
 */
const ROUND = `
@group(0) @binding(0) var<storage, read> Ain: array<f32>;
@group(0) @binding(1) var<storage, read_write> Aout: array<f32>;
@group(0) @binding(2) var<storage, read> Vin: array<f32>;
@group(0) @binding(3) var<storage, read_write> Vout: array<f32>;
@group(0) @binding(4) var<storage, read> rot: array<vec2f>;
struct P { m: u32, p0: u32, p1: u32, p2: u32 };
@group(0) @binding(5) var<uniform> p: P;
${NEWPOS}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let m = p.m; let h = m / 2u;
  let b = wid.x * 64u + lid;
  if (b >= h) { return; }
  let y = wid.y;
  let rb = rot[b];
  let cb0 = newpos(2u * b, h); let cb1 = newpos(2u * b + 1u, h);
  if (y < h) {
    let a = y;
    let ra = rot[a];
    let r0 = 2u * a * m; let r1 = r0 + m;
    let x00 = Ain[r0 + 2u * b]; let x01 = Ain[r0 + 2u * b + 1u];
    let x10 = Ain[r1 + 2u * b]; let x11 = Ain[r1 + 2u * b + 1u];
    // T = J_aᵀ·X, then X' = T·J_b, with J = [[c, s], [−s, c]].
    let t00 = ra.x * x00 - ra.y * x10; let t01 = ra.x * x01 - ra.y * x11;
    let t10 = ra.y * x00 + ra.x * x10; let t11 = ra.y * x01 + ra.x * x11;
    var y00 = rb.x * t00 - rb.y * t01; var y01 = rb.y * t00 + rb.x * t01;
    var y10 = rb.x * t10 - rb.y * t11; var y11 = rb.y * t10 + rb.x * t11;
    if (a == b) { y01 = 0.0; y10 = 0.0; }
    let o0 = newpos(2u * a, h) * m; let o1 = newpos(2u * a + 1u, h) * m;
    Aout[o0 + cb0] = y00; Aout[o0 + cb1] = y01;
    Aout[o1 + cb0] = y10; Aout[o1 + cb1] = y11;
  } else {
    let r = (y - h) * m;
    let vp = Vin[r + 2u * b]; let vq = Vin[r + 2u * b + 1u];
    Vout[r + cb0] = rb.x * vp - rb.y * vq;
    Vout[r + cb1] = rb.y * vp + rb.x * vq;
  }
}`;

/**
 * rows[2i] = Σ_{j≠i} A_ij², rows[2i + 1] = A_ii²: one lane per row (m ≤ 5792 iterations each).
 * A single workgroup walking all m² entries would loop m²/256 times per lane, past llvmpipe's
 * silent limit of 65,535 loop iterations per invocation for m > 4095.
 */
const ROW_NORMS = `
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read_write> rows: array<f32>;
struct P { m: u32, p0: u32, p1: u32, p2: u32 };
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  if (i >= p.m) { return; }
  var o = 0.0;
  for (var j = 0u; j < p.m; j++) { let v = select(A[i * p.m + j], 0.0, j == i); o += v * v; }
  let d = A[i * p.m + i];
  rows[2u * i] = o;
  rows[2u * i + 1u] = d * d;
}`;

/** stats[0] = Σ_i rows[2i], stats[1] = Σ_i rows[2i + 1] (one workgroup). */
const OFF_NORM = `
@group(0) @binding(0) var<storage, read> rows: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;
struct P { m: u32, p0: u32, p1: u32, p2: u32 };
@group(0) @binding(2) var<uniform> p: P;
var<workgroup> so: array<f32, 256>;
var<workgroup> sd: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  var o = 0.0; var d = 0.0;
  for (var i = t; i < p.m; i += 256u) { o += rows[2u * i]; d += rows[2u * i + 1u]; }
  so[t] = o; sd[t] = d;
  workgroupBarrier();
  for (var w = 128u; w > 0u; w = w / 2u) {
    if (t < w) { so[t] += so[t + w]; sd[t] += sd[t + w]; }
    workgroupBarrier();
  }
  if (t == 0u) { stats[0] = so[0]; stats[1] = sd[0]; }
}`;

/**
 * rank[j] = place of eigenvalue j (diagonal position j + off) in ascending order, ties by index.
 */
const RANK = `
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read_write> rank: array<u32>;
struct P { n: u32, m: u32, p0: u32, p1: u32 };
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x; let off = p.m - p.n;
  if (j >= p.n) { return; }
  let lj = A[(j + off) * p.m + j + off];
  var r = 0u;
  for (var i = 0u; i < p.n; i++) {
    let li = A[(i + off) * p.m + i + off];
    if (li < lj || (li == lj && i < j)) { r++; }
  }
  rank[j] = r;
}`;

/** values[rank[j]] = A[j][j]; vectors[i][rank[j]] = V[i][j]. */
const PERMUTE = `
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> V: array<f32>;
@group(0) @binding(2) var<storage, read> rank: array<u32>;
@group(0) @binding(3) var<storage, read_write> values: array<f32>;
@group(0) @binding(4) var<storage, read_write> vectors: array<f32>;
struct P { n: u32, m: u32, p0: u32, p1: u32 };
@group(0) @binding(5) var<uniform> p: P;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.y; let j = gid.x; let n = p.n; let m = p.m; let off = m - n;
  if (i >= n || j >= n) { return; }
  let r = rank[j];
  vectors[i * n + r] = V[(i + off) * m + j + off];
  if (i == 0u) { values[r] = A[(j + off) * m + j + off]; }
}`;

/**
 * Options of {@link eigh}.
 *
 * @example Usage
 * ```ts ignore
 * import { eigh, type EighOptions, Tensor } from "@llm-surgeon/toolkit";
 * const m = await Tensor.from([2, 1, 1, 2], [2, 2], undefined, "A of fc1");
 * const opts: EighOptions = { tol: 1e-6, maxSweeps: 10 };
 * const { values } = await eigh(m, opts);
 * console.log(await values.read()); // ≈ [1, 3], ascending
 * ```
 */
export interface EighOptions {
  /** Stop when ‖offdiag A‖_F ≤ tol·‖A‖_F (default 1e-7, about f32 rounding). */
  tol?: number;
  /** Most sweeps (default 30). */
  maxSweeps?: number;
  /** Name used in errors (default: the tensor's name). */
  name?: string;
}

/**
 * Eigendecomposition `M = V·diag(λ)·Vᵀ` of a symmetric `[n, n]` matrix (only `(M + Mᵀ)/2` is
 * used), on the GPU by parallel cyclic Jacobi. Eigenvalues ascending; eigenvectors are the
 * columns of `vectors`, orthonormal to f32 precision. Reads back one pair of norms per batch of
 * sweeps.
 *
 * @param M `[n, n]` symmetric matrix
 * @param opts tolerance, sweep limit, name
 * @returns `values` `[n]` ascending and `vectors` `[n, n]` (column j belongs to `values[j]`)
 *
 * @example Usage
 * ```ts ignore
 * const { values, vectors } = await eigh(await Tensor.from([2, 1, 1, 2], [2, 2]));
 * // values ≈ [1, 3], vectors ≈ [[-0.707, 0.707], [0.707, 0.707]] (up to signs)
 * ```
 */
export async function eigh(
  M: Tensor,
  opts: EighOptions = {},
): Promise<{ values: Tensor; vectors: Tensor }> {
  const name = opts.name ?? M.name;
  const op = `eigh(${name})`;
  if (M.dtype !== "f32" || M.shape.length !== 2 || M.shape[0] !== M.shape[1]) {
    throw new GpuError(op, `expects a square f32 matrix, got ${M} [${M.shape}]`);
  }
  const rt = M.rt;
  const n = M.shape[0];
  const m = n + (n % 2);
  if (m * m * 4 > rt.maxBinding) {
    throw new GpuError(op, `${n}×${n} exceeds one storage binding (${rt.maxBinding} bytes)`);
  }
  const values = Tensor.emptySync(rt, [n], "f32", `${name}:eigenvalues`);
  const vectors = Tensor.emptySync(rt, [n, n], "f32", `${name}:eigenvectors`);
  if (n === 0) return { values, vectors };
  const tol = opts.tol ?? 1e-7;
  const maxSweeps = opts.maxSweeps ?? 30;
  let A = Tensor.emptySync(rt, [m, m], "f32", `${name}:jacobi_a`);
  let B = Tensor.emptySync(rt, [m, m], "f32", `${name}:jacobi_b`);
  let V = Tensor.emptySync(rt, [m, m], "f32", `${name}:jacobi_v`);
  let W = Tensor.emptySync(rt, [m, m], "f32", `${name}:jacobi_w`);
  const stats = Tensor.emptySync(rt, [2], "f32", `${name}:offnorm`);
  const rowNorms = Tensor.emptySync(rt, [2 * m], "f32", `${name}:row_offnorms`);
  const rot = Tensor.emptySync(rt, [m], "f32", `${name}:rotations`);
  const rank = Tensor.emptySync(rt, [n], "u32", `${name}:rank`);
  try {
    const tiles: [number, number] = [Math.ceil(m / 16), Math.ceil(m / 16)];
    rt.dispatch(
      rt.kernel("eigh_init", INIT),
      [M.range(), A.range(), V.range()],
      packParams(n, m, 0, 0),
      tiles,
    );
    const rotKernel = rt.kernel("eigh_rotations", ROTATIONS);
    const roundKernel = rt.kernel("eigh_round", ROUND);
    const rowNormKernel = rt.kernel("eigh_row_norms", ROW_NORMS);
    const offKernel = rt.kernel("eigh_off_norm_rows", OFF_NORM);
    const h = m / 2;
    let sweeps = 0;
    let prevOff = Infinity;
    while (m > 1 && sweeps < maxSweeps) {
      const batch = sweeps === 0 ? Math.min(4, maxSweeps) : 1;
      for (let s = 0; s < batch; s++) {
        for (let r = 0; r < m - 1; r++) {
          rt.dispatch(
            rotKernel,
            [A.range(), rot.range()],
            packParams(m, 0, 0, 0),
            [Math.ceil(h / 64)],
          );
          rt.dispatch(
            roundKernel,
            [A.range(), B.range(), V.range(), W.range(), rot.range()],
            packParams(m, 0, 0, 0),
            [Math.ceil(h / 64), h + m],
          );
          [A, B] = [B, A];
          [V, W] = [W, V];
        }
      }
      sweeps += batch;
      rt.dispatch(
        rowNormKernel,
        [A.range(), rowNorms.range()],
        packParams(m, 0, 0, 0),
        [Math.ceil(m / 64)],
      );
      rt.dispatch(offKernel, [rowNorms.range(), stats.range()], packParams(m, 0, 0, 0), [1]);
      const [off2, diag2] = await stats.read();
      if (!Number.isFinite(off2) || !Number.isFinite(diag2)) {
        throw new GpuError(op, `non-finite entries during the Jacobi sweeps (is ${name} finite?)`);
      }
      const off = Math.sqrt(off2), norm = Math.sqrt(off2 + diag2);
      if (off <= tol * norm) break;
      if (sweeps > 4 && off > 0.5 * prevOff) break; // stagnated at the f32 rounding level
      prevOff = off;
    }
    rt.dispatch(
      rt.kernel("eigh_rank", RANK),
      [A.range(), rank.range()],
      packParams(n, m, 0, 0),
      [Math.ceil(n / 64)],
    );
    rt.dispatch(
      rt.kernel("eigh_permute", PERMUTE),
      [A.range(), V.range(), rank.range(), values.range(), vectors.range()],
      packParams(n, m, 0, 0),
      [Math.ceil(n / 16), Math.ceil(n / 16)],
    );
    return { values, vectors };
  } catch (e) {
    values.dispose();
    vectors.dispose();
    throw e;
  } finally {
    for (const t of [A, B, V, W, stats, rowNorms, rank, rot]) t.dispose();
  }
}
