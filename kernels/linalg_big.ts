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
 * Accuracy: the sub-solves and sub-inverses are refined to near-float64 accuracy by the
 * originals, but the Schur complement `S = M22 − C·Y` is an f32 GEMM, and no public kernel
 * computes a residual of the whole matrix in more than f32. The result is therefore as accurate
 * as a plain f32 Cholesky solve/inverse, about `κ·2⁻²⁴` relative error, not the ≈ 1e-7 of the
 * single-binding originals. Measured (relative Frobenius error against float64, n = 300, one
 * and two levels of blocking; tests/kernels_linalg_big_test.ts): see {@link spdInverseBlocks}
 * and {@link spdSolveBlocks}.
 *
 * Read-backs: `choleskyBlocks` one status word per leaf block that fits (2 per level);
 * `spdSolveBlocks`/`spdInverseBlocks` those of the sub-calls plus, when damped, the diagonals.
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
import { addDiag, diag, scatterSubmatrix, submatrix, transpose } from "./matrix.ts";
import { Tensor } from "./tensor.ts";

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
 * import { choleskyBlocks, gpu, Tensor } from "@llm-surgeon/toolkit";
 * const restore = (await gpu()).limitBinding(256); // pretend a 9-element matrix is too big
 * try {
 *   const M = await Tensor.from([4, 0, 0, 2, 5, 0, 0, 3, 10], [3, 3]);
 *   console.log(await (await choleskyBlocks(M)).read()); // [2, 0, 0, 1, 2, 0, 0, 1.5, ≈2.78]
 * } finally {
 *   restore();
 * }
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
 * import { gpu, Tensor, triangularSolveBlocks } from "@llm-surgeon/toolkit";
 * const restore = (await gpu()).limitBinding(256); // pretend a 9-element matrix is too big
 * try {
 *   const L = await Tensor.from([2, 0, 0, 1, 1, 0, 0, 1, 4], [3, 3]);
 *   const b = await Tensor.from([2, 2, 5]);
 *   console.log(await triangularSolveBlocks(L, b, { lower: true }).read()); // [1, 1, 1]
 * } finally {
 *   restore();
 * }
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
  if (n <= 1 || B.size === 0) return triangularSolve(L, B, opts);
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
// SPD solve and inverse
// ---------------------------------------------------------------------------------------------

/**
 * Solves `M_d·X = B` for a damped SPD `M_d = M + λ·mean(diag M)·I` of any size (the mean over the
 * whole matrix), with the options of {@link spdSolve}, by the Schur complement of the leading
 * block: `[Y, w] = A⁻¹·[M21ᵀ, B1]` (one refined {@link spdSolve} of `A = M11 + σI`),
 * `S = M22 + σI − M21·Y`, `x2 = S⁻¹·(B2 − M21·w)` (refined), `x1 = w − Y·x2`. Blocks still
 * larger than one binding recurse. Only the lower triangle of `M` is read.
 *
 * Accuracy: the sub-solves are refined to near-float64 accuracy, but `S` is an f32 product, so
 * the error is that of an f32 solve, growing with the condition number κ. Measured relative
 * Frobenius error vs float64 (n = 300, 4 right-hand sides, 64 KiB bindings): 1.2e-7 at κ = 10,
 * 3.7e-6 at κ = 1e3, 3.6e-3 at κ = 1e6; a plain f32 Cholesky solve gives 4e-7, 1e-5, 1e-2, the
 * single-binding {@link spdSolve} ≈ 3.5e-8 throughout.
 *
 * @param M `[n, n]` symmetric positive (semi-)definite matrix (may exceed one storage binding)
 * @param B `[n, k]` right-hand sides, or `[n]`
 * @param opts damping, name, refinement steps of the sub-solves
 * @returns X, same shape as B
 * @throws {NotPositiveDefiniteError} naming the matrix and the failing pivot in the whole matrix
 *
 * @example Usage
 * ```ts ignore
 * import { gpu, spdSolveBlocks, Tensor } from "@llm-surgeon/toolkit";
 * const restore = (await gpu()).limitBinding(256); // pretend a 9-element matrix is too big
 * try {
 *   const M = await Tensor.from([4, 0, 0, 2, 5, 0, 0, 3, 10], [3, 3]); // lower triangle read
 *   const x = await spdSolveBlocks(M, await Tensor.from([4, 7, 13]));
 *   console.log(await x.read()); // ≈ [1, 1, 1]
 * } finally {
 *   restore();
 * }
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
  const damp = opts.damp ?? 0;
  if (n <= 1 || B.size === 0) return await spdSolve(M, B, opts);
  return await asColumns(B, (B2) => schurSolve(M, B2, damp, name, opts.maxRefine));
}

/** The Schur-complement solve of {@link spdSolveBlocks} for a 2-D `B`. */
async function schurSolve(
  M: Tensor,
  B: Tensor,
  damp: number,
  name: string,
  maxRefine: number | undefined,
): Promise<Tensor> {
  const rt = M.rt;
  const n = M.shape[0], k = B.cols, h = splitPoint(n), m = n - h;
  const { sigma, d } = await shift(M, damp);
  const temps: (Tensor | null)[] = [];
  try {
    const A = block(M, 0, 0, h, h);
    const C = block(M, h, 0, m, h);
    const Ct = transpose(C);
    // Right-hand sides of the leading block: [Cᵀ, B1].
    const R1 = Tensor.emptySync(rt, [h, m + k], "f32", `${name}:rhs11`);
    temps.push(A, C, Ct, R1);
    put(R1, Ct, 0, 0);
    const B1 = block(B, 0, 0, h, k);
    temps.push(B1);
    put(R1, B1, 0, m);
    const dampA = relativeDamp(A, sigma, d ? mean(d, 0, h) : 0);
    let W: Tensor;
    try {
      W = await spdSolveAny(A, R1, { damp: dampA, name: `${name}[11]`, maxRefine });
    } catch (e) {
      throw shiftPivot(e, 0, name, damp);
    }
    temps.push(W);
    const Y = block(W, 0, 0, h, m);
    const w = block(W, 0, m, h, k);
    temps.push(Y, w);
    // S = M22 − C·Y (the σ of its diagonal is added by the damping of the sub-solve).
    const S = block(M, h, h, m, m);
    temps.push(S);
    matmul(C, Y, { alpha: -1, beta: 1, out: S });
    const r2 = block(B, h, 0, m, k);
    temps.push(r2);
    matmul(C, w, { alpha: -1, beta: 1, out: r2 });
    const dS = sigma === 0 ? null : await readDiagonal(S);
    const dampS = relativeDamp(S, sigma, dS ? mean(dS, 0, m) : 0);
    let x2: Tensor;
    try {
      x2 = await spdSolveAny(S, r2, { damp: dampS, name: `${name}:schur`, maxRefine });
    } catch (e) {
      throw shiftPivot(e, h, name, damp);
    }
    temps.push(x2);
    matmul(Y, x2, { alpha: -1, beta: 1, out: w });
    const X = Tensor.emptySync(rt, [n, k], "f32", `${name}:solution`);
    put(X, w, 0, 0);
    put(X, x2, h, 0);
    return X;
  } finally {
    disposeAll(temps);
  }
}

