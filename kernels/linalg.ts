/**
 * Dense linear algebra on the GPU: Cholesky factorisation, triangular solves, the damped SPD
 * inverse of ALGORITHM.md §4.1 with float64-like accuracy, SPD solves, and many small SPD solves
 * at once.
 *
 * How it works:
 * - **Cholesky** is recursive: split `M` into 2×2 blocks, factor `M11 = L11·L11ᵀ`, solve
 *   `L21·L11ᵀ = M21` (recursively on the columns, through explicit inverses of the blocks of at
 *   most 256), `S = M22 − L21·L21ᵀ`, factor `S`. The factor is kept as the tree of this blocking,
 *   so `L⁻¹` is built from it only when a caller wants it. About n³/6 multiply-adds for L and n³/3
 *   more for L⁻¹, nearly all in GEMMs ({@link matmul}); the leaves (≤ 64×64) are factored and
 *   inverted inside one workgroup. Everything is recorded into one submission; the only read-back
 *   is one status word (the first failing pivot), so a matrix that is not positive definite
 *   raises {@link NotPositiveDefiniteError} and never yields NaN.
 * - **Stacks.** The same code factors a stack `[b, n, n]` of matrices at once (batched GEMMs, one
 *   leaf workgroup per matrix): {@link batchedSpdSolve} uses it for systems too large for its
 *   one-workgroup-per-system kernel.
 * - **Accuracy.** f32 Cholesky loses about `κ·2⁻²⁴` relative accuracy. {@link spdInverse} first
 *   removes the factorisation's share, `X ← X − X·(M_d − L·Lᵀ)·X` with the factor residual in
 *   double-f32, measures the error left with random probes, and if needed refines by Newton
 *   steps `X ← X + X·R` with the residual `R = I − M_d·X` computed in double-f32 arithmetic
 *   (Dekker products + two-sum, error ≈ 2⁻⁴⁸·|M||X|), so the error is squared each step until it
 *   reaches f32 rounding. {@link spdSolve} and
 *   {@link batchedSpdSolve} use classic iterative refinement with the same compensated residual.
 *   The damping shift is kept out of the f32 matrix in the residual (`R = I − M·X − σ·X`), so the
 *   rounding of the damped diagonal does not limit the accuracy.
 * - **Cost.** Only the lower triangle of the input is read. The plain f32 inverse (`maxRefine: 0`)
 *   is the factor tree and `M⁻¹` built from it block by block (X22 = S⁻¹, X21 = −X22·L21·L11⁻¹,
 *   X11 = M11⁻¹ + Tᵀ·X22·T): about 0.7 n³ multiply-adds in all, ≈ 0.4× the GEMM rate (counting
 *   n³ flops) at n = 2048 on the software adapter, error ≈ κ·2⁻²⁴ (4.6e-5 measured on a damped
 *   Gram matrix of κ ≈ 1e3). The factor correction costs n³/6 double-f32 terms (the lower
 *   triangle of `L·Lᵀ`, ≈ 0.9 GEMM-times) plus ≈ 1.6 f32 GEMMs (X·Δ, then the lower triangle of
 *   (XΔ)·X through a banded GEMM). A Newton step is the double-f32 residual, n³ terms at 19 f32
 *   operations each (no fused multiply-add on the software adapter: Dekker splits instead;
 *   ≈ 4.3 f32 GEMMs of the same size), plus the lower triangle of the correction `X·R`
 *   (≈ 0.6 GEMM). Steps needed: one for κ ≲ 1e4, two to three near κ = 1e6. Why no refined
 *   inverse built on f32 can reach a third of the GEMM rate: docs/performance.md.
 *   Measured errors vs float64: ≈ 3e-8 after refinement (κ = 1e3…1e6, n = 129…512; n = 3072 in
 *   tests/slow: 2.7e-8 at κ = 1e3, 3.9e-8 at κ = 1e6).
 *
 * @module
 */
import { f32, GpuError, packParams, type Runtime } from "./device.ts";
import { map } from "./elementwise.ts";
import { BAND_OPEN, matmul } from "./gemm.ts";
import { reduce } from "./reduce.ts";
import { Tensor } from "./tensor.ts";
import { inverseTol, newtonRule, refine, SOLVE_RULE, withRetryDamping } from "./_refine.ts";
import { rowOrder } from "./_order.ts";
import {
  choleskyBlocks,
  spdInverseBlocks,
  spdSolveBlocks,
  triangularSolveBlocks,
} from "./linalg_big.ts";

/** Leaf size of the recursive Cholesky / triangular inverse (one workgroup factors a leaf). */
const NB = 64;
/** Marker for "no failing pivot" in the status buffer. */
const NO_FAILURE = 0xffffffff;

/**
 * Raised when a matrix is not (numerically) positive definite after damping: a Cholesky pivot
 * was ≤ 0 or not finite.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { NotPositiveDefiniteError } from "@llm-surgeon/toolkit";
 * const err = new NotPositiveDefiniteError("A of fc1", 3, 0.01, -2e-5);
 * assert.equal(err.pivot, 3);
 * assert.equal(
 *   err.message,
 *   "A of fc1: not positive definite after damping λ = 0.01 (M + λ·mean(diag M)·I): " +
 *     "Cholesky pivot 3 is -0.00002",
 * );
 * ```
 *
 * @example Catching it
 * ```ts ignore
 * import { cholesky, NotPositiveDefiniteError } from "@llm-surgeon/toolkit";
 * try {
 *   await cholesky(m);
 * } catch (e) {
 *   if (e instanceof NotPositiveDefiniteError) console.error(`raise the damping: ${e.message}`);
 *   else throw e;
 * }
 * ```
 */
export class NotPositiveDefiniteError extends Error {
  /** Name of the matrix (the tensor name, or the `name` option). */
  readonly matrix: string;
  /** Index of the first failing pivot (0-based row/column). */
  readonly pivot: number;
  /** Relative damping λ that was used (`M + λ·mean(diag M)·I`). */
  readonly damp: number;
  /** The value of the failing pivot (≤ 0 or not finite). */
  readonly value: number;
  /** Index of the failing system in a batch ({@link batchedSpdSolve}), else null. */
  readonly system: number | null;
  /**
   * Creates the error; the message names the matrix, the pivot, its value and the damping.
   *
   * @param matrix the matrix name
   * @param pivot the failing pivot index
   * @param damp the relative damping that was used
   * @param value the pivot value found
   * @param detail extra context (e.g. the system index of a batch)
   * @param system the index of the failing system in a batch
   */
  constructor(
    matrix: string,
    pivot: number,
    damp: number,
    value: number,
    detail = "",
    system: number | null = null,
  ) {
    super(
      `${matrix}${detail}: not positive definite after damping λ = ${damp} ` +
        `(M + λ·mean(diag M)·I): Cholesky pivot ${pivot} is ${value}`,
    );
    this.name = "NotPositiveDefiniteError";
    this.matrix = matrix;
    this.pivot = pivot;
    this.damp = damp;
    this.value = value;
    this.system = system;
  }
}

