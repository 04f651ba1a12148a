/**
 * Linear algebra on matrices larger than one storage binding (`rt.maxBinding`, 128 MiB on the
 * software adapter: n > 5792 in f32): Cholesky, triangular solves, damped SPD solves and the
 * damped SPD inverse, with the signatures and semantics of their counterparts in `linalg.ts`.
 *
 * How it works: every function splits its matrix once into 2×2 blocks at `h` (a multiple of 64
 * near n/2) and hands the blocks to the `linalg.ts` originals, which fit one binding, or to itself
 * again when a block is still too large. The blocks are cut out and put back with
 * {@link submatrix} / {@link scatterSubmatrix} (or plain buffer copies for whole rows), and the
 * coupling terms are {@link matmul}s, all of which work on tensors of any size.
 *
 * - {@link choleskyBlocks}: `L11 = chol(M11)`, `L21 = M21·L11⁻ᵀ`, `L22 = chol(M22 − L21·L21ᵀ)`.
 * - {@link triangularSolveBlocks}: block forward or back substitution, one GEMM between the two
 *   diagonal-block solves.
 * - {@link spdSolveBlocks} and {@link spdInverseBlocks}: the Schur complement of the leading block.
 *   With `A = M11 + σI`, `C = M21` and `S = M22 + σI − C·A⁻¹·Cᵀ`:
 *   solve: `[Y, w] = A⁻¹·[Cᵀ, B1]` (one refined `spdSolve`), `x2 = S⁻¹·(B2 − C·w)` (refined),
 *   `x1 = w − Y·x2`; inverse: `A⁻¹` (refined `spdInverse`), `Y = A⁻¹·Cᵀ` (refined `spdSolve`),
 *   `S⁻¹` (refined),
 *   `X = [[A⁻¹ + Y·S⁻¹·Yᵀ, −Y·S⁻¹], [−S⁻¹·Yᵀ, S⁻¹]]`.
 *
 * Damping: the shift `σ = λ·mean(diag M)` is taken over the whole matrix (one read-back of the
 * diagonal) and handed to each sub-problem as its own relative damping `σ / mean(diag block)`
 * (one more read-back for the diagonal of S), so the originals keep σ out of the f32 matrix in
 * their refinement residuals as before.
 *
 * Accuracy: the Schur complement `S = M22 − C·Y` is an f32 product, so the first solution is only
 * as accurate as a plain f32 solve or inverse (≈ κ·2⁻²⁴). The solve and the inverse then refine
 * it (iterative refinement; Newton steps) with a residual `B − (M + σI)·X` in extended precision
 * built from public f32 kernels only, after Ozaki's error-free splitting: the symmetric matrix and
 * X are cut column by column into slices of β = ⌊(24 − log₂ n)/2⌋ bits on per-column power-of-two
 * grids (β = 7 at n = 300, 5 at n = 11,008), so that a GEMM of one slice of each sums integers
 * below 2²⁴ and is exact; the slices cover ≥ 15 bits, the rests are multiplied by plain f32 GEMMs
 * (≈ 2⁻¹⁵ of the product, so their rounding is ≈ 2⁻³⁹ of it), σ·X is an exact Dekker product, and
 * everything is summed in double-f32 by element-wise two-sums. Measured: residual error 2⁻³⁹…2⁻⁴³
 * of |M|·|X| (n = 129, 300); relative Frobenius error of the solve and the inverse vs float64
 * ≈ 3e-8 at κ = 10, 1e3 and 1e6 (n = 300, two levels of blocking; n = 1024, κ ≈ 400), as good as
 * the single-binding originals. With fewer bits per slice at larger n the error at κ = 1e6 is
 * expected to rise to ≈ 1e-6 (see `sliceCount`); κ ≤ 1e4 stays near 3e-8.
 *
 * Cost: one residual takes 6–11 GEMMs of the size of `M·X` (n ≤ 16,384) and ≈ 2 element-wise
 * passes per GEMM, and memory for ≈ 10 more matrices of M's size (slices of M and of X). For the
 * inverse (X is n×n) a Newton step is ≈ 12 n³ GEMMs: at n = 11,008 about half an hour on the
 * software adapter (≈ 15 GFLOP/s), seconds on a GPU; `maxRefine: 0` skips it and keeps the
 * κ·2⁻²⁴ accuracy. Measured here at n = 1024 (two levels of blocking under a 512 KiB limit, vs the
 * single-binding originals): Cholesky 0.22 s (0.08 s), solve with 4 right-hand sides 1.8 s
 * (0.3 s), inverse 3.6 s (0.6 s), the same accuracy.
 *
 * Read-backs: `choleskyBlocks` one status word per block factored by the original (2 per
 * level); `spdSolveBlocks`/`spdInverseBlocks` those of their sub-calls, the diagonals when damped,
 * and one relative-correction ratio per refinement step (typically 1–2 steps). The sub-solves of
 * each refinement step of `spdSolveBlocks` factor the diagonal blocks again (a Cholesky of n/2
 * twice per step), since the originals keep no factor between calls.
 *
 * @module
 */
import { GpuError, type Runtime } from "./device.ts";
import { map } from "./elementwise.ts";
import { matmul } from "./gemm.ts";
import {
  cholesky,
  type CholeskyOptions,
  NotPositiveDefiniteError,
  spdInverse,
  type SpdInverseOptions,
  spdSolve,
  type SpdSolveOptions,
  triangularSolve,
  type TriangularSolveOptions,
} from "./linalg.ts";
import { addDiag, diag, eye, scatterSubmatrix, submatrix, transpose } from "./matrix.ts";
import { reduce } from "./reduce.ts";
import { Tensor } from "./tensor.ts";
import { inverseTol, newtonRule, refine, SOLVE_RULE, withRetryDamping } from "./_refine.ts";

