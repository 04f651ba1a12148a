/**
 * Plain float64 TypeScript references and matrix builders shared by the linear-algebra tests
 * (kernels/linalg.ts and kernels/linalg_big.ts).
 *
 * @module
 */
import { Tensor } from "../kernels/tensor.ts";
import { matmulRef, type Rng } from "./_util.ts";

/** Lower Cholesky factor of a row-major SPD matrix, in float64. */
export function cholesky64(a: ArrayLike<number>, n: number): Float64Array {
  const L = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let d = a[j * n + j];
    for (let k = 0; k < j; k++) d -= L[j * n + k] ** 2;
    if (!(d > 0)) throw new Error(`reference Cholesky: pivot ${j} is ${d}`);
    const ljj = Math.sqrt(d);
    L[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let v = a[i * n + j];
      for (let k = 0; k < j; k++) v -= L[i * n + k] * L[j * n + k];
      L[i * n + j] = v / ljj;
    }
  }
  return L;
}

/** Solves op(T)·x = b for a triangular T (lower or upper, optionally transposed), float64. */
export function triSolve64(
  T: ArrayLike<number>,
  n: number,
  b: ArrayLike<number>,
  k: number,
  lower: boolean,
  transpose: boolean,
): Float64Array {
  // Effective matrix E = op(T); E is lower iff lower XOR transpose.
  const e = (i: number, j: number) => transpose ? T[j * n + i] : T[i * n + j];
  const effLower = lower !== transpose;
  const x = Float64Array.from(b);
  for (let c = 0; c < k; c++) {
    for (let s = 0; s < n; s++) {
      const i = effLower ? s : n - 1 - s;
      let v = x[i * k + c];
      if (effLower) { for (let j = 0; j < i; j++) v -= e(i, j) * x[j * k + c]; }
      else for (let j = i + 1; j < n; j++) v -= e(i, j) * x[j * k + c];
      x[i * k + c] = v / e(i, i);
    }
  }
  return x;
}

/**
 * Solves op(T)·X = B (`side` "left", B n×k) or X·op(T) = B ("right", B k×n) in float64; the right
 * side as op(T)ᵀ·Xᵀ = Bᵀ.
 */
export function triSolveSide64(
  T: ArrayLike<number>,
  n: number,
  b: ArrayLike<number>,
  k: number,
  lower: boolean,
  transpose: boolean,
  side: "left" | "right",
): Float64Array {
  if (side === "left") return triSolve64(T, n, b, k, lower, transpose);
  return transposed(triSolve64(T, n, transposed(b, k, n), k, lower, !transpose), n, k);
}

/** Solves M·X = B (M SPD, B n×k) in float64. */
export function spdSolve64(
  m: ArrayLike<number>,
  n: number,
  b: ArrayLike<number>,
  k: number,
): Float64Array {
  const L = cholesky64(m, n);
  return triSolve64(L, n, triSolve64(L, n, b, k, true, false), k, true, true);
}

/** M + λ·mean(diag M)·I in float64 (ALGORITHM.md §4.1). */
export function damped64(m: ArrayLike<number>, n: number, damp: number): Float64Array {
  const md = Float64Array.from(m);
  let mean = 0;
  for (let i = 0; i < n; i++) mean += md[i * n + i] / n;
  for (let i = 0; i < n; i++) md[i * n + i] += damp * mean;
  return md;
}

/** (M + λ·mean(diag M)·I)⁻¹ in float64 (ALGORITHM.md §4.1). */
export function inverse64(m: ArrayLike<number>, n: number, damp = 0): Float64Array {
  const eye = new Float64Array(n * n);
  for (let i = 0; i < n; i++) eye[i * n + i] = 1;
  return spdSolve64(damped64(m, n, damp), n, eye, n);
}

/** The `cols × rows` transpose of a row-major `rows × cols` matrix, float64. */
export function transposed(a: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const t = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = a[r * cols + c];
  return t;
}

/** A Haar-like random orthogonal matrix: Gram–Schmidt (twice) on a Gaussian matrix. */
export function randomOrthogonal(n: number, rng: Rng): Float64Array {
  const q = rng.normals(n * n);
  for (let j = 0; j < n; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let c = 0; c < j; c++) {
        let d = 0;
        for (let i = 0; i < n; i++) d += q[i * n + j] * q[i * n + c];
        for (let i = 0; i < n; i++) q[i * n + j] -= d * q[i * n + c];
      }
    }
    let norm = 0;
    for (let i = 0; i < n; i++) norm += q[i * n + j] ** 2;
    norm = Math.sqrt(norm);
    for (let i = 0; i < n; i++) q[i * n + j] /= norm;
  }
  return q;
}

/** Q·diag(λ)·Qᵀ with λ log-spaced from 1 to κ, rounded to f32 (the matrix the GPU sees). */
export function withCondition(n: number, kappa: number, rng: Rng): Float32Array {
  const q = randomOrthogonal(n, rng);
  const lam = Array.from({ length: n }, (_, i) => kappa ** (n === 1 ? 0 : i / (n - 1)));
  const m = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let v = 0;
      for (let k = 0; k < n; k++) v += q[i * n + k] * lam[k] * q[j * n + k];
      m[i * n + j] = v;
      m[j * n + i] = v;
    }
  }
  return m;
}

/** A well-conditioned random SPD matrix G·Gᵀ/n + I, rounded to f32. */
export function randomSpd(n: number, rng: Rng): Float32Array {
  const g = rng.normals(n * n);
  const m = matmulRef(g, g, n, n, n, false, true);
  for (let i = 0; i < n * n; i++) m[i] /= n;
  for (let i = 0; i < n; i++) m[i * n + i] += 1;
  return Float32Array.from(m);
}

/** Uploads host values as an f32 tensor. */
export async function upload(
  data: ArrayLike<number>,
  shape: number[],
  name = "M",
): Promise<Tensor> {
  return await Tensor.from(Float32Array.from(data), shape, "f32", name);
}