/** Whether `t` is larger than one storage binding (then the blocked versions take it). */
function overBinding(t: Tensor): boolean {
  return t.size * 4 > t.rt.maxBinding;
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/**
 * Copies a `rows × cols` block between two row-major matrices, optionally transposed/scaled; the
 * z workgroup index selects the matrix of a stack (strides `sstride`, `dstride`).
 */
const COPY_BLOCK = `
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
struct P { rows: u32, cols: u32, sld: u32, soff: u32, dld: u32, doff: u32, trans: u32,
           sstride: u32, dstride: u32, p0: u32, p1: u32, p2: u32, alpha: f32, q0: f32, q1: f32,
           q2: f32 };
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.y; let j = gid.x;
  if (i >= p.rows || j >= p.cols) { return; }
  var s = p.soff + gid.z * p.sstride;
  if (p.trans == 1u) { s += j * p.sld + i; } else { s += i * p.sld + j; }
  dst[p.doff + gid.z * p.dstride + i * p.dld + j] = p.alpha * src[s];
}`;

/**
 * Factors (mode 0) and/or inverts (mode 1: input already lower triangular) one leaf of at most
 * 64×64 (read at `aoff` with leading dimension `lda`) inside one workgroup; workgroup s takes
 * matrix s of a stack (`astride` apart). Writes L (lower, zeros
 * above), L⁻¹, and the first failing pivot of matrix s into status[4s], its value into
 * status[4s + 1].
 */
function leafSource(wg: number): string {
  return `
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read_write> L: array<f32>;
@group(0) @binding(2) var<storage, read_write> Li: array<f32>;
@group(0) @binding(3) var<storage, read_write> status: array<u32>;
struct P { m: u32, base: u32, mode: u32, lda: u32, aoff: u32, astride: u32, p0: u32, p1: u32 };
@group(0) @binding(4) var<uniform> p: P;
const NB = ${NB}u;
var<workgroup> a: array<f32, ${NB * NB}>;
var<workgroup> piv: f32;
@compute @workgroup_size(${wg})
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3u) {
  let m = p.m;
  let o = wid.x * m * m;
  let st = 4u * wid.x;
  let ao = wid.x * p.astride + p.aoff;
  for (var idx = t; idx < m * m; idx += ${wg}u) {
    let i = idx / m; let j = idx % m;
    a[i * NB + j] = select(0.0, A[ao + i * p.lda + j], j <= i);
  }
  workgroupBarrier();
  if (p.mode == 0u) {
    for (var j = 0u; j < m; j++) {
      if (t == 0u) {
        var d = a[j * NB + j];
        if (!(d > 0.0) || d > 3.0e38) {
          if (status[st] == ${NO_FAILURE}u) { status[st] = p.base + j; status[st + 1u] = bitcast<u32>(d); }
          d = 1.0;
        }
        let s = sqrt(d);
        a[j * NB + j] = s;
        piv = s;
      }
      workgroupBarrier();
      let pv = piv;
      for (var i = j + 1u + t; i < m; i += ${wg}u) { a[i * NB + j] = a[i * NB + j] / pv; }
      workgroupBarrier();
      for (var i = j + 1u + t; i < m; i += ${wg}u) {
        let lij = a[i * NB + j];
        for (var k = j + 1u; k <= i; k++) { a[i * NB + k] = a[i * NB + k] - lij * a[k * NB + j]; }
      }
      workgroupBarrier();
    }
  }
  for (var idx = t; idx < m * m; idx += ${wg}u) {
    let i = idx / m; let j = idx % m;
    L[o + idx] = a[i * NB + j];
  }
  // Column c of L⁻¹ by forward substitution, kept in a private array while it is built.
  for (var c = t; c < m; c += ${wg}u) {
    var col: array<f32, ${NB}>;
    for (var i = 0u; i < c; i++) { Li[o + i * m + c] = 0.0; }
    for (var i = c; i < m; i++) {
      var s = select(0.0, 1.0, i == c);
      for (var k = c; k < i; k++) { s = s - a[i * NB + k] * col[k]; }
      let v = s / a[i * NB + i];
      col[i] = v;
      Li[o + i * m + c] = v;
    }
  }
}`;
}

/**
 * Adds σ = λ·mean(diag M) to the diagonal of M in place (workgroup s: matrix s of a stack) and
 * stores σ (f32 bits) in status[4s + 2], where the compensated residual picks it up.
 */
const DAMP = `
@group(0) @binding(0) var<storage, read_write> M: array<f32>;
@group(0) @binding(1) var<storage, read_write> status: array<u32>;
struct P { n: u32, batch: u32, p0: u32, p1: u32, lambda: f32, q0: f32, q1: f32, q2: f32 };
@group(0) @binding(2) var<uniform> p: P;
var<workgroup> part: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3u) {
  let n = p.n;
  let o = wid.x * n * n;
  var s = 0.0;
  for (var i = t; i < n; i += 256u) { s += M[o + i * n + i]; }
  part[t] = s;
  workgroupBarrier();
  for (var w = 128u; w > 0u; w = w / 2u) {
    if (t < w) { part[t] += part[t + w]; }
    workgroupBarrier();
  }
  let sigma = p.lambda * part[0] / f32(n);
  for (var i = t; i < n; i += 256u) { M[o + i * n + i] += sigma; }
  if (t == 0u) { status[4u * wid.x + 2u] = bitcast<u32>(sigma); }
}`;

/** Shared WGSL: exact product error (Dekker split) and two-sum, protected from simplification. */
const COMPENSATED = `
fn split2(a: f32, one: f32) -> vec2f {
  let c = 4097.0 * a;
  let hi = c * one - (c - a);
  return vec2f(hi, a - hi);
}
// (s, e) with s = fl(hi + p), e = exact error; 'one' is an opaque 1.0 that keeps the compiler
// from simplifying (s − hi) to p.
fn twoSum(x: f32, y: f32, one: f32) -> vec2f {
  let s = x + y;
  let bp = s * one - x;
  let e = (x - (s - bp) * one) + (y - bp);
  return vec2f(s, e);
}
fn prodErr(p: f32, a: vec2f, b: vec2f) -> f32 {
  return ((a.x * b.x - p) + a.x * b.y + a.y * b.x) + a.y * b.y;
}`;

/**
 * Rows and vec4 column groups of R per invocation of the residual kernel: 8 × 2 for many
 * right-hand sides (an inverse), 16 × 1 for a few (solves), where wider blocks would be idle.
 */
function residualShape(k: number): ResidualShape {
  if (k > 32) return { rows: 8, cv: 2, wx: 8, wy: 8 };
  // Lanes over rows when there are few columns: idle column lanes would waste SIMD width.
  if (k <= 4) return { rows: 16, cv: 1, wx: 1, wy: 64 };
  const wx = 2 ** Math.ceil(Math.log2(Math.ceil(k / 4))); // 2, 4 or 8 lanes over columns
  return { rows: 8, cv: 1, wx, wy: 64 / wx };
}

/** Register block (rows × 4·cv columns of R per invocation) and workgroup shape (wx × wy). */
interface ResidualShape {
  rows: number;
  cv: number;
  wx: number;
  wy: number;
}

/**
 * Generates the residual kernel R = B − Aᵀ·X − σ·X (B = I when ident = 1; `useSigma` 0: no σ
 * term, 1: −σ·X, 2: +σ·I instead), every product and sum in double-f32. A is n×n, read by rows
 * (row j of A is column j of Aᵀ, which makes the loads contiguous; for a symmetric A that is
 * B − A·X); X and B are n×k. With `tri` = 1 only blocks on or below the diagonal are written and
 * j runs only up to the block's min(row, column): for A = X = Lᵀ of a lower-triangular L that
 * is the lower triangle of B − L·Lᵀ at a sixth of the cost. Each invocation owns `rows` rows ×
 * 4·`cv` columns of R, held as vec4 (hi, lo) pairs; the code is fully unrolled. The z workgroup
 * index selects the system of a stack (σ from status[4z + 2]).
 */
function residualSource(shape: ResidualShape): string {
  const R = shape.rows, CV = shape.cv;
  const L: string[] = [];
  const rows = [...Array(R).keys()], cvs = [...Array(CV).keys()];
  L.push(`
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read> status: array<u32>;
@group(0) @binding(4) var<storage, read_write> R: array<f32>;
struct P { n: u32, k: u32, ident: u32, useSigma: u32, one: f32, tri: u32, perm: u32, q2: f32 };
@group(0) @binding(5) var<uniform> p: P;
${COMPENSATED}
fn split4(a: vec4f, one: f32) -> array<vec4f, 2> {
  let c = 4097.0 * a;
  let hi = c * one - (c - a);
  return array<vec4f, 2>(hi, a - hi);
}
var<private> xo: u32;
fn loadX(row: u32, c0: u32) -> vec4f {
  let k = p.k; let base = xo + row * k;
  return vec4f(X[base + min(c0, k - 1u)], X[base + min(c0 + 1u, k - 1u)],
               X[base + min(c0 + 2u, k - 1u)], X[base + min(c0 + 3u, k - 1u)]);
}
fn initB(row: u32, c0: u32) -> vec4f {
  if (p.ident == 1u) {
    return select(vec4f(0.0), vec4f(1.0), vec4u(row) == vec4u(c0, c0 + 1u, c0 + 2u, c0 + 3u));
  }
  let k = p.k; let base = xo + row * k;
  return vec4f(B[base + min(c0, k - 1u)], B[base + min(c0 + 1u, k - 1u)],
               B[base + min(c0 + 2u, k - 1u)], B[base + min(c0 + 3u, k - 1u)]);
}
@compute @workgroup_size(${shape.wx}, ${shape.wy})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let n = p.n; let k = p.k; let one = p.one;
  // Row blocks in the order of the stride p.perm (see rowOrder).
  let r0 = (((wid.y * p.perm) % nwg.y) * ${shape.wy}u + lid.y) * ${R}u; let c0 = gid.x * ${4 * CV}u;
  if (r0 >= n || c0 >= k) { return; }
  // tri: only blocks on or below the diagonal, and A·X has zeros past min(row, column).
  if (p.tri == 1u && c0 > r0 + ${R - 1}u) { return; }
  let jEnd = select(n, min(n, min(r0 + ${R}u, c0 + ${4 * CV}u)), p.tri == 1u);
  xo = gid.z * n * k;
  let ao = gid.z * n * n;`);
  for (const r of rows) L.push(`  let ri${r} = min(r0 + ${r}u, n - 1u);`);
  for (const r of rows) {
    for (const c of cvs) {
      L.push(`  var h${r}_${c} = initB(ri${r}, c0 + ${4 * c}u); var l${r}_${c} = vec4f(0.0);`);
    }
  }
  L.push(`  for (var j = 0u; j < jEnd; j++) {`);
  for (const r of rows) {
    L.push(`    let a${r} = -A[ao + j * n + ri${r}]; let as${r} = split2(a${r}, one);`);
  }
  for (const c of cvs) {
    L.push(`    let x${c} = loadX(j, c0 + ${4 * c}u); let xs${c} = split4(x${c}, one);`);
  }
  for (const r of rows) {
    for (const c of cvs) {
      const h = `h${r}_${c}`, l = `l${r}_${c}`;
      L.push(`    {
      let q = a${r} * x${c};
      let e = ((as${r}.x * xs${c}[0] - q) + as${r}.x * xs${c}[1] + as${r}.y * xs${c}[0]) + as${r}.y * xs${c}[1];
      let s = ${h} + q;
      let bp = s * one - ${h};
      let err = (${h} - (s - bp) * one) + (q - bp);
      ${h} = s;
      ${l} = ${l} + (err + e);
    }`);
    }
  }
  L.push(`  }`);
  L.push(`  var sigma = 0.0;
  if (p.useSigma == 1u) { sigma = -bitcast<f32>(status[4u * gid.z + 2u]); }
  if (p.useSigma == 2u) { sigma = bitcast<f32>(status[4u * gid.z + 2u]); }
  let ss = split2(sigma, one);`);
  for (const r of rows) {
    for (const c of cvs) {
      const h = `h${r}_${c}`, l = `l${r}_${c}`;
      L.push(`  {
    let cc = c0 + ${4 * c}u;
    let eye = select(vec4f(0.0), vec4f(1.0), vec4u(ri${r}) == vec4u(cc, cc + 1u, cc + 2u, cc + 3u));
    let x = select(loadX(ri${r}, cc), eye, p.useSigma == 2u); let xs = split4(x, one);
    let q = sigma * x;
    let e = ((ss.x * xs[0] - q) + ss.x * xs[1] + ss.y * xs[0]) + ss.y * xs[1];
    let s = ${h} + q;
    let bp = s * one - ${h};
    let err = (${h} - (s - bp) * one) + (q - bp);
    let v = s + (${l} + (err + e));
    if (r0 + ${r}u < n) {
      let base = xo + ri${r} * k + c0 + ${4 * c}u;
      for (var t = 0u; t < 4u; t++) { if (c0 + ${4 * c}u + t < k) { R[base + t] = v[t]; } }
    }
  }`);
    }
  }
  L.push(`}`);
  return L.join("\n");
}

/** out[i][j] = M[max(i, j)][min(i, j)]: the symmetric matrix defined by M's lower triangle. */
const MIRROR_LOWER = `
@group(0) @binding(0) var<storage, read> M: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
struct P { n: u32, p0: u32, p1: u32, p2: u32 };
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.y; let j = gid.x;
  if (i >= p.n || j >= p.n) { return; }
  let o = gid.z * p.n * p.n;
  out[o + i * p.n + j] = M[o + max(i, j) * p.n + min(i, j)];
}`;

/** In place: X ← (X + Xᵀ)/2 (mode 0), or the upper triangle ← the lower one (mode 1). */
const SYMMETRIZE = `
@group(0) @binding(0) var<storage, read_write> X: array<f32>;
struct P { n: u32, mode: u32, p1: u32, p2: u32 };
@group(0) @binding(1) var<uniform> p: P;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.y; let j = gid.x;
  if (i >= p.n || j >= p.n || j >= i) { return; }
  var v = X[i * p.n + j];
  if (p.mode == 0u) { v = 0.5 * (v + X[j * p.n + i]); }
  X[i * p.n + j] = v;
  X[j * p.n + i] = v;
}`;

// ---------------------------------------------------------------------------------------------
// Private helpers
// ---------------------------------------------------------------------------------------------

function assertMatrix(t: Tensor, what: string, op: string): void {
  if (t.dtype !== "f32") throw new GpuError(op, `${what} ${t} must be f32`);
  if (t.shape.length !== 2) throw new GpuError(op, `${what} ${t} must be 2-D, got [${t.shape}]`);
}

function assertSquare(t: Tensor, what: string, op: string): number {
  assertMatrix(t, what, op);
  if (t.shape[0] !== t.shape[1]) {
    throw new GpuError(op, `${what} ${t} must be square, got [${t.shape}]`);
  }
  if (t.size * 4 > t.rt.maxBinding) {
    throw new GpuError(
      op,
      `${what} ${t} is larger than one storage binding (${t.rt.maxBinding} bytes); not supported`,
    );
  }
  return t.shape[0];
}

/** `[batch, rows, cols]` of a matrix (batch 1) or of a stack of matrices `[b, rows, cols]`. */
function dims(t: Tensor): [number, number, number] {
  const s = t.shape;
  return s.length === 3 ? [s[0], s[1], s[2]] : [1, s[0], s[1]];
}

/** A new zero tensor of `rows × cols` matrices, stacked like `like` (2-D stays 2-D). */
function stackLike(like: Tensor, rows: number, cols: number, name: string): Tensor {
  const shape = like.shape.length === 3 ? [like.shape[0], rows, cols] : [rows, cols];
  return Tensor.emptySync(like.rt, shape, "f32", name);
}

/**
 * dst[dr0.., dc0..] = alpha·src[sr0.., sc0..] (or its transpose), a rows×cols block; for stacks
 * of matrices, in every matrix of the stack.
 */
function copyBlock(
  src: Tensor,
  sr0: number,
  sc0: number,
  dst: Tensor,
  dr0: number,
  dc0: number,
  rows: number,
  cols: number,
  trans = false,
  alpha = 1,
): void {
  if (rows === 0 || cols === 0) return;
  const rt = src.rt;
  const [b, sr, sld] = dims(src);
  const [, dr, dld] = dims(dst);
  rt.dispatch(
    rt.kernel("linalg_copy_block_stack", COPY_BLOCK),
    [src.range(), dst.range()],
    packParams(
      rows,
      cols,
      sld,
      sr0 * sld + sc0,
      dld,
      dr0 * dld + dc0,
      trans ? 1 : 0,
      sr * sld,
      dr * dld,
      0,
      0,
      0,
      f32(alpha),
      f32(0),
      f32(0),
      f32(0),
    ),
    [Math.ceil(cols / 16), Math.ceil(rows / 16), b],
  );
}

/** A new `rows × cols` tensor (or stack) holding a block of `src`. */
function block(src: Tensor, r0: number, c0: number, rows: number, cols: number): Tensor {
  const out = stackLike(src, rows, cols, `${src.name}[${r0}:,${c0}:]`);
  const [b, , w] = dims(src);
  // Whole rows of one matrix are contiguous: a plain buffer copy.
  if (b === 1 && c0 === 0 && cols === w) out.copyFrom(src, r0 * w, 0, rows * w);
  else copyBlock(src, r0, c0, out, 0, 0, rows, cols);
  return out;
}

/** A new tensor holding `srcᵀ`. */
function transposed(src: Tensor, name: string): Tensor {
  const [r, c] = src.shape;
  const out = Tensor.emptySync(src.rt, [c, r], "f32", name);
  copyBlock(src, 0, 0, out, 0, 0, c, r, true);
  return out;
}

/** Assembles a lower block-triangular n×n matrix (or stack) from its three blocks. */
function assemble(b11: Tensor, b21: Tensor, b22: Tensor, name: string): Tensor {
  const h = dims(b11)[1], n = h + dims(b22)[1];
  const out = stackLike(b11, n, n, name);
  copyBlock(b11, 0, 0, out, 0, 0, h, h);
  copyBlock(b21, 0, 0, out, h, 0, n - h, h);
  copyBlock(b22, 0, 0, out, h, h, n - h, n - h);
  return out;
}

/**
 * The lower triangle of `A·B` (`A` is m×K, `B` is K×m) with zeros above the diagonal: one GEMM
 * with an output band, which skips the blocks above the diagonal (about half the multiply-adds),
 * then the unspecified elements above the diagonal are zeroed.
 */
function lowerProduct(A: Tensor, B: Tensor, name: string): Tensor {
  const C = matmul(A, B, { band: { out: [-BAND_OPEN, 0] }, name });
  return map("select(a, 0.0, (i % u32(s0)) > (i / u32(s0)))", [C], [C.cols], { out: C });
}

/** In place: `X ← (X + Xᵀ)/2` ("average") or the upper triangle ← the lower one ("lower"). */
function symmetrize(X: Tensor, mode: "average" | "lower"): void {
  const n = X.shape[0];
  X.rt.dispatch(
    X.rt.kernel("linalg_symmetrize_mode", SYMMETRIZE),
    [X.range()],
    packParams(n, mode === "average" ? 0 : 1, 0, 0),
    [Math.ceil(n / 16), Math.ceil(n / 16)],
  );
}

/**
 * Workgroup size of the one-workgroup-per-problem kernels (leaves, batched systems). On the
 * software adapter a workgroup is one SIMD batch of 8 lanes, so its barriers cost nothing; 64
 * lanes would be 8 coroutines switching at every barrier (6× slower measured).
 */
function wgSize(rt: Runtime): number {
  return rt.adapter.isSoftware ? 8 : 64;
}

/**
 * Loop iterations that invocation 0 (the busiest: it also takes the trace, and row j in every
 * Cholesky step) of the batched solver runs for one n×n system with k right-hand sides, a
 * workgroup of `wg` and `refine` refinement steps. Mirrors the loops of
 * {@link batchedSource} one by one.
 */
function batchedSolveLoops(n: number, k: number, wg: number, refine: number): number {
  const per = (count: number) => (count > 0 ? Math.ceil(count / wg) : 0);
  let chol = n + per(n * n); // trace (invocation 0), copy into W
  let solve = 0; // one cholSolve: forward and backward substitution
  for (let j = 0; j < n; j++) {
    chol += 1 + per(n - j) * (1 + j) + per(n - j - 1);
    solve += 2 + 2 * per(k) + per((n - j - 1) * k) + per(j * k);
  }
  const first = 2 * per(n * k) + solve;
  const step = 1 + per(n * k) * (n + 2) + solve + Math.log2(wg);
  return chol + first + refine * step;
}

/**
 * Workgroup size of the one-workgroup-per-system batched solver, or null when a system is too
 * large for it. Mesa's llvmpipe silently ends every loop of an invocation once it has run 65,535
 * loop iterations in total, so on software adapters the busiest invocation's count
 * ({@link batchedSolveLoops}, with every refinement step taken) must stay below 50,000. Its
 * Cholesky alone is ≈ n²/2 for any workgroup of at least n, so n ≲ 300 at most. Workgroups of
 * 256 lanes are not tried: where only they would fit, the stacked blocked path was faster
 * (64 systems of 200: 258 vs 343 ms; 16 systems of 128 with 8 right-hand sides: 63 vs 82 ms).
 */
function batchedWgSize(rt: Runtime, n: number, k: number, refine: number): number | null {
  if (!rt.adapter.loopLimited) return wgSize(rt);
  for (const wg of [wgSize(rt), 64]) {
    if (batchedSolveLoops(n, k, wg, refine) < 50000) return wg;
  }
  return null;
}

/** A fresh status buffer, per matrix s: [first failing pivot, its value bits, σ bits, spare]. */
function newStatus(rt: Runtime, name: string, batch = 1): Tensor {
  const words = new Uint32Array(4 * batch);
  for (let s = 0; s < batch; s++) words[4 * s] = NO_FAILURE;
  return Tensor.fromSync(rt, words, [4 * batch], "u32", `${name}:status`);
}

/** Splits n > NB into a leading part that is a multiple of NB (about half). */
function splitPoint(n: number): number {
  return NB * Math.ceil(n / (2 * NB));
}

/**
 * A lower-triangular factor kept as the tree of its recursive 2×2 blocking: a leaf holds its
 * block and the block's inverse; a node holds the two diagonal sub-trees and the full block
 * below the diagonal. Every tensor may be a stack `[b, ·, ·]` (one factor per system).
 */
type Factor =
  | { kind: "leaf"; n: number; L: Tensor; Li: Tensor }
  | { kind: "node"; n: number; h: number; t11: Factor; L21: Tensor; t22: Factor; Li?: Tensor };

/** Frees every tensor of a factor tree. */
function disposeFactor(f: Factor): void {
  if (f.kind === "leaf") {
    f.L.dispose();
    f.Li.dispose();
  } else {
    disposeFactor(f.t11);
    f.L21.dispose();
    disposeFactor(f.t22);
    f.Li?.dispose();
  }
}

/**
 * One leaf (≤ NB): the n×n diagonal block of `A` at (off, off), in one workgroup per matrix of
 * the stack. Mode "chol" factors it, mode "inv" takes its lower triangle as L; both give L and
 * L⁻¹. Pivots are numbered from `base`.
 */
function leafFactor(
  A: Tensor,
  base: number,
  status: Tensor,
  mode: "chol" | "inv",
  off: number,
  n: number,
): Factor {
  const rt = A.rt;
  const [b, rows, lda] = dims(A);
  const L = stackLike(A, n, n, "cholesky:L");
  const Li = stackLike(A, n, n, "cholesky:Linv");
  rt.dispatch(
    rt.kernel(`linalg_leaf_view_col_wg${wgSize(rt)}`, leafSource(wgSize(rt))),
    [A.range(), L.range(), Li.range(), status.range()],
    packParams(n, base, mode === "chol" ? 0 : 1, lda, off * lda + off, rows * lda, 0, 0),
    [b],
  );
  return { kind: "leaf", n, L, Li };
}

/**
 * Recursive Cholesky of a matrix or of every matrix of a stack `[b, n, n]`: `L11` of the leading
 * block, `L21 = A21·L11⁻ᵀ` by {@link solveRightT}, `S = A22 − L21·L21ᵀ` (one symmetric GEMM),
 * `L22` of S. About n³/6 multiply-adds, nearly all in GEMMs; the leaves (≤ 64) run in one
 * workgroup each. Works on the n×n diagonal block of `A` at (off, off) (the leading block is
 * read in place, not copied). Pivots are numbered from `base`; the input is not modified.
 */
function choleskyTree(
  A: Tensor,
  base: number,
  status: Tensor,
  off = 0,
  n = dims(A)[1],
): Factor {
  if (n <= NB) return leafFactor(A, base, status, "chol", off, n);
  const h = splitPoint(n), m = n - h;
  const t11 = choleskyTree(A, base, status, off, h);
  const A21 = block(A, off + h, off, m, h);
  const L21 = solveRightT(A21, t11);
  A21.dispose();
  const A22 = block(A, off + h, off + h, m, m);
  matmul(L21, L21, { transB: true, alpha: -1, beta: 1, out: A22 });
  const t22 = choleskyTree(A22, base + h, status);
  A22.dispose();
  return { kind: "node", n, h, t11, L21, t22 };
}

/**
 * The factor tree of a given lower triangle: its n×n diagonal block at (off, off), the leaves
 * inverted in one workgroup each.
 */
function lowerTree(L: Tensor, status: Tensor, off = 0, n = dims(L)[1]): Factor {
  if (n <= NB) return leafFactor(L, 0, status, "inv", off, n);
  const h = splitPoint(n), m = n - h;
  const t11 = lowerTree(L, status, off, h);
  const t22 = lowerTree(L, status, off + h, m);
  return { kind: "node", n, h, t11, L21: block(L, off + h, off, m, h), t22 };
}

/**
 * X = B·L⁻ᵀ (solves X·Lᵀ = B) for B `[m, n]` and the factor tree of L: recursive on the columns
 * of B, `X1 = B1·L11⁻ᵀ`, `X2 = (B2 − X1·L21ᵀ)·L22⁻ᵀ`; leaves multiply by their inverse. About
 * m·n²/2 multiply-adds.
 */
function solveRightT(B: Tensor, f: Factor): Tensor {
  if (f.kind === "leaf" || f.n <= SOLVE_BLOCK) {
    return matmul(B, inverseOf(f), { transB: true, name: "cholesky:L21" });
  }
  const m = dims(B)[1], h = f.h, r = f.n - h;
  const B1 = block(B, 0, 0, m, h);
  const X1 = solveRightT(B1, f.t11);
  B1.dispose();
  const B2 = block(B, 0, h, m, r);
  matmul(X1, f.L21, { transB: true, alpha: -1, beta: 1, out: B2 });
  const X2 = solveRightT(B2, f.t22);
  B2.dispose();
  const X = stackLike(B, m, f.n, "cholesky:L21");
  copyBlock(X1, 0, 0, X, 0, 0, m, h);
  copyBlock(X2, 0, 0, X, 0, h, m, r);
  X1.dispose();
  X2.dispose();
  return X;
}

/** The factor as one lower-triangular matrix (or stack), zeros above the diagonal. */
function factorMatrix(f: Factor): Tensor {
  if (f.kind === "leaf") return f.L.clone("cholesky:L");
  const L = stackLike(f.L21, f.n, f.n, "cholesky:L");
  // Every piece is copied once, straight to its place.
  const place = (g: Factor, o: number): void => {
    if (g.kind === "leaf") {
      copyBlock(g.L, 0, 0, L, o, o, g.n, g.n);
      return;
    }
    place(g.t11, o);
    copyBlock(g.L21, 0, 0, L, o + g.h, o, g.n - g.h, g.h);
    place(g.t22, o + g.h);
  };
  place(f, 0);
  return L;
}

/**
 * Factors up to this size are applied in {@link solveRightT} through their explicit inverse (one
 * GEMM; the inverse costs n³/3): narrower recursion costs more in dispatches and copies than the
 * multiply-adds it saves on the software adapter.
 */
const SOLVE_BLOCK = 256;

/**
 * L⁻¹ of a factor tree, kept in the tree (computed once): `[[L11⁻¹, 0], [−L22⁻¹·L21·L11⁻¹,
 * L22⁻¹]]`, recursively (two GEMMs per node, about n³/3 multiply-adds in all). Owned by the tree.
 */
function inverseOf(f: Factor): Tensor {
  if (f.kind === "leaf") return f.Li;
  if (f.Li) return f.Li;
  const P = inverseOf(f.t11), R = inverseOf(f.t22);
  const T = matmul(f.L21, P, { name: "cholesky:T" });
  const Li21 = matmul(R, T, { alpha: -1, name: "cholesky:Li21" });
  T.dispose();
  f.Li = assemble(P, Li21, R, "cholesky:Linv");
  Li21.dispose();
  return f.Li;
}

/**
 * `M⁻¹ = L⁻ᵀ·L⁻¹` from the factor tree of M, by blocks: `X22 = S⁻¹` (from the second sub-tree),
 * `T = L21·L11⁻¹`, `X21 = −X22·T`, `X11 = M11⁻¹ + Tᵀ·X22·T` (from the first sub-tree). About n³/2
 * multiply-adds, against n³/3 + n³/2 for L⁻¹ and then L⁻ᵀ·L⁻¹. Symmetric up to rounding in the
 * leading blocks (callers symmetrise).
 */
function inverseFromFactor(f: Factor, name: string): Tensor {
  if (f.kind === "leaf") return matmul(f.Li, f.Li, { transA: true, name });
  const h = f.h, m = f.n - h;
  const X22 = inverseFromFactor(f.t22, `${name}[22]`);
  const T = matmul(f.L21, inverseOf(f.t11), { name: `${name}:T` });
  const X21 = matmul(X22, T, { alpha: -1, name: `${name}[21]` });
  const X11 = inverseFromFactor(f.t11, `${name}[11]`);
  matmul(T, X21, { transA: true, alpha: -1, beta: 1, out: X11 });
  T.dispose();
  const X = stackLike(X11, f.n, f.n, name);
  copyBlock(X11, 0, 0, X, 0, 0, h, h);
  copyBlock(X21, 0, 0, X, h, 0, m, h);
  copyBlock(X21, 0, 0, X, 0, h, h, m, true);
  copyBlock(X22, 0, 0, X, h, h, m, m);
  for (const t of [X11, X21, X22]) t.dispose();
  return X;
}

/** L⁻¹ of a factor tree as a tensor of its own (the tree keeps its copy). */
function factorInverse(f: Factor): Tensor {
  return inverseOf(f).clone("cholesky:Linv");
}

/** L⁻¹ of the Cholesky factor of A (mode "chol") or of the lower triangle of A (mode "inv"). */
function inverseFactor(A: Tensor, status: Tensor, mode: "chol" | "inv"): Tensor {
  const f = mode === "chol" ? choleskyTree(A, 0, status) : lowerTree(A, status);
  try {
    return factorInverse(f);
  } finally {
    disposeFactor(f);
  }
}

/** The symmetric matrix (or stack) defined by the lower triangle of M (what the factorisation sees). */
function symmetricFromLower(M: Tensor, name: string): Tensor {
  const [b, n] = dims(M);
  const out = stackLike(M, n, n, name);
  M.rt.dispatch(
    M.rt.kernel("linalg_mirror_lower_stack", MIRROR_LOWER),
    [M.range(), out.range()],
    packParams(n, 0, 0, 0),
    [Math.ceil(n / 16), Math.ceil(n / 16), b],
  );
  return out;
}

/**
 * A damped copy of M or of each matrix s of a stack (σ_s = λ·mean diag M_s, stored in
 * status[4s + 2]); a plain copy when λ = 0.
 */
function dampedCopy(M: Tensor, damp: number, status: Tensor, name: string): Tensor {
  const [b, n] = dims(M);
  const Md = M.clone(`${name}:damped`);
  if (damp !== 0) {
    M.rt.dispatch(
      M.rt.kernel("linalg_damp_stack", DAMP),
      [Md.range(), status.range()],
      packParams(n, b, 0, 0, f32(damp), f32(0), f32(0), f32(0)),
      [b],
    );
  }
  return Md;
}

/**
 * Reads the status buffer and throws {@link NotPositiveDefiniteError} on the first matrix with a
 * failed pivot (naming the system when there are several).
 */
async function checkStatus(status: Tensor, name: string, damp: number): Promise<void> {
  const s = await status.readU32();
  const batch = s.length / 4;
  for (let z = 0; z < batch; z++) {
    if (s[4 * z] !== NO_FAILURE) {
      const value = new Float32Array(new Uint32Array([s[4 * z + 1]]).buffer)[0];
      const detail = batch > 1 ? ` (system ${z} of ${batch})` : "";
      throw new NotPositiveDefiniteError(name, s[4 * z], damp, value, detail);
    }
  }
}

/**
 * R = B − M·X − σ·X in double-f32 (B = I when `B` is null; σ from the status when damped), for
 * one system or a stack (M `[b, n, n]` symmetric, X and B `[b, n, k]`). With `factor`, M and X
 * are both Lᵀ of a Cholesky factor and R = B + σI − L·Lᵀ, its lower block triangle only.
 */
function residual(
  M: Tensor,
  X: Tensor,
  B: Tensor | null,
  status: Tensor,
  damped: boolean,
  factor = false,
): Tensor {
  const rt = M.rt;
  const [b, n] = dims(M), k = X.cols;
  const R = stackLike(X, n, k, "spd:residual");
  const shape = residualShape(k);
  const rowBlocks = Math.ceil(n / (shape.rows * shape.wy));
  rt.dispatch(
    rt.kernel(
      `linalg_residual_tri_r${shape.rows}c${4 * shape.cv}_wg${shape.wx}x${shape.wy}`,
      residualSource(shape),
    ),
    [M.range(), X.range(), (B ?? X).range(), status.range(), R.range()],
    packParams(
      n,
      k,
      B ? 0 : 1,
      damped ? (factor ? 2 : 1) : 0,
      f32(1),
      factor ? 1 : 0,
      factor ? rowOrder(rowBlocks) : 1,
      f32(0),
    ),
    [Math.ceil(k / (4 * shape.cv * shape.wx)), rowBlocks, b],
  );
  return R;
}

/**
 * Records stats = [‖C_s‖², ‖X_s‖² for each matrix s] (reductions of kernels/reduce.ts over
 * `[b, ·]` views; read once by the caller).
 */
function recordSquares(C: Tensor, X: Tensor, stats: Tensor): void {
  const b = stats.size / 2;
  for (const [t, at] of [[C, 0], [X, b]] as const) {
    const view = b === 1 ? t : t.reshape([b, t.size / b]);
    const sq = reduce(view, "sumsq", b === 1 ? "all" : "rows");
    stats.copyFrom(sq, 0, at, b);
    if (view !== t) view.dispose();
    sq.dispose();
  }
}

/** The largest relative correction ‖C_s‖/‖X_s‖ recorded by {@link recordSquares} (one read-back). */
async function readRatio(stats: Tensor): Promise<number> {
  const v = await stats.read();
  const b = v.length / 2;
  let worst = 0;
  for (let s = 0; s < b; s++) {
    const r = Math.sqrt(v[s] / (v[b + s] || 1));
    if (Number.isNaN(r)) return NaN;
    worst = Math.max(worst, r);
  }
  return worst;
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/**
 * Options of {@link cholesky}.
 *
 * @example Usage
 * ```ts ignore
 * import { cholesky, type CholeskyOptions } from "@llm-surgeon/toolkit";
 * const opts: CholeskyOptions = { name: "G of layers.3.fc2" }; // named in a failure
 * const L = await cholesky(G, opts);
 * ```
 */
export interface CholeskyOptions {
  /** Name used in error messages (default: the tensor's name). */
  name?: string;
}

/**
 * Cholesky factorisation `M = L·Lᵀ` of a symmetric positive definite `[n, n]` matrix (only the
 * lower triangle of `M` is read). Records every step in one submission and reads back one status
 * word.
 *
 * @param M the `[n, n]` SPD matrix
 * @param opts `name` for error messages
 * @returns the lower-triangular `[n, n]` factor (zeros above the diagonal)
 * @throws {NotPositiveDefiniteError} when a pivot is ≤ 0 or not finite
 *
 * @example Usage
 * ```ts ignore
 * const L = await cholesky(await Tensor.from([4, 2, 2, 5], [2, 2]));  // [[2, 0], [1, 2]]
 * ```
 */
export async function cholesky(M: Tensor, opts: CholeskyOptions = {}): Promise<Tensor> {
  if (M.shape.length === 2 && overBinding(M)) return await choleskyBlocks(M, opts);
  const name = opts.name ?? M.name;
  const n = assertSquare(M, "matrix", `cholesky(${name})`);
  if (n === 0) return Tensor.emptySync(M.rt, [0, 0], "f32", `${name}:L`);
  const status = newStatus(M.rt, name);
  try {
    const f = choleskyTree(M, 0, status);
    const L = factorMatrix(f);
    disposeFactor(f);
    try {
      await checkStatus(status, name, 0);
    } catch (e) {
      L.dispose();
      throw e;
    }
    return L;
  } finally {
    status.dispose();
  }
}

/**
 * Options of {@link triangularSolve}.
 *
 * @example Usage
 * ```ts ignore
 * import { cholesky, Tensor, triangularSolve, type TriangularSolveOptions } from "@llm-surgeon/toolkit";
 * const M = await Tensor.from([4, 2, 2, 3], [2, 2]);
 * const L = await cholesky(M);
 * const b = await Tensor.from([2, 1]);
 * // M⁻¹·b as two triangular solves: L·y = b, then Lᵀ·x = y.
 * const y = triangularSolve(L, b, { lower: true });
 * const back: TriangularSolveOptions = { lower: true, transpose: true };
 * console.log(await triangularSolve(L, y, back).read()); // ≈ [0.5, 0]
 * ```
 */
export interface TriangularSolveOptions {
  /** Whether the triangle is lower (`true`) or upper (`false`); the other triangle is ignored. */
  lower: boolean;
  /** Solve with the transpose of the triangle. Default false. */
  transpose?: boolean;
  /** `"left"`: op(L)·X = B (default); `"right"`: X·op(L) = B. */
  side?: "left" | "right";
}

/**
 * Solves `op(L)·X = B` (left) or `X·op(L) = B` (right) for a triangular `L`, where `op` is the
 * identity or the transpose. Recorded, no read-back. The triangle is inverted recursively on the
 * GPU (leaves by substitution, the rest by GEMMs) and applied with one GEMM. A zero on the
 * diagonal gives non-finite values (no check: nothing is read back).
 *
 * @param L `[n, n]` triangular matrix
 * @param B `[n, k]` (left) or `[k, n]` (right) right-hand sides; a 1-D `[n]` is one column (left)
 * @param opts which triangle, transpose, side
 * @returns X, same shape as B
 *
 * @example Usage
 * ```ts ignore
 * const L = await cholesky(M);
 * const Y = triangularSolve(L, B, { lower: true });                    // L·Y = B
 * const X = triangularSolve(L, Y, { lower: true, transpose: true });   // Lᵀ·X = Y
 * ```
 */
export function triangularSolve(L: Tensor, B: Tensor, opts: TriangularSolveOptions): Tensor {
  if (L.shape.length === 2 && overBinding(L)) return triangularSolveBlocks(L, B, opts);
  const side = opts.side ?? "left";
  const op = `triangularSolve(${L.name}, ${B.name})`;
  const n = assertSquare(L, "triangle", op);
  const vector = B.shape.length === 1;
  if (vector && side !== "left") throw new GpuError(op, "a 1-D right-hand side needs side 'left'");
  const B2 = vector ? B.reshape([B.size, 1]) : B;
  assertMatrix(B2, "right-hand side", op);
  const dim = side === "left" ? B2.shape[0] : B2.shape[1];
  if (dim !== n) {
    throw new GpuError(
      op,
      `right-hand side [${B.shape}] does not match the ${n}×${n} triangle (${side})`,
    );
  }
  // Work with a lower triangle Lw: an upper U is handled as (Uᵀ)ᵀ.
  const t = (opts.transpose ?? false) !== !opts.lower;
  let X: Tensor;
  if (n === 0 || B2.size === 0) {
    X = Tensor.emptySync(L.rt, B2.shape, "f32", `${B.name}:solved`);
  } else {
    const Lw = opts.lower ? L : transposed(L, `${L.name}ᵀ`);
    const status = newStatus(L.rt, L.name);
    const Li = inverseFactor(Lw, status, "inv");
    status.dispose();
    if (Lw !== L) Lw.dispose();
    X = side === "left"
      ? matmul(Li, B2, { transA: t, name: `${B.name}:solved` })
      : matmul(B2, Li, { transB: t, name: `${B.name}:solved` });
    Li.dispose();
  }
  if (vector) {
    B2.dispose();
    const x = X.reshape([n], X.name);
    X.dispose();
    return x;
  }
  return X;
}

/**
 * Options of {@link spdInverse}.
 *
 * @example Usage
 * ```ts ignore
 * import { spdInverse, type SpdInverseOptions } from "@llm-surgeon/toolkit";
 * // (A + 0.01·mean(diag A)·I)⁻¹, raising the damping if a pivot fails.
 * const opts: SpdInverseOptions = { damp: 0.01, retryDamping: true, name: "A of fc1" };
 * const inv = await spdInverse(A, opts);
 * // Refined until the estimated relative error is below 1e-7 (Newton steps after the factor
 * // correction; the default 2e-6 usually needs none up to κ ≈ 1e3).
 * const exact = await spdInverse(A, { damp: 0.01, tol: 1e-7 });
 * ```
 */
export interface SpdInverseOptions {
  /** Relative damping λ: invert `M + λ·mean(diag M)·I` (ALGORITHM.md §4.1). Default 0. */
  damp?: number;
  /** Name used in errors and warnings (default: the tensor's name). */
  name?: string;
  /** On a failed pivot, retry with 10× larger damping (up to 4 times) and warn. Default false. */
  retryDamping?: boolean;
  /**
   * Most Newton refinement steps after the factor correction (default 8; 0 = plain f32
   * Cholesky inverse, no correction either).
   */
  maxRefine?: number;
  /**
   * Relative Frobenius error to refine to, as estimated from random probes (default 2e-6). The
   * f32 result itself carries ≈ 3e-8, so targets below ≈ 1e-7 end in a "stalled" warning.
   */
  tol?: number;
}

/** Gaussian probe columns of {@link estimateError} (a fixed seed: the result is reproducible). */
const PROBES = 16;

/** A `[n, k]` matrix of standard normal numbers from a fixed seed (Box–Muller on an LCG). */
function probeColumns(rt: Runtime, n: number, k: number): Tensor {
  const v = new Float32Array(n * k);
  let s = 0x9e3779b9;
  const uniform = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 4294967296;
  };
  for (let i = 0; i < v.length; i++) {
    v[i] = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  }
  return Tensor.fromSync(rt, v, [n, k], "f32", "spdInverse:probes");
}

/**
 * Estimates the relative error ‖M_d⁻¹ − X‖_F / ‖X‖_F from {@link PROBES} Gaussian columns V:
 * `E·V ≈ X·(V − M_d·X·V)` with the residual in double-f32, and E[‖E·v‖²] = ‖E‖²_F. n²·PROBES
 * work and one read-back. Measured within 2 % of the true error (n = 512…2048, errors 1e-6…1e-4).
 */
async function estimateError(
  M: Tensor,
  X: Tensor,
  status: Tensor,
  damped: boolean,
  stats: Tensor,
): Promise<number> {
  const V = probeColumns(X.rt, X.rows, PROBES);
  const W = matmul(X, V);
  const R = residual(M, W, V, status, damped);
  const EV = matmul(X, R);
  recordSquares(EV, W, stats);
  for (const t of [V, W, R, EV]) t.dispose();
  return await readRatio(stats);
}

/**
 * Refines an f32 inverse `X` of M_d = L·Lᵀ + Δ: first the factor correction
 * `X ← X − X·Δ·X` with `Δ = M + σI − L·Lᵀ` in double-f32 (the lower triangle of a triangular
 * product: n³/6 compensated terms, against n³ for a Newton residual), which removes the error of
 * the factorisation, the largest part of the f32 error (measured 5e-5 → 1.3e-6 at κ ≈ 1e3);
 * then, if the estimated error ({@link estimateError}) is above `tol`, Newton steps.
 */
async function refineInverse(
  M: Tensor,
  X: Tensor,
  Lt: Tensor,
  status: Tensor,
  damped: boolean,
  maxSteps: number,
  tol: number,
  name: string,
): Promise<void> {
  const D = residual(Lt, Lt, M, status, damped, true);
  symmetrize(D, "lower");
  const XD = matmul(X, D, { name: `${name}:XΔ` });
  D.dispose();
  // X·Δ·X is symmetric: its lower triangle, subtracted, then mirrored.
  const C = lowerProduct(XD, X, `${name}:XΔX`);
  XD.dispose();
  map("o - a", [C], [], { out: X });
  C.dispose();
  symmetrize(X, "lower");
  const stats = Tensor.emptySync(X.rt, [2], "f32", `${name}:stats`);
  let err: number;
  try {
    err = await estimateError(M, X, status, damped, stats);
  } finally {
    stats.dispose();
  }
  if (!Number.isFinite(err)) {
    throw new GpuError(`spdInverse(${name})`, "refinement produced a non-finite correction");
  }
  if (err > tol) await newtonRefine(M, X, status, damped, maxSteps, tol, name);
}

/**
 * Inverse of a damped symmetric positive definite matrix, `(M + λ·mean(diag M)·I)⁻¹`
 * (ALGORITHM.md §4.1), refined far beyond f32 Cholesky: to a relative Frobenius error of about
 * `tol` (default 2e-6, estimated from random probes), down to ≈ 3e-8 on request.
 *
 * Steps: damped copy, recursive Cholesky (one read-back: the status word), X = L⁻ᵀL⁻¹ by blocks
 * from the factor tree; then the factor correction `X ← X − X·Δ·X` with `Δ = M_d − L·Lᵀ` in
 * double-f32 (the error of the factorisation, most of the f32 error: κ ≈ 1e3 goes from 5e-5 to
 * 1.3e-6), an error estimate from 16 probe columns (one read-back); and only if that is above
 * `tol`, Newton steps `X ← X + X·(I − M_d·X)` with the residual in double-f32 and the lower block
 * triangle of the symmetric correction, each followed by one small read-back of the relative
 * correction ρ, until ρ ≤ √(tol/2) (the error left is ≈ 2ρ²). Typical: no Newton step for
 * κ ≲ 1e3 at the default `tol`, one for κ ≲ 1e4, two to three near κ = 1e6.
 *
 * @param M `[n, n]` symmetric positive semi-definite matrix
 * @param opts damping, name, retry policy
 * @returns the `[n, n]` inverse
 * @throws {NotPositiveDefiniteError} when the damped matrix is not positive definite
 *
 * @example Usage
 * ```ts ignore
 * const M = await Tensor.from([2, 1, 1, 4], [2, 2]);
 * const X = await spdInverse(M, { damp: 0.1 });  // [[0.48369, -0.112486], [-0.112486, 0.258718]]
 * ```
 */
export async function spdInverse(M: Tensor, opts: SpdInverseOptions = {}): Promise<Tensor> {
  if (M.shape.length === 2 && overBinding(M)) return await spdInverseBlocks(M, opts);
  const name = opts.name ?? M.name;
  const n = assertSquare(M, "matrix", `spdInverse(${name})`);
  if (n === 0) return Tensor.emptySync(M.rt, [0, 0], "f32", `${name}:inverse`);
  const maxRefine = opts.maxRefine ?? 8;
  const tol = inverseTol(`spdInverse(${name})`, opts.tol);
  // The symmetric matrix of M's lower triangle: factorised (damped) and used in the residual.
  const Ms = symmetricFromLower(M, `${name}:symmetric`);
  try {
    const { value: { X, Lt, status }, damp } = await withRetryDamping(
      `spdInverse(${name})`,
      opts.damp ?? 0,
      opts.retryDamping,
      (e) => e instanceof NotPositiveDefiniteError,
      async (damp) => {
        const status = newStatus(M.rt, name);
        const Md = dampedCopy(Ms, damp, status, name);
        let X: Tensor | null = null;
        let Lt: Tensor | null = null;
        try {
          const f = choleskyTree(Md, 0, status);
          X = inverseFromFactor(f, `${name}:inverse`);
          if (maxRefine > 0) {
            const L = factorMatrix(f);
            Lt = transposed(L, `${name}:Lᵀ`);
            L.dispose();
          }
          disposeFactor(f);
          Md.dispose();
          await checkStatus(status, name, damp);
          return { X, Lt, status };
        } catch (e) {
          X?.dispose();
          Lt?.dispose();
          Md.dispose();
          status.dispose();
          throw e;
        }
      },
    );
    try {
      if (Lt) await refineInverse(Ms, X, Lt, status, damp !== 0, maxRefine, tol, name);
    } catch (e) {
      X.dispose();
      throw e;
    } finally {
      Lt?.dispose();
      status.dispose();
    }
    symmetrize(X, "average");
    return X;
  } finally {
    Ms.dispose();
  }
}

/**
 * Newton steps X ← X + X·(I − M_d·X) until the relative correction ρ is below √(tol/2): ρ
 * measures the error before the step, and the error after it was measured at ≈ 2ρ² (n = 512,
 * κ = 1e3…1e6), down to the f32 floor (≈ 3e-8).
 */
async function newtonRefine(
  M: Tensor,
  X: Tensor,
  status: Tensor,
  damped: boolean,
  maxSteps: number,
  tol: number,
  name: string,
): Promise<void> {
  if (maxSteps <= 0) return;
  const stats = Tensor.emptySync(M.rt, [2], "f32", `${name}:stats`);
  try {
    await refine(`spdInverse(${name})`, maxSteps, newtonRule(tol), async () => {
      const R = residual(M, X, null, status, damped);
      // X·R = X − X·M_d·X is symmetric: only its lower triangle is computed and added,
      // then mirrored. ‖C‖² then covers about half of the correction: counted twice in ρ.
      const C = lowerProduct(X, R, `${name}:correction`);
      R.dispose();
      recordSquares(C, X, stats);
      map("o + a", [C], [], { out: X });
      C.dispose();
      symmetrize(X, "lower");
      return Math.SQRT2 * await readRatio(stats);
    });
  } finally {
    stats.dispose();
  }
}

/**
 * Options of {@link spdSolve}.
 *
 * @example Usage
 * ```ts ignore
 * import { spdSolve, type SpdSolveOptions, Tensor } from "@llm-surgeon/toolkit";
 * const M = await Tensor.from([4, 2, 2, 3], [2, 2]);
 * const b = await Tensor.from([2, 1]);
 * const opts: SpdSolveOptions = { damp: 0, maxRefine: 4 };
 * console.log(await (await spdSolve(M, b, opts)).read()); // ≈ [0.5, 0]
 * ```
 */
export interface SpdSolveOptions {
  /** Relative damping λ: solve with `M + λ·mean(diag M)·I`. Default 0. */
  damp?: number;
  /** Name used in errors (default: the tensor's name). */
  name?: string;
  /** Most refinement steps (default 12). */
  maxRefine?: number;
}

/**
 * Solves `M_d·X = B` for a damped SPD `M_d = M + λ·mean(diag M)·I`, with float64-like accuracy:
 * Cholesky (one status read-back), then iterative refinement with the residual `B − M_d·X` in
 * double-f32 (each step one small read-back of the correction size).
 *
 * @param M `[n, n]` symmetric positive definite matrix
 * @param B `[n, k]` right-hand sides, or `[n]`
 * @param opts damping, name
 * @returns X, same shape as B
 * @throws {NotPositiveDefiniteError} when the damped matrix is not positive definite
 *
 * @example Usage
 * ```ts ignore
 * const x = await spdSolve(M, b, { damp: 0.01 });
 * ```
 */
export async function spdSolve(M: Tensor, B: Tensor, opts: SpdSolveOptions = {}): Promise<Tensor> {
  if (M.shape.length === 2 && (overBinding(M) || overBinding(B))) {
    return await spdSolveBlocks(M, B, opts);
  }
  const name = opts.name ?? M.name;
  const op = `spdSolve(${name}, ${B.name})`;
  const n = assertSquare(M, "matrix", op);
  const vector = B.shape.length === 1;
  const B2 = vector ? B.reshape([B.size, 1]) : B;
  try {
    assertMatrix(B2, "right-hand side", op);
    if (B2.shape[0] !== n) {
      throw new GpuError(op, `right-hand side [${B.shape}] does not match the ${n}×${n} matrix`);
    }
    const damp = opts.damp ?? 0;
    const X = await solveRefined(M, B2, damp, opts.maxRefine ?? 12, name, `spdSolve(${name})`);
    if (!vector) return X;
    const x = X.reshape([n], X.name);
    X.dispose();
    return x;
  } finally {
    if (vector) B2.dispose();
  }
}

/**
 * Solves `M_d·X = B` for one system (M `[n, n]`, B `[n, k]`) or a stack (M `[b, n, n]`, B
 * `[b, n, k]`): blocked Cholesky giving L⁻¹ (batched GEMMs), X = L⁻ᵀ·L⁻¹·B, then refinement
 * with the double-f32 residual until every system's relative correction is below SOLVE_TOL
 * (one small read-back per step). `op` names the caller in errors.
 */
async function solveRefined(
  M: Tensor,
  B: Tensor,
  damp: number,
  maxSteps: number,
  name: string,
  op: string,
): Promise<Tensor> {
  const rt = M.rt;
  const [b, n] = dims(M);
  if (n === 0 || B.size === 0) return Tensor.emptySync(rt, B.shape, "f32", `${name}:solution`);
  const status = newStatus(rt, name, b);
  const stats = Tensor.emptySync(rt, [2 * b], "f32", `${name}:stats`);
  let Li: Tensor | null = null;
  const Ms = symmetricFromLower(M, `${name}:symmetric`);
  try {
    const Md = dampedCopy(Ms, damp, status, name);
    try {
      Li = inverseFactor(Md, status, "chol");
    } finally {
      Md.dispose();
    }
    await checkStatus(status, name, damp);
    // Few right-hand sides: narrow register blocks (the default 16-wide ones would be idle).
    const config = rt.adapter.isSoftware && B.cols <= 4 ? { rows: 16, cols: 4 } : undefined;
    const apply = (R: Tensor): Tensor => {
      const Y = matmul(Li!, R, { config });
      const D = matmul(Li!, Y, { transA: true, config });
      Y.dispose();
      return D;
    };
    const X = apply(B);
    try {
      await refine(op, maxSteps, SOLVE_RULE, async () => {
        const R = residual(Ms, X, B, status, damp !== 0);
        const D = apply(R);
        R.dispose();
        recordSquares(D, X, stats);
        map("o + a", [D], [], { out: X });
        D.dispose();
        return await readRatio(stats);
      });
    } catch (e) {
      X.dispose();
      throw e;
    }
    return X;
  } finally {
    Li?.dispose();
    Ms.dispose();
    status.dispose();
    stats.dispose();
  }
}

/**
 * One workgroup per system: damped Cholesky in scratch W, substitution, then iterative
 * refinement with the double-f32 residual until the correction is below f32 rounding.
 * status[2s] = failing pivot + 1 (0: fine), status[2s + 1] = its value bits.
 */
function batchedSource(wg: number): string {
  return `
@group(0) @binding(0) var<storage, read> Ms: array<f32>;
@group(0) @binding(1) var<storage, read> Bs: array<f32>;
@group(0) @binding(2) var<storage, read_write> W: array<f32>;
@group(0) @binding(3) var<storage, read_write> X: array<f32>;
@group(0) @binding(4) var<storage, read_write> Rr: array<f32>;
@group(0) @binding(5) var<storage, read_write> status: array<u32>;
struct P { n: u32, k: u32, batch: u32, maxIt: u32, lambda: f32, one: f32, q0: f32, q1: f32 };
@group(0) @binding(6) var<uniform> p: P;
${COMPENSATED}
var<workgroup> sigma: f32;
var<workgroup> piv: f32;
var<workgroup> redD: array<f32, ${wg}>;
var<workgroup> redX: array<f32, ${wg}>;
var<workgroup> done: u32;

// Solves L·Lᵀ·Y = Y in place for the n×k block of Rr at off (L at wo): column-oriented
// substitution, invocations over rows (and right-hand sides), two barriers per step.
fn cholSolve(wo: u32, off: u32, t: u32) {
  let n = p.n; let k = p.k;
  for (var j = 0u; j < n; j++) {
    for (var c = t; c < k; c += ${wg}u) { Rr[off + j * k + c] = Rr[off + j * k + c] / W[wo + j * n + j]; }
    storageBarrier();
    for (var idx = t; idx < (n - j - 1u) * k; idx += ${wg}u) {
      let i = j + 1u + idx / k; let c = idx % k;
      Rr[off + i * k + c] -= W[wo + j * n + i] * Rr[off + j * k + c];
    }
    storageBarrier();
  }
  for (var jj = 0u; jj < n; jj++) {
    let j = n - 1u - jj;
    for (var c = t; c < k; c += ${wg}u) { Rr[off + j * k + c] = Rr[off + j * k + c] / W[wo + j * n + j]; }
    storageBarrier();
    for (var idx = t; idx < j * k; idx += ${wg}u) {
      let i = idx / k; let c = idx % k;
      Rr[off + i * k + c] -= W[wo + i * n + j] * Rr[off + j * k + c];
    }
    storageBarrier();
  }
}

@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nw: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let s = wid.y * nw.x + wid.x;
  if (s >= p.batch) { return; }
  let n = p.n; let k = p.k; let one = p.one;
  let mo = s * n * n;
  let bo = s * n * k;
  if (t == 0u) {
    var d = 0.0;
    for (var i = 0u; i < n; i++) { d += Ms[mo + i * n + i]; }
    sigma = p.lambda * d / f32(n);
  }
  workgroupBarrier();
  let sg = sigma;
  // W holds Lᵀ (row j of W = column j of L), so that invocations over rows i read contiguously.
  for (var idx = t; idx < n * n; idx += ${wg}u) {
    let j = idx / n; let i = idx % n;
    W[mo + idx] = select(0.0, Ms[mo + i * n + j] + select(0.0, sg, i == j), j <= i);
  }
  storageBarrier();
  // Left-looking Cholesky: column j needs only finished columns; every invocation's dot
  // product has the same length j, which keeps the SIMD lanes busy.
  for (var j = 0u; j < n; j++) {
    for (var i = j + t; i < n; i += ${wg}u) {
      var v = W[mo + j * n + i];
      for (var q = 0u; q < j; q++) { v -= W[mo + q * n + i] * W[mo + q * n + j]; }
      W[mo + j * n + i] = v;
    }
    storageBarrier();
    if (t == 0u) {
      var d = W[mo + j * n + j];
      if (!(d > 0.0) || d > 3.0e38) {
        if (status[2u * s] == 0u) { status[2u * s] = j + 1u; status[2u * s + 1u] = bitcast<u32>(d); }
        d = 1.0;
      }
      let r = sqrt(d);
      W[mo + j * n + j] = r;
      piv = r;
    }
    storageBarrier();
    workgroupBarrier();
    let pv = piv;
    for (var i = j + 1u + t; i < n; i += ${wg}u) { W[mo + j * n + i] = W[mo + j * n + i] / pv; }
    storageBarrier();
  }
  // First solution: X = (L·Lᵀ)⁻¹·B, via the scratch Rr.
  for (var idx = t; idx < n * k; idx += ${wg}u) { Rr[bo + idx] = Bs[bo + idx]; }
  storageBarrier();
  cholSolve(mo, bo, t);
  for (var idx = t; idx < n * k; idx += ${wg}u) { X[bo + idx] = Rr[bo + idx]; }
  storageBarrier();
  for (var it = 0u; it < p.maxIt; it++) {
    // Residual B − M·X − σ·X in double-f32.
    let ssg = split2(-sg, one);
    for (var idx = t; idx < n * k; idx += ${wg}u) {
      let i = idx / k; let c = idx % k;
      var hi = Bs[bo + idx];
      var lo = 0.0;
      for (var j = 0u; j < n; j++) {
        let a = -Ms[mo + max(i, j) * n + min(i, j)];
        let x = X[bo + j * k + c];
        let q = a * x;
        let e = prodErr(q, split2(a, one), split2(x, one));
        let ts = twoSum(hi, q, one);
        hi = ts.x;
        lo += ts.y + e;
      }
      let x = X[bo + idx];
      let q = -sg * x;
      let e = prodErr(q, ssg, split2(x, one));
      let ts = twoSum(hi, q, one);
      Rr[bo + idx] = ts.x + (lo + ts.y + e);
    }
    storageBarrier();
    cholSolve(mo, bo, t);
    var md = 0.0; var mx = 0.0;
    for (var idx = t; idx < n * k; idx += ${wg}u) {
      let d = Rr[bo + idx];
      let x = X[bo + idx] + d;
      X[bo + idx] = x;
      md = max(md, abs(d));
      mx = max(mx, abs(x));
    }
    redD[t] = md; redX[t] = mx;
    workgroupBarrier();
    for (var w = ${wg / 2}u; w > 0u; w = w / 2u) {
      if (t < w) { redD[t] = max(redD[t], redD[t + w]); redX[t] = max(redX[t], redX[t + w]); }
      workgroupBarrier();
    }
    if (t == 0u) { done = select(0u, 1u, !(redD[0] > 1e-7 * redX[0])); }
    storageBarrier();
    if (workgroupUniformLoad(&done) == 1u) { break; }
  }
}`;
}

/**
 * Options of {@link batchedSpdSolve}.
 *
 * @example Usage
 * ```ts ignore
 * import { batchedSpdSolve, type BatchedSpdSolveOptions, Tensor } from "@llm-surgeon/toolkit";
 * // Two 2×2 systems, each with one right-hand side.
 * const Ms = await Tensor.from([4, 2, 2, 3, 2, 0, 0, 2], [2, 2, 2]);
 * const Bs = await Tensor.from([2, 1, 2, 4], [2, 2]);
 * const opts: BatchedSpdSolveOptions = { damp: 0, name: "row blocks" };
 * console.log(await (await batchedSpdSolve(Ms, Bs, opts)).read()); // ≈ [0.5, 0, 1, 2]
 * ```
 */
export interface BatchedSpdSolveOptions {
  /** Relative damping λ per system: `M_s + λ·mean(diag M_s)·I`. Default 0. */
  damp?: number;
  /** Name used in errors (default: the tensor's name). */
  name?: string;
  /** Most refinement steps per system (default 10; 0 = plain f32 Cholesky solve). */
  maxRefine?: number;
}

/**
 * Solves many independent SPD systems `M_s·X_s = B_s` at once. Small systems: one dispatch, one
 * workgroup per system (damped Cholesky, substitution, and refinement with a double-f32 residual,
 * stopping per system when the correction reaches f32 rounding), one status read-back. Systems
 * too large for one workgroup (on llvmpipe, whose loop limit allows about n ≤ 160): all systems
 * through the stacked blocked Cholesky (batched GEMMs), then batched refinement with one small
 * read-back per step until every system's correction is below 1e-7.
 *
 * @param Ms `[b, n, n]` SPD matrices
 * @param Bs `[b, n, k]` right-hand sides (or `[b, n]` for one column each)
 * @param opts damping, name, refinement limit
 * @returns X, same shape as Bs
 * @throws {NotPositiveDefiniteError} naming the first failing system and its pivot
 *
 * @example Usage
 * ```ts ignore
 * const X = await batchedSpdSolve(Ms, Bs, { damp: 0.01 });  // Ms [64, 256, 256], Bs [64, 256, 8]
 * ```
 */
export async function batchedSpdSolve(
  Ms: Tensor,
  Bs: Tensor,
  opts: BatchedSpdSolveOptions = {},
): Promise<Tensor> {
  const name = opts.name ?? Ms.name;
  const op = `batchedSpdSolve(${name}, ${Bs.name})`;
  if (Ms.dtype !== "f32" || Bs.dtype !== "f32") throw new GpuError(op, "expects f32 tensors");
  if (Ms.shape.length !== 3 || Ms.shape[1] !== Ms.shape[2]) {
    throw new GpuError(op, `matrices ${Ms} must be [b, n, n], got [${Ms.shape}]`);
  }
  const [b, n] = Ms.shape;
  const k = Bs.shape.length === 2 ? 1 : Bs.shape[2];
  if (
    (Bs.shape.length !== 2 && Bs.shape.length !== 3) || Bs.shape[0] !== b || Bs.shape[1] !== n
  ) {
    throw new GpuError(
      op,
      `right-hand sides [${Bs.shape}] must be [${b}, ${n}, k] or [${b}, ${n}]`,
    );
  }
  if (overBinding(Ms) || overBinding(Bs)) return await batchedInGroups(Ms, Bs, opts, name);
  const rt = Ms.rt;
  const X = Tensor.emptySync(rt, Bs.shape, "f32", `${name}:solution`);
  if (b === 0 || n === 0 || k === 0) return X;
  const damp = opts.damp ?? 0;
  const maxRefine = opts.maxRefine ?? 10;
  const wg = batchedWgSize(rt, n, k, maxRefine);
  if (wg === null) {
    // Too large for one workgroup per system on this adapter: all systems at once through the
    // blocked path (batched GEMMs, one leaf workgroup per system and leaf).
    X.dispose();
    const B3 = Bs.shape.length === 2 ? Bs.reshape([b, n, 1]) : Bs;
    try {
      const Y = await solveRefined(Ms, B3, damp, maxRefine, name, op);
      if (B3 === Bs) return Y;
      const y = Y.reshape(Bs.shape, Y.name);
      Y.dispose();
      return y;
    } finally {
      if (B3 !== Bs) B3.dispose();
    }
  }
  const W = Tensor.emptySync(rt, [b, n, n], "f32", `${name}:factors`);
  const R = Tensor.emptySync(rt, [b, n, k], "f32", `${name}:residuals`);
  const status = Tensor.fromSync(rt, new Uint32Array(2 * b), [2 * b], "u32", `${name}:status`);
  try {
    const groups = b <= 65535 ? [b, 1] : [65535, Math.ceil(b / 65535)];
    rt.dispatch(
      rt.kernel(`linalg_batched_spd_solve_wg${wg}`, batchedSource(wg)),
      [Ms.range(), Bs.range(), W.range(), X.range(), R.range(), status.range()],
      packParams(n, k, b, maxRefine, f32(damp), f32(1), f32(0), f32(0)),
      [groups[0], groups[1]],
    );
    const st = await status.readU32();
    for (let s = 0; s < b; s++) {
      if (st[2 * s] !== 0) {
        X.dispose();
        const value = new Float32Array(new Uint32Array([st[2 * s + 1]]).buffer)[0];
        throw new NotPositiveDefiniteError(
          name,
          st[2 * s] - 1,
          damp,
          value,
          ` (system ${s} of ${b})`,
          s,
        );
      }
    }
    return X;
  } finally {
    W.dispose();
    R.dispose();
    status.dispose();
  }
}

/**
 * {@link batchedSpdSolve} for batches larger than one storage binding: groups of systems that
 * fit are copied out (buffer copies, no binding limit) and solved together; a system that alone
 * exceeds one binding goes through {@link spdSolve} (and so the blocked path). A failing system
 * is reported with its index in the whole batch.
 */
async function batchedInGroups(
  Ms: Tensor,
  Bs: Tensor,
  opts: BatchedSpdSolveOptions,
  name: string,
): Promise<Tensor> {
  const rt = Ms.rt;
  const [b, n] = Ms.shape;
  const k = Bs.shape.length === 2 ? 1 : Bs.shape[2];
  const X = Tensor.emptySync(rt, Bs.shape, "f32", `${name}:solution`);
  // Systems per group; 0 when one system alone exceeds a binding (then one at a time, 2-D).
  const per = Math.floor(rt.maxBinding / 4 / Math.max(1, n * n, n * k));
  const step = Math.max(1, per);
  try {
    for (let s0 = 0; s0 < b; s0 += step) {
      const cnt = Math.min(step, b - s0);
      const Mg = Tensor.emptySync(rt, per < 1 ? [n, n] : [cnt, n, n], "f32");
      const Bg = Tensor.emptySync(rt, per < 1 ? [n, k] : [cnt, n, k], "f32");
      let Xg: Tensor | null = null;
      try {
        Mg.copyFrom(Ms, s0 * n * n, 0, cnt * n * n);
        Bg.copyFrom(Bs, s0 * n * k, 0, cnt * n * k);
        Xg = per < 1
          ? await spdSolve(Mg, Bg, { damp: opts.damp, maxRefine: opts.maxRefine, name })
          : await batchedSpdSolve(Mg, Bg, { ...opts, name });
        X.copyFrom(Xg, 0, s0 * n * k, cnt * n * k);
      } catch (e) {
        if (e instanceof NotPositiveDefiniteError) {
          const s = s0 + (e.system ?? 0);
          throw new NotPositiveDefiniteError(
            name,
            e.pivot,
            e.damp,
            e.value,
            ` (system ${s} of ${b})`,
            s,
          );
        }
        throw e;
      } finally {
        Mg.dispose();
        Bg.dispose();
        Xg?.dispose();
      }
    }
    return X;
  } catch (e) {
    X.dispose();
    throw e;
  }
}