// ---------------------------------------------------------------------------------------------
// Private helpers
// ---------------------------------------------------------------------------------------------

/** Whether the whole of `t` fits one storage binding (then the `linalg.ts` originals take it). */
function fits(t: Tensor): boolean {
  return t.size * 4 <= t.rt.maxBinding;
}

/** Split point of an n×n matrix: a multiple of 64 near n/2 (0 < h < n for n ≥ 2). */
function splitPoint(n: number): number {
  return n > 128 ? 64 * Math.round(n / 128) : Math.ceil(n / 2);
}

/** A u32 tensor holding `start, start + 1, …, start + count − 1`. */
function indices(rt: Runtime, start: number, count: number): Tensor {
  const idx = new Uint32Array(count);
  for (let i = 0; i < count; i++) idx[i] = start + i;
  return Tensor.fromSync(rt, idx, [count], "u32", `indices ${start}…${start + count - 1}`);
}

/** Rows `[r0, r0 + rows)` and columns `[c0, c0 + cols)` of a matrix as a new tensor. */
function block(src: Tensor, r0: number, c0: number, rows: number, cols: number): Tensor {
  if (c0 === 0 && cols === src.cols) {
    // Whole rows are one contiguous range: a buffer copy.
    const name = `${src.name}[${r0}:${r0 + rows}, :]`;
    const out = Tensor.emptySync(src.rt, [rows, cols], "f32", name);
    out.copyFrom(src, r0 * cols, 0, rows * cols);
    return out;
  }
  const ri = r0 === 0 && rows === src.rows ? null : indices(src.rt, r0, rows);
  const ci = indices(src.rt, c0, cols);
  try {
    return submatrix(src, ri, ci);
  } finally {
    ri?.dispose();
    ci.dispose();
  }
}

/** Writes the matrix `src` into `dst` at row `r0`, column `c0` (in place). */
function put(dst: Tensor, src: Tensor, r0: number, c0: number): void {
  const [rows, cols] = [src.rows, src.cols];
  if (rows === 0 || cols === 0) return;
  if (c0 === 0 && cols === dst.cols) {
    dst.copyFrom(src, 0, r0 * cols, rows * cols);
    return;
  }
  const ri = r0 === 0 && rows === dst.rows ? null : indices(dst.rt, r0, rows);
  const ci = indices(dst.rt, c0, cols);
  try {
    scatterSubmatrix(dst, src, ri, ci);
  } finally {
    ri?.dispose();
    ci.dispose();
  }
}

/** Checks that `t` is a 2-D f32 matrix (square when `square`); returns its rows. */
function checkMatrix(t: Tensor, what: string, op: string, square: boolean): number {
  if (t.dtype !== "f32") throw new GpuError(op, `${what} ${t} must be f32`);
  if (t.shape.length !== 2) throw new GpuError(op, `${what} ${t} must be 2-D, got [${t.shape}]`);
  if (square && t.shape[0] !== t.shape[1]) {
    throw new GpuError(op, `${what} ${t} must be square, got [${t.shape}]`);
  }
  return t.shape[0];
}

/**
 * Re-raises a failed pivot of a sub-problem as a failure of the whole matrix: the pivot index
 * shifted by the block's offset, the caller's matrix name and damping. Other errors pass.
 */
function shiftPivot(e: unknown, offset: number, name: string, damp: number): unknown {
  if (!(e instanceof NotPositiveDefiniteError)) return e;
  return new NotPositiveDefiniteError(name, e.pivot + offset, damp, e.value);
}

/** Runs `fn` with `[n, 1]` for a 1-D `B` (reshaped back to `[n]` after), `B` itself otherwise. */
async function asColumns(B: Tensor, fn: (B2: Tensor) => Promise<Tensor>): Promise<Tensor> {
  if (B.shape.length !== 1) return await fn(B);
  const B2 = B.reshape([B.size, 1]);
  try {
    const X = await fn(B2);
    const x = X.reshape([B.size], X.name);
    X.dispose();
    return x;
  } finally {
    B2.dispose();
  }
}

/** The diagonal of a square matrix on the host (one read-back). */
async function readDiagonal(M: Tensor): Promise<Float64Array> {
  const d = diag(M);
  try {
    return Float64Array.from(await d.read());
  } finally {
    d.dispose();
  }
}

function mean(v: Float64Array, start: number, end: number): number {
  let s = 0;
  for (let i = start; i < end; i++) s += v[i];
  return end > start ? s / (end - start) : 0;
}

/**
 * The relative damping that adds the absolute shift `sigma` to a diagonal block whose diagonal
 * mean is `meanDiag`. A block whose mean is not positive cannot express it: the shift is then
 * added to the block itself (which must be a temporary of ours) and the damping is 0.
 */
function relativeDamp(blockCopy: Tensor, sigma: number, meanDiag: number): number {
  if (sigma === 0) return 0;
  if (meanDiag > 0 && Number.isFinite(meanDiag)) return sigma / meanDiag;
  addDiag(blockCopy, sigma);
  return 0;
}

/** `σ = λ·mean(diag M)` over the whole matrix, and M's diagonal (read back only when λ ≠ 0). */
async function shift(M: Tensor, damp: number): Promise<{ sigma: number; d: Float64Array | null }> {
  if (damp === 0) return { sigma: 0, d: null };
  const d = await readDiagonal(M);
  return { sigma: damp * mean(d, 0, d.length), d };
}

/** Cholesky of a block: the original when it fits one binding, the blocked version otherwise. */
function choleskyAny(M: Tensor, name: string): Promise<Tensor> {
  return fits(M) ? cholesky(M, { name }) : choleskyBlocks(M, { name });
}

/** Triangular solve with a block: the original when it fits, the blocked version otherwise. */
function triangularSolveAny(L: Tensor, B: Tensor, opts: TriangularSolveOptions): Tensor {
  return fits(L) ? triangularSolve(L, B, opts) : triangularSolveBlocks(L, B, opts);
}

