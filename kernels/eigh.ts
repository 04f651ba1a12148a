/**
 * Symmetric eigendecomposition on the GPU by the parallel cyclic Jacobi method.
 *
 * Each sweep visits every index pair once in n−1 rounds of a round-robin ("chess tournament")
 * schedule; in one round the n/2 pairs are disjoint, so all their rotations are applied at once.
 * One dispatch per round: every invocation recomputes the two rotations it needs from the
 * previous round's matrix (ping-pong buffers, so there are no races) and updates one 2×2 block of
 * `A ← JᵀAJ`, or two entries of one row of `V ← V·J`. Sweeps are recorded without waiting; the
 * off-diagonal norm is read back after a batch of sweeps to decide whether to continue. Finally
 * the eigenvalues are sorted ascending on the GPU and the eigenvector columns permuted alike.
 *
 * Used only by the `krank = 2` research paths (ALGORITHM.md §4.3): correctness over speed.
 * Cost per sweep ≈ 9n³ flops in n−1 dispatches; 6–12 sweeps are typical.
 *
 * @module
 */
import { GpuError, grid, packParams } from "./device.ts";
import { Tensor } from "./tensor.ts";

/** Pads/symmetrises M into the m×m working matrix A = (M + Mᵀ)/2 and sets V = I. */
const INIT = `
@group(0) @binding(0) var<storage, read> M: array<f32>;
@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read_write> V: array<f32>;
struct P { n: u32, m: u32, p0: u32, p1: u32 };
@group(0) @binding(3) var<uniform> p: P;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.y; let j = gid.x; let n = p.n; let m = p.m;
  if (i >= m || j >= m) { return; }
  var v = 0.0;
  if (i < n && j < n) { v = 0.5 * (M[i * n + j] + M[j * n + i]); }
  A[i * m + j] = v;
  V[i * m + j] = select(0.0, 1.0, i == j);
}`;

/** One round of parallel Jacobi rotations (see the module doc). */
const ROUND = `
@group(0) @binding(0) var<storage, read> Ain: array<f32>;
@group(0) @binding(1) var<storage, read_write> Aout: array<f32>;
@group(0) @binding(2) var<storage, read_write> V: array<f32>;
@group(0) @binding(3) var<storage, read> pairs: array<u32>;
struct P { m: u32, round: u32, p0: u32, p1: u32 };
@group(0) @binding(4) var<uniform> p: P;

// (c, s) of the rotation that zeroes A[pp][qq] (Golub & Van Loan, sym.schur2).
fn rotation(pp: u32, qq: u32) -> vec2f {
  let m = p.m;
  let apq = Ain[pp * m + qq];
  if (apq == 0.0) { return vec2f(1.0, 0.0); }
  let theta = (Ain[qq * m + qq] - Ain[pp * m + pp]) / (2.0 * apq);
  var t: f32;
  if (abs(theta) > 1.0e15) { t = 0.5 / theta; }
  else {
    let sg = select(-1.0, 1.0, theta >= 0.0);
    t = sg / (abs(theta) + sqrt(theta * theta + 1.0));
  }
  let c = 1.0 / sqrt(t * t + 1.0);
  return vec2f(c, t * c);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nw: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let g = (wid.y * nw.x + wid.x) * 64u + lid;
  let m = p.m; let h = m / 2u;
  let base = p.round * m;
  if (g < h * h) {
    let a = g / h; let b = g % h;
    let pa = pairs[base + 2u * a]; let qa = pairs[base + 2u * a + 1u];
    let pb = pairs[base + 2u * b]; let qb = pairs[base + 2u * b + 1u];
    let ra = rotation(pa, qa);
    let rb = rotation(pb, qb);
    let x00 = Ain[pa * m + pb]; let x01 = Ain[pa * m + qb];
    let x10 = Ain[qa * m + pb]; let x11 = Ain[qa * m + qb];
    // T = J_aᵀ·X, then X' = T·J_b, with J = [[c, s], [−s, c]].
    let t00 = ra.x * x00 - ra.y * x10; let t01 = ra.x * x01 - ra.y * x11;
    let t10 = ra.y * x00 + ra.x * x10; let t11 = ra.y * x01 + ra.x * x11;
    var y00 = rb.x * t00 - rb.y * t01; var y01 = rb.y * t00 + rb.x * t01;
    var y10 = rb.x * t10 - rb.y * t11; var y11 = rb.y * t10 + rb.x * t11;
    if (a == b) { y01 = 0.0; y10 = 0.0; }
    Aout[pa * m + pb] = y00; Aout[pa * m + qb] = y01;
    Aout[qa * m + pb] = y10; Aout[qa * m + qb] = y11;
    return;
  }
  let g2 = g - h * h;
  if (g2 >= m * h) { return; }
  let i = g2 / h; let b = g2 % h;
  let pb = pairs[base + 2u * b]; let qb = pairs[base + 2u * b + 1u];
  let r = rotation(pb, qb);
  let vp = V[i * m + pb]; let vq = V[i * m + qb];
  V[i * m + pb] = r.x * vp - r.y * vq;
  V[i * m + qb] = r.y * vp + r.x * vq;
}`;