/**
 * Inverse of a damped symmetric positive definite matrix of any size,
 * `(M + λ·mean(diag M)·I)⁻¹` (ALGORITHM.md §4.1; the mean over the whole matrix), with the
 * options of {@link spdInverse} (damping, name, `retryDamping`, `maxRefine` of the sub-inverses),
 * by the Schur complement of the leading block: `A⁻¹` of `A = M11 + σI` (refined
 * {@link spdInverse}), `Y = A⁻¹·M21ᵀ` (refined {@link spdSolve}: A is factored twice),
 * `S = M22 + σI − M21·Y`, `S⁻¹` (refined), and
 * `X = [[A⁻¹ + Y·S⁻¹·Yᵀ, −Y·S⁻¹], [−S⁻¹·Yᵀ, S⁻¹]]`; blocks still larger than one binding
 * recurse. Only the lower triangle of `M` is read; the result is exactly symmetric.
 *
 * Accuracy: the sub-inverses are refined to near-float64 accuracy, but `S` and the off-diagonal
 * blocks are f32 products, so the error is that of an f32 inverse, growing with κ. Measured
 * relative Frobenius error vs float64 (n = 300, 64 KiB bindings): 9e-8 at κ = 10, 3.6e-6 at
 * κ = 1e3, 3.6e-3 at κ = 1e6; a plain f32 Cholesky inverse gives 3.7e-7, 1.1e-5, 1.1e-2, the
 * single-binding {@link spdInverse} 2.5e-8, 2.5e-8, 1.6e-7.
 *
 * @param M `[n, n]` symmetric positive semi-definite matrix (may exceed one storage binding)
 * @param opts damping, name, retry policy, refinement steps of the sub-inverses
 * @returns the `[n, n]` inverse
 * @throws {NotPositiveDefiniteError} naming the matrix and the failing pivot in the whole matrix
 *
 * @example Usage
 * ```ts ignore
 * import { gpu, spdInverseBlocks, Tensor } from "@llm-surgeon/toolkit";
 * const restore = (await gpu()).limitBinding(256); // pretend a 9-element matrix is too big
 * try {
 *   const M = await Tensor.from([2, 0, 0, 1, 4, 0, 0, 0, 1], [3, 3]);
 *   const X = await spdInverseBlocks(M, { damp: 0.1 }); // (M + 0.1·(7/3)·I)⁻¹
 *   console.log(await X.read());
 * } finally {
 *   restore();
 * }
 * ```
 */
export async function spdInverseBlocks(
  M: Tensor,
  opts: SpdInverseOptions = {},
): Promise<Tensor> {
  const name = opts.name ?? M.name;
  const n = checkMatrix(M, "matrix", `spdInverseBlocks(${name})`, true);
  if (n <= 1) return await spdInverse(M, opts);
  let damp = opts.damp ?? 0;
  for (let attempt = 0;; attempt++) {
    try {
      const X = await schurInverse(M, damp, name, opts.maxRefine);
      if (attempt > 0) {
        console.warn(`spdInverseBlocks(${name}): succeeded with damping λ = ${damp}`);
      }
      return X;
    } catch (e) {
      if (e instanceof NotPositiveDefiniteError && opts.retryDamping && attempt < 4) {
        const next = damp > 0 ? damp * 10 : 1e-5;
        console.warn(
          `spdInverseBlocks(${name}): ${e.message}; retrying with damping λ = ${next}`,
        );
        damp = next;
        continue;
      }
      throw e;
    }
  }
}

/** One attempt of {@link spdInverseBlocks} at damping `damp`. */
async function schurInverse(
  M: Tensor,
  damp: number,
  name: string,
  maxRefine: number | undefined,
): Promise<Tensor> {
  const rt = M.rt;
  const n = M.shape[0], h = splitPoint(n), m = n - h;
  const { sigma, d } = await shift(M, damp);
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
    let Y: Tensor;
    try {
      Y = await spdSolveAny(A, Ct, { damp: dampA, name: `${name}[11]`, maxRefine });
    } catch (e) {
      throw shiftPivot(e, 0, name, damp);
    }
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
    const AiT = transpose(Ai);
    temps.push(AiT);
    map("0.5 * (o + a)", [AiT], [], { out: Ai });
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