/** Inverse of a block: the original when it fits, the blocked version otherwise. */
function spdInverseAny(M: Tensor, opts: SpdInverseOptions): Promise<Tensor> {
  return fits(M) ? spdInverse(M, opts) : spdInverseBlocks(M, opts);
}

/**
 * SPD solve of a block: the original when the matrix and the right-hand sides fit one binding
 * (right-hand sides that do not are solved in column chunks that do), the blocked version when
 * the matrix does not.
 */
async function spdSolveAny(M: Tensor, B: Tensor, opts: SpdSolveOptions): Promise<Tensor> {
  if (!fits(M)) return await spdSolveBlocks(M, B, opts);
  if (fits(B)) return await spdSolve(M, B, opts);
  const n = B.rows, k = B.cols;
  const step = Math.max(1, Math.floor(M.rt.maxBinding / 4 / Math.max(n, 1)));
  const X = Tensor.emptySync(M.rt, [n, k], "f32", `${B.name}:solved`);
  try {
    for (let c0 = 0; c0 < k; c0 += step) {
      const Bc = block(B, 0, c0, n, Math.min(step, k - c0));
      try {
        const Xc = await spdSolve(M, Bc, opts);
        put(X, Xc, 0, c0);
        Xc.dispose();
      } finally {
        Bc.dispose();
      }
    }
  } catch (e) {
    X.dispose();
    throw e;
  }
  return X;
}

/** Disposes every tensor of a list that is set. */
function disposeAll(ts: (Tensor | null | undefined)[]): void {
  for (const t of ts) t?.dispose();
}

// ---------------------------------------------------------------------------------------------
// Cholesky
// ---------------------------------------------------------------------------------------------

/**
 * Cholesky factorisation `M = L·Lᵀ` of a symmetric positive definite `[n, n]` matrix of any size,
 * by 2×2 blocks: `L11 = cholesky(M11)`, `L21 = M21·L11⁻ᵀ`, `L22 = cholesky(M22 − L21·L21ᵀ)`,
 * each block through {@link cholesky} of `linalg.ts` when it fits one storage binding and through
 * this function again when it does not. Only the lower triangle of `M` is read; the result has
 * zeros above the diagonal. Reads back one status word per block factored by the original.
 *
 * @param M the `[n, n]` SPD matrix (may be larger than one storage binding)
 * @param opts `name` for error messages
 * @returns the lower-triangular `[n, n]` factor
 * @throws {NotPositiveDefiniteError} naming the matrix and the failing pivot's index in the
 *   whole matrix
 *
 * @example Usage
 * ```ts ignore
 * import { choleskyBlocks, Tensor } from "@llm-surgeon/toolkit";
 * // Any size; split once even when M fits one binding (blocks that do not fit recurse).
 * const M = await Tensor.from([4, 0, 0, 2, 5, 0, 0, 3, 10], [3, 3]); // lower triangle read
 * console.log(await (await choleskyBlocks(M)).read()); // [2, 0, 0, 1, 2, 0, 0, 1.5, 2.78388]
 * ```
 */
export async function choleskyBlocks(M: Tensor, opts: CholeskyOptions = {}): Promise<Tensor> {
  const name = opts.name ?? M.name;
  const n = checkMatrix(M, "matrix", `choleskyBlocks(${name})`, true);
  if (n <= 1) return await cholesky(M, { name });
  const h = splitPoint(n), m = n - h;
  const temps: (Tensor | null)[] = [];
  let L11: Tensor | null = null, L21: Tensor | null = null, L22: Tensor | null = null;
  try {
    const M11 = block(M, 0, 0, h, h);
    temps.push(M11);
    try {
      L11 = await choleskyAny(M11, name);
    } catch (e) {
      throw shiftPivot(e, 0, name, 0);
    }
    const M21 = block(M, h, 0, m, h);
    temps.push(M21);
    L21 = triangularSolveAny(L11, M21, { lower: true, transpose: true, side: "right" });
    const S = block(M, h, h, m, m);
    temps.push(S);
    matmul(L21, L21, { transB: true, alpha: -1, beta: 1, out: S });
    try {
      L22 = await choleskyAny(S, name);
    } catch (e) {
      throw shiftPivot(e, h, name, 0);
    }
    // A new tensor is zero-filled: the block above the diagonal stays zero.
    const L = Tensor.emptySync(M.rt, [n, n], "f32", `${name}:L`);
    put(L, L11, 0, 0);
    put(L, L21, h, 0);
    put(L, L22, h, h);
    return L;
  } finally {
    disposeAll([...temps, L11, L21, L22]);
  }
}

// ---------------------------------------------------------------------------------------------
// Triangular solves
// ---------------------------------------------------------------------------------------------

/**
 * Solves `op(L)·X = B` (left) or `X·op(L) = B` (right) for a triangular `L` of any size, with
 * the options and semantics of {@link triangularSolve}: which triangle is read (`lower`), the
 * transpose, the side; a 1-D `B` is one column (left side only). By 2×2 blocks: the diagonal
 * block that comes first in the substitution is solved, its solution is multiplied into the
 * right-hand sides of the other one (one GEMM), and that one is solved; blocks that fit one
 * storage binding go to {@link triangularSolve}, larger ones back here. Recorded, no read-back;
 * a zero on the diagonal gives non-finite values.
 *
 * @param L `[n, n]` triangular matrix (may be larger than one storage binding)
 * @param B `[n, k]` (left) or `[k, n]` (right) right-hand sides, or `[n]`
 * @param opts which triangle, transpose, side
 * @returns X, same shape as B
 *
 * @example Usage
 * ```ts ignore
 * import { Tensor, triangularSolveBlocks } from "@llm-surgeon/toolkit";
 * const L = await Tensor.from([2, 0, 0, 1, 1, 0, 0, 1, 4], [3, 3]);
 * const b = await Tensor.from([2, 2, 5]);
 * console.log(await triangularSolveBlocks(L, b, { lower: true }).read()); // [1, 1, 1]
 * ```
 */