/** stats[0] = Σ_{i≠j} A_ij², stats[1] = Σ_i A_ii² (one workgroup). */
const OFF_NORM = `
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;
struct P { m: u32, p0: u32, p1: u32, p2: u32 };
@group(0) @binding(2) var<uniform> p: P;
var<workgroup> so: array<f32, 256>;
var<workgroup> sd: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  var o = 0.0; var d = 0.0;
  for (var idx = t; idx < p.m * p.m; idx += 256u) {
    let v = A[idx];
    if (idx / p.m == idx % p.m) { d += v * v; } else { o += v * v; }
  }
  so[t] = o; sd[t] = d;
  workgroupBarrier();
  for (var w = 128u; w > 0u; w = w / 2u) {
    if (t < w) { so[t] += so[t + w]; sd[t] += sd[t + w]; }
    workgroupBarrier();
  }
  if (t == 0u) { stats[0] = so[0]; stats[1] = sd[0]; }
}`;

/** rank[j] = position of A[j][j] in ascending order (ties by index), for j < n. */
const RANK = `
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read_write> rank: array<u32>;
struct P { n: u32, m: u32, p0: u32, p1: u32 };
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  if (j >= p.n) { return; }
  let lj = A[j * p.m + j];
  var r = 0u;
  for (var i = 0u; i < p.n; i++) {
    let li = A[i * p.m + i];
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
  let i = gid.y; let j = gid.x; let n = p.n; let m = p.m;
  if (i >= n || j >= n) { return; }
  let r = rank[j];
  vectors[i * n + r] = V[i * m + j];
  if (i == 0u) { values[r] = A[j * m + j]; }
}`;

/** Round-robin schedule: for each of the m−1 rounds, m/2 disjoint pairs (p < q). */
function roundRobin(m: number): Uint32Array {
  const table = new Uint32Array(Math.max(m - 1, 1) * m);
  const pos = Array.from({ length: m }, (_, i) => i);
  for (let r = 0; r < m - 1; r++) {
    for (let k = 0; k < m / 2; k++) {
      const a = pos[k], b = pos[m - 1 - k];
      table[r * m + 2 * k] = Math.min(a, b);
      table[r * m + 2 * k + 1] = Math.max(a, b);
    }
    // Keep pos[0] fixed, rotate the rest by one.
    pos.splice(1, 0, pos.pop()!);
  }
  return table;
}

/** Options of {@link eigh}. */
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
  const V = Tensor.emptySync(rt, [m, m], "f32", `${name}:jacobi_v`);
  const pairs = Tensor.fromSync(rt, roundRobin(m), undefined, "u32", `${name}:pairs`);
  const stats = Tensor.emptySync(rt, [2], "f32", `${name}:offnorm`);
  const rank = Tensor.emptySync(rt, [n], "u32", `${name}:rank`);
  try {
    const tiles: [number, number] = [Math.ceil(m / 16), Math.ceil(m / 16)];
    rt.dispatch(
      rt.kernel("eigh_init", INIT),
      [M.range(), A.range(), V.range()],
      packParams(n, m, 0, 0),
      tiles,
    );
    const roundKernel = rt.kernel("eigh_round", ROUND);
    const offKernel = rt.kernel("eigh_off_norm", OFF_NORM);
    const h = m / 2;
    const groups = grid(Math.ceil((h * h + m * h) / 64));
    let sweeps = 0;
    let prevOff = Infinity;
    while (m > 1 && sweeps < maxSweeps) {
      const batch = sweeps === 0 ? Math.min(4, maxSweeps) : 1;
      for (let s = 0; s < batch; s++) {
        for (let r = 0; r < m - 1; r++) {
          rt.dispatch(
            roundKernel,
            [A.range(), B.range(), V.range(), pairs.range()],
            packParams(m, r, 0, 0),
            groups,
          );
          [A, B] = [B, A];
        }
      }
      sweeps += batch;
      rt.dispatch(offKernel, [A.range(), stats.range()], packParams(m, 0, 0, 0), [1]);
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
    for (const t of [A, B, V, pairs, stats, rank]) t.dispose();
  }
}