export function triangularSolveBlocks(
  L: Tensor,
  B: Tensor,
  opts: TriangularSolveOptions,
): Tensor {
  const side = opts.side ?? "left";
  const transpose = opts.transpose ?? false;
  const op = `triangularSolveBlocks(${L.name}, ${B.name})`;
  const n = checkMatrix(L, "triangle", op, true);
  const vector = B.shape.length === 1;
  if (vector && side !== "left") throw new GpuError(op, "a 1-D right-hand side needs side 'left'");
  if (vector && B.size !== n) {
    throw new GpuError(op, `right-hand side [${B.shape}] does not match the ${n}×${n} triangle`);
  }
  if (!vector) {
    checkMatrix(B, "right-hand side", op, false);
    const dim = side === "left" ? B.shape[0] : B.shape[1];
    if (dim !== n) {
      throw new GpuError(
        op,
        `right-hand side [${B.shape}] does not match the ${n}×${n} triangle (${side})`,
      );
    }
  }
  if (B.size === 0) return Tensor.emptySync(L.rt, B.shape, "f32", `${B.name}:solved`);
  if (n <= 1) return triangularSolve(L, B, opts);
  const B2 = vector ? B.reshape([n, 1]) : B;
  try {
    const X = solveByBlocks(L, B2, opts.lower, transpose, side);
    if (!vector) return X;
    const x = X.reshape([n], X.name);
    X.dispose();
    return x;
  } finally {
    if (vector) B2.dispose();
  }
}

/** The block recursion of {@link triangularSolveBlocks} for a 2-D `B`. */
function solveByBlocks(
  T: Tensor,
  B: Tensor,
  lower: boolean,
  transpose: boolean,
  side: "left" | "right",
): Tensor {
  const n = T.shape[0], h = splitPoint(n), m = n - h;
  const left = side === "left";
  const k = left ? B.cols : B.rows;
  // op(T) is lower triangular iff lower XOR transpose. Forward substitution (leading block
  // first) for a lower op(T) on the left and an upper one on the right; backward otherwise.
  const effLower = lower !== transpose;
  const leadingFirst = left === effLower;
  const offset = (i: number) => (i === 0 ? 0 : h), size = (i: number) => (i === 0 ? h : m);
  /** The part of B (or X) that pairs with diagonal block i: rows on the left, columns on the right. */
  const part = (t: Tensor, i: number) =>
    left ? block(t, offset(i), 0, size(i), k) : block(t, 0, offset(i), k, size(i));
  const [first, second] = leadingFirst ? [0, 1] : [1, 0];
  const opts: TriangularSolveOptions = { lower, transpose, side };
  const temps: (Tensor | null)[] = [];
  let X1: Tensor | null = null, X2: Tensor | null = null;
  try {
    const T1 = block(T, offset(first), offset(first), size(first), size(first));
    const B1 = part(B, first);
    temps.push(T1, B1);
    X1 = triangularSolveAny(T1, B1, opts);
    // The stored off-diagonal block: T21 for a lower T, T12 for an upper one; op(T)'s coupling
    // block is it or its transpose.
    const off = lower ? block(T, h, 0, m, h) : block(T, 0, h, h, m);
    const B2 = part(B, second);
    temps.push(off, B2);
    if (left) matmul(off, X1, { transA: transpose, alpha: -1, beta: 1, out: B2 });
    else matmul(X1, off, { transB: transpose, alpha: -1, beta: 1, out: B2 });
    const T2 = block(T, offset(second), offset(second), size(second), size(second));
    temps.push(T2);
    X2 = triangularSolveAny(T2, B2, opts);
    const X = Tensor.emptySync(T.rt, B.shape, "f32", `${B.name}:solved`);
    for (const [i, Xi] of [[first, X1], [second, X2]] as const) {
      if (left) put(X, Xi, offset(i), 0);
      else put(X, Xi, 0, offset(i));
    }
    return X;
  } finally {
    disposeAll([...temps, X1, X2]);
  }
}

// ---------------------------------------------------------------------------------------------
// Residuals in extended precision from f32 GEMMs
// ---------------------------------------------------------------------------------------------

/**
 * A matrix prepared for exact products (Ozaki's splitting): `M = Σ_p parts[p] + rest`, where
 * every entry of `parts[p]` in column j is an integer of at most `beta` bits times the power of
 * two `2^(e_j − beta·(p + 1))` (`e_j`: the exponent of column j's largest magnitude), and `rest`
 * is what the parts leave (exact). A product of one part of A and one part of B, summed over K,
 * is then a sum of integers below 2^24 on one grid per output: f32 GEMMs compute it exactly.
 */
interface Sliced {
  parts: Tensor[];
  rest: Tensor;
}

/** Slice width β for products over K terms: K·4^β ≤ 2^24, so every partial sum is exact. */
function sliceBits(K: number): number {
  let beta = Math.floor((24 - Math.log2(Math.max(K, 1))) / 2);
  while (beta > 1 && K * 4 ** beta > 2 ** 24) beta--;
  return Math.max(beta, 1);
}

/**
 * Number of slices per operand: the parts cover at least 15 bits below each column's largest
 * entry, so the f32 products of the rests are ≈ 2⁻¹⁵ of the product and their rounding
 * ≈ 2⁻³⁹ of it. The refined error grows with κ times that: measured at n = 300, 21 bits (3 × 7)
 * give 3e-8 at κ = 1e6, 14 bits (2 × 7) 1.5e-6; both 3e-8 at κ ≤ 1e3. At n = 11,008 (β = 5) the
 * three parts cover 15 bits; a fourth (20 bits) would cost 7 more GEMMs per residual.
 */
function sliceCount(beta: number): number {
  return Math.ceil(15 / beta);
}

/** Splits the columns of `T` into `count` parts of `beta` bits and the rest (see {@link Sliced}). */
function sliceColumns(T: Tensor, count: number, beta: number): Sliced {
  const colMax = reduce(T, "absmax", "cols");
  const rest = T.clone(`${T.name}:rest`);
  const parts: Tensor[] = [];
  for (let p = 1; p <= count; p++) {
    // round(x·2^(βp − e))·2^(e − βp): scaling by powers of two and round() are exact.
    const part = map(
      "ldexp(round(ldexp(a, i32(s0) - frexp(b).exp)), frexp(b).exp - i32(s0))",
      [rest, colMax],
      [beta * p],
      { name: `${T.name}:part${p}` },
    );
    map("o - a", [part], [], { out: rest }); // exact: the part is x rounded to a coarser grid
    parts.push(part);
  }
  colMax.dispose();
  return { parts, rest };
}

function disposeSliced(s: Sliced): void {
  disposeAll([...s.parts, s.rest]);
}

/** `hi + lo += t` in double-f32 (two-sum; `s0` = 1 keeps the compiler from simplifying). */
function accumulate(hi: Tensor, lo: Tensor, t: Tensor): void {
  const s = "(a + b)", bp = `(${s} * s0 - a)`;
  map(`o + ((a - (${s} - ${bp}) * s0) + (b - ${bp}))`, [hi, t], [1], { out: lo });
  map("o + a", [t], [], { out: hi });
}

/** The symmetric matrix defined by the lower triangle of `M` (any size). */
function symmetricFromLower(M: Tensor, name: string): Tensor {
  const Mt = transpose(M);
  try {
    return map("select(b, a, i % u32(s0) <= i / u32(s0))", [M, Mt], [M.shape[0]], { name });
  } finally {
    Mt.dispose();
  }
}

/**
 * A symmetric matrix `Ms` (from the lower triangle of M), its slices, and the f32 damping shift σ,
 * for {@link residual}.
 */
interface ResidualMatrix {
  Ms: Tensor;
  sliced: Sliced;
  beta: number;
  sigma: number;
}

function residualMatrix(M: Tensor, sigma: number, name: string): ResidualMatrix {
  const n = M.shape[0];
  const Ms = symmetricFromLower(M, `${name}:symmetric`);
  const beta = sliceBits(n);
  return { Ms, sliced: sliceColumns(Ms, sliceCount(beta), beta), beta, sigma: Math.fround(sigma) };
}

function disposeResidualMatrix(r: ResidualMatrix): void {
  r.Ms.dispose();
  disposeSliced(r.sliced);
}

/** `x` split into a high part of 12 significant bits and the (exact) rest, in float64. */
function split12(x: number): [number, number] {
  if (x === 0 || !Number.isFinite(x)) return [x, 0];
  const q = 2 ** (Math.floor(Math.log2(Math.abs(x))) - 11);
  const hi = Math.round(x / q) * q;
  return [hi, x - hi];
}

/**
 * `R = B − (Ms + σI)·X` (B = I when null) with an error of about 2⁻³⁹·|Ms|·|X| instead of the
 * 2⁻²⁴·√n of an f32 GEMM: `Ms·X` is the sum of the exact products of the slices of `Ms` and `X`
 * (one f32 GEMM each) and two f32 GEMMs for the rests (`Ms·X_rest + Ms_rest·(X − X_rest)`), σ·X
 * an exact product (Dekker), all summed in double-f32. Costs `count² + 2` GEMMs of the size of
 * `Ms·X` (6 for n ≤ 256, 11 for n ≤ 16,384, 18 up to 65,536) and ≈ 2 element-wise passes per
 * GEMM.
 */
function residual(R: ResidualMatrix, X: Tensor, B: Tensor | null): Tensor {
  const rt = X.rt;
  const n = X.rows, k = X.cols;
  const hi = B ? B.clone("residual:hi") : eye(rt, n, k);
  const lo = Tensor.emptySync(rt, [n, k], "f32", "residual:lo");
  const xs = sliceColumns(X, R.sliced.parts.length, R.beta);
  const temps: Tensor[] = [lo];
  try {
    // Ms is symmetric and sliced by columns: Ms·X = Σ Ms_pᵀ·X_q, each product exact.
    for (const Mp of R.sliced.parts) {
      for (const Xq of xs.parts) {
        const P = matmul(Mp, Xq, { transA: true, alpha: -1, name: "residual:product" });
        accumulate(hi, lo, P);
        P.dispose();
      }
    }
    const head = map("a - b", [X, xs.rest], [], { name: "residual:head" });
    temps.push(head);
    const T = matmul(R.Ms, xs.rest, { transA: true, alpha: -1, name: "residual:rests" });
    temps.push(T);
    matmul(R.sliced.rest, head, { transA: true, alpha: -1, beta: 1, out: T });
    accumulate(hi, lo, T);
    if (R.sigma !== 0) {
      // −σ·x = p + e exactly: p = fl(−σ·x), e by Dekker's product with −σ split on the host.
      const [th, tl] = split12(-R.sigma);
      const p = map("a * s0", [X], [th + tl], { name: "residual:shift" });
      const xh = "((4097.0 * a) * s2 - ((4097.0 * a) - a))", xl = `(a - ${xh})`;
      const e = map(`((s0 * ${xh} - b) + s0 * ${xl} + s1 * ${xh}) + s1 * ${xl}`, [X, p], [
        th,
        tl,
        1,
      ], { name: "residual:shiftError" });
      temps.push(p, e);
      accumulate(hi, lo, p);
      accumulate(hi, lo, e);
    }
    map("o + a", [lo], [], { out: hi });
    return hi;
  } catch (e) {
    hi.dispose();
    throw e;
  } finally {
    disposeSliced(xs);
    disposeAll(temps);
  }
}

/** ‖D‖/‖X‖ (one read-back of two numbers). */
async function relativeSize(D: Tensor, X: Tensor): Promise<number> {
  const d = reduce(D, "sumsq"), x = reduce(X, "sumsq");
  const both = Tensor.emptySync(D.rt, [2], "f32", "relative size");
  both.copyFrom(d, 0, 0, 1);
  both.copyFrom(x, 0, 1, 1);
  d.dispose();
  x.dispose();
  try {
    const [dd, xx] = await both.read();
    return Math.sqrt(dd / (xx || 1));
  } finally {
    both.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// SPD solve and inverse
// ---------------------------------------------------------------------------------------------

/** In place: `X ← (X + Xᵀ)/2`, exactly symmetric. */
function symmetrize(X: Tensor): void {
  const Xt = transpose(X);
  map("0.5 * (o + a)", [Xt], [], { out: X });
  Xt.dispose();
}

/**
 * The Schur-complement solver of a damped SPD matrix `M_d = [[A, Cᵀ], [C, D]]` (`A = M11 + σI`,
 * `C = M21`, `D = M22 + σI`): the blocks, `Y = A⁻¹·Cᵀ` and `S = D − C·Y`, kept for the
 * refinement steps; the damping of A and S is the relative damping of their sub-solves.
 */
interface SchurSolver {
  h: number;
  A: Tensor;
  dampA: number;
  C: Tensor;
  Y: Tensor;
  S: Tensor;
  dampS: number;
}

function disposeSchur(f: SchurSolver): void {
  disposeAll([f.A, f.C, f.Y, f.S]);
}

/**
 * Builds the {@link SchurSolver} of `M_d` and solves `M_d·X = B` with it: `[Y, w] = A⁻¹·[Cᵀ, B1]`
 * (one refined solve), `S = M22 − C·Y` (+σ through its damping), `x2 = S⁻¹·(B2 − C·w)`,
 * `x1 = w − Y·x2`.
 */
async function schurSolver(
  M: Tensor,
  B: Tensor,
  sigma: number,
  d: Float64Array | null,
  damp: number,
  name: string,
  maxRefine: number | undefined,
): Promise<{ solver: SchurSolver; X: Tensor }> {
  const rt = M.rt;
  const n = M.shape[0], k = B.cols, h = splitPoint(n), m = n - h;
  const A = block(M, 0, 0, h, h);
  const C = block(M, h, 0, m, h);
  const dampA = relativeDamp(A, sigma, d ? mean(d, 0, h) : 0);
  const temps: (Tensor | null)[] = [];
  let Y: Tensor | null = null, S: Tensor | null = null;
  try {
    // Right-hand sides of the leading block: [Cᵀ, B1].
    const Ct = transpose(C);
    const R1 = Tensor.emptySync(rt, [h, m + k], "f32", `${name}:rhs11`);
    const B1 = block(B, 0, 0, h, k);
    temps.push(Ct, R1, B1);
    put(R1, Ct, 0, 0);
    put(R1, B1, 0, m);
    const W = await subSolve(A, R1, dampA, `${name}[11]`, maxRefine, 0, name, damp);
    temps.push(W);
    Y = block(W, 0, 0, h, m);
    const w = block(W, 0, m, h, k);
    temps.push(w);
    S = block(M, h, h, m, m);
    matmul(C, Y, { alpha: -1, beta: 1, out: S });
    const dS = sigma === 0 ? null : await readDiagonal(S);
    const dampS = relativeDamp(S, sigma, dS ? mean(dS, 0, m) : 0);
    const solver: SchurSolver = { h, A, dampA, C, Y, S, dampS };
    const r2 = block(B, h, 0, m, k);
    temps.push(r2);
    const X = await finishSolve(solver, w, r2, name, maxRefine, damp);
    return { solver, X };
  } catch (e) {
    disposeAll([A, C, Y, S]);
    throw e;
  } finally {
    disposeAll(temps);
  }
}

/**
 * A refined sub-solve of a diagonal block; a failed pivot is re-raised for the whole matrix
 * (`offset`: the block's first row; `callerDamp`: the λ of the whole matrix).
 */
async function subSolve(
  diagonalBlock: Tensor,
  rhs: Tensor,
  damp: number,
  blockName: string,
  maxRefine: number | undefined,
  offset: number,
  name: string,
  callerDamp: number,
): Promise<Tensor> {
  try {
    return await spdSolveAny(diagonalBlock, rhs, { damp, name: blockName, maxRefine });
  } catch (e) {
    throw shiftPivot(e, offset, name, callerDamp);
  }
}

/** `x2 = S⁻¹·(r2 − C·w)`, `x1 = w − Y·x2` (w is modified), assembled as `[x1; x2]`. */
async function finishSolve(
  f: SchurSolver,
  w: Tensor,
  r2: Tensor,
  name: string,
  maxRefine: number | undefined,
  callerDamp: number,
): Promise<Tensor> {
  matmul(f.C, w, { alpha: -1, beta: 1, out: r2 });
  const x2 = await subSolve(f.S, r2, f.dampS, `${name}:schur`, maxRefine, f.h, name, callerDamp);
  try {
    matmul(f.Y, x2, { alpha: -1, beta: 1, out: w });
    const X = Tensor.emptySync(w.rt, [w.rows + x2.rows, w.cols], "f32", `${name}:solution`);
    put(X, w, 0, 0);
    put(X, x2, f.h, 0);
    return X;
  } finally {
    x2.dispose();
  }
}

/** `M_d⁻¹·R` with the solver (two refined sub-solves). */
async function applySchur(
  f: SchurSolver,
  R: Tensor,
  name: string,
  maxRefine: number | undefined,
  callerDamp: number,
): Promise<Tensor> {
  const n = R.rows, k = R.cols;
  const R1 = block(R, 0, 0, f.h, k), r2 = block(R, f.h, 0, n - f.h, k);
  try {
    const w = await subSolve(f.A, R1, f.dampA, `${name}[11]`, maxRefine, 0, name, callerDamp);
    try {
      return await finishSolve(f, w, r2, name, maxRefine, callerDamp);
    } finally {
      w.dispose();
    }
  } finally {
    R1.dispose();
    r2.dispose();
  }
}

/**
 * Solves `M_d·X = B` for a damped SPD `M_d = M + λ·mean(diag M)·I` of any size (the mean over the
 * whole matrix), with the options of {@link spdSolve}. First solution by the Schur complement of
 * the leading block: `[Y, w] = A⁻¹·[M21ᵀ, B1]` (one refined {@link spdSolve} of `A = M11 + σI`),
 * `S = M22 + σI − M21·Y`, `x2 = S⁻¹·(B2 − M21·w)` (refined), `x1 = w − Y·x2`; blocks still larger
 * than one binding recurse. Then iterative refinement: the residual `B − M_d·X` in extended
 * precision (see the module doc; ≈ 2⁻³⁹·|M||X|, 6–11 GEMMs of the size of M·X), the correction
 * by the same Schur solver (with unrefined sub-solves), until the relative correction is below
 * 1e-7 (each step: one read-back, and the sub-solves' status words). Only the lower triangle of
 * `M` is read.
 *
 * Accuracy: relative Frobenius error vs float64 ≈ 3.5e-8 at κ = 10, 1e3 and 1e6 (n = 300,
 * 4 right-hand sides, 64 KiB bindings: two levels of blocking; 2–3 refinement steps, 0.5–0.8 s
 * here); without refinement (`maxRefine: 0`) that of an f32 solve, ≈ 1e-7, 4e-6, 4e-3.
 *
 * @param M `[n, n]` symmetric positive (semi-)definite matrix (may exceed one storage binding)
 * @param B `[n, k]` right-hand sides, or `[n]`
 * @param opts damping, name, refinement steps (of this solve and of the sub-solves)
 * @returns X, same shape as B
 * @throws {NotPositiveDefiniteError} naming the matrix and the failing pivot in the whole matrix
 *
 * @example Usage
 * ```ts ignore
 * import { spdSolveBlocks, Tensor } from "@llm-surgeon/toolkit";
 * const M = await Tensor.from([4, 0, 0, 2, 5, 0, 0, 3, 10], [3, 3]); // lower triangle read
 * const x = await spdSolveBlocks(M, await Tensor.from([6, 10, 13]));
 * console.log(await x.read()); // [1, 1, 1]
 * ```
 */
export async function spdSolveBlocks(
  M: Tensor,
  B: Tensor,
  opts: SpdSolveOptions = {},
): Promise<Tensor> {
  const name = opts.name ?? M.name;
  const op = `spdSolveBlocks(${name}, ${B.name})`;
  const n = checkMatrix(M, "matrix", op, true);
  if (B.shape.length === 1 ? B.size !== n : checkMatrix(B, "right-hand side", op, false) !== n) {
    throw new GpuError(op, `right-hand side [${B.shape}] does not match the ${n}×${n} matrix`);
  }
  if (B.size === 0) return Tensor.emptySync(M.rt, B.shape, "f32", `${name}:solution`);
  if (n <= 1) return await spdSolve(M, B, opts);
  const damp = opts.damp ?? 0;
  return await asColumns(B, async (B2) => {
    const { sigma, d } = await shift(M, damp);
    const { solver, X } = await schurSolver(M, B2, sigma, d, damp, name, opts.maxRefine);
    let RM: ResidualMatrix | null = null;
    try {
      const maxSteps = opts.maxRefine ?? 12;
      if (maxSteps > 0) RM = residualMatrix(M, sigma, name);
      await refine(op, maxSteps, SOLVE_RULE, async () => {
        const R = residual(RM!, X, B2);
        // Plain sub-solves suffice for the correction: S is f32 anyway, so each step gains
        // ≈ κ·2⁻²⁴ either way, and their own refinement tripled the read-backs.
        const D = await applySchur(solver, R, name, 0, damp).finally(() => R.dispose());
        map("o + a", [D], [], { out: X });
        return await relativeSize(D, X).finally(() => D.dispose());
      });
      return X;
    } catch (e) {
      X.dispose();
      throw e;
    } finally {
      disposeSchur(solver);
      if (RM) disposeResidualMatrix(RM);
    }
  });
}

/**
 * Inverse of a damped symmetric positive definite matrix of any size,
 * `(M + λ·mean(diag M)·I)⁻¹` (ALGORITHM.md §4.1; the mean over the whole matrix), with the
 * options of {@link spdInverse} (damping, name, `retryDamping`, `maxRefine`). First inverse by
 * the Schur complement of the leading block: `A⁻¹` of `A = M11 + σI` (refined
 * {@link spdInverse}), `Y = A⁻¹·M21ᵀ` (refined {@link spdSolve}: A is factored twice),
 * `S = M22 + σI − M21·Y`, `S⁻¹` (refined), and `X = [[A⁻¹ + Y·S⁻¹·Yᵀ, −Y·S⁻¹], [−S⁻¹·Yᵀ, S⁻¹]]`;
 * blocks still larger than one binding recurse. Then Newton steps `X ← X + X·(I − M_d·X)` with
 * the residual in extended precision (see the module doc; 6–11 GEMMs of n³ per step, plus one for
 * `X·R`), each followed by one read-back of the
 * relative correction ρ, until ρ ≤ 1e-3 (the error left is ≈ 2ρ²). Only the lower triangle of
 * `M` is read; the result is exactly symmetric.
 *
 * Accuracy: relative Frobenius error vs float64 ≈ 2.5e-8 at κ = 10, 1e3 and 1e6 (n = 300,
 * 64 KiB bindings: two levels of blocking; 1–2 Newton steps); without refinement
 * (`maxRefine: 0`) that of an f32 inverse, ≈ 1e-7, 4e-6, 4e-3.
 *
 * @param M `[n, n]` symmetric positive semi-definite matrix (may exceed one storage binding)
 * @param opts damping, name, retry policy, refinement steps (of this inverse and the sub-problems)
 * @returns the `[n, n]` inverse
 * @throws {NotPositiveDefiniteError} naming the matrix and the failing pivot in the whole matrix
 *
 * @example Usage
 * ```ts ignore
 * import { spdInverseBlocks, Tensor } from "@llm-surgeon/toolkit";
 * const M = await Tensor.from([2, 1, 0, 1, 4, 0, 0, 0, 1], [3, 3]);
 * const X = await spdInverseBlocks(M, { damp: 0.1 }); // (M + 0.1·(7/3)·I)⁻¹
 * console.log(await X.read()); // ≈ [0.500723, -0.118281, 0, -0.118281, 0.264161, 0, 0, 0, 0.810811]
 * ```
 */
export async function spdInverseBlocks(
  M: Tensor,
  opts: SpdInverseOptions = {},
): Promise<Tensor> {
  const name = opts.name ?? M.name;
  const n = checkMatrix(M, "matrix", `spdInverseBlocks(${name})`, true);
  const tol = inverseTol(`spdInverseBlocks(${name})`, opts.tol);
  if (n <= 1) return await spdInverse(M, opts);
  const { value: { X, sigma } } = await withRetryDamping(
    `spdInverseBlocks(${name})`,
    opts.damp ?? 0,
    opts.retryDamping,
    (e) => e instanceof NotPositiveDefiniteError,
    async (damp) => {
      const s = await shift(M, damp);
      return { X: await schurInverse(M, s.sigma, s.d, damp, name, opts.maxRefine), sigma: s.sigma };
    },
  );
  try {
    await newtonRefine(M, X, sigma, opts.maxRefine ?? 8, tol, name);
  } catch (e) {
    X.dispose();
    throw e;
  }
  return X;
}

/** Newton steps `X ← X + X·(I − M_d·X)` with the extended-precision residual (see above). */
async function newtonRefine(
  M: Tensor,
  X: Tensor,
  sigma: number,
  maxSteps: number,
  tol: number,
  name: string,
): Promise<void> {
  if (maxSteps <= 0) return;
  const RM = residualMatrix(M, sigma, name);
  try {
    await refine(`spdInverseBlocks(${name})`, maxSteps, newtonRule(tol), async () => {
      const R = residual(RM, X, null);
      const C = matmul(X, R, { name: `${name}:correction` });
      R.dispose();
      const rho = await relativeSize(C, X);
      map("o + a", [C], [], { out: X });
      C.dispose();
      symmetrize(X);
      return rho;
    });
  } finally {
    disposeResidualMatrix(RM);
  }
}

/** The Schur-complement inverse of {@link spdInverseBlocks}, before refinement. */
async function schurInverse(
  M: Tensor,
  sigma: number,
  d: Float64Array | null,
  damp: number,
  name: string,
  maxRefine: number | undefined,
): Promise<Tensor> {
  const rt = M.rt;
  const n = M.shape[0], h = splitPoint(n), m = n - h;
  const temps: (Tensor | null)[] = [];
  try {
    const A = block(M, 0, 0, h, h);
    temps.push(A);
    const dampA = relativeDamp(A, sigma, d ? mean(d, 0, h) : 0);
    let Ai: Tensor;
    try {
      Ai = await spdInverseAny(A, { damp: dampA, name: `${name}[11]`, maxRefine });
    } catch (e) {
      throw shiftPivot(e, 0, name, damp);
    }
    temps.push(Ai);
    const C = block(M, h, 0, m, h);
    const Ct = transpose(C);
    temps.push(C, Ct);
    // Y = A⁻¹·Cᵀ by a refined solve: the product A⁻¹·Cᵀ in f32 would lose about κ(A)²·2⁻²⁴
    // (cancellation), enough to make S indefinite at κ = 1e6.
    const Y = await subSolve(A, Ct, dampA, `${name}[11]`, maxRefine, 0, name, damp);
    temps.push(Y);
    const S = block(M, h, h, m, m);
    temps.push(S);
    matmul(C, Y, { alpha: -1, beta: 1, out: S });
    const dS = sigma === 0 ? null : await readDiagonal(S);
    const dampS = relativeDamp(S, sigma, dS ? mean(dS, 0, m) : 0);
    let Si: Tensor;
    try {
      Si = await spdInverseAny(S, { damp: dampS, name: `${name}:schur`, maxRefine });
    } catch (e) {
      throw shiftPivot(e, h, name, damp);
    }
    temps.push(Si);
    const Z = matmul(Y, Si, { alpha: -1, name: `${name}:X12` }); // −Y·S⁻¹, h×m
    temps.push(Z);
    // X11 = A⁻¹ + Y·S⁻¹·Yᵀ = A⁻¹ − Z·Yᵀ, made exactly symmetric.
    matmul(Z, Y, { transB: true, alpha: -1, beta: 1, out: Ai });
    symmetrize(Ai);
    const Zt = transpose(Z);
    temps.push(Zt);
    const X = Tensor.emptySync(rt, [n, n], "f32", `${name}:inverse`);
    put(X, Ai, 0, 0);
    put(X, Z, 0, h);
    put(X, Zt, h, 0);
    put(X, Si, h, h);
    return X;
  } finally {
    disposeAll(temps);
  }
}
