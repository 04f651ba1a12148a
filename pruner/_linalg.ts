/**
 * Private float64 dense linear algebra on the host: Cholesky, SPD inverse and solves.
 *
 * Used by the pruner for the damped inverses of §4.1 (the reference inverts in float64) and the
 * small SPD systems of the OBS updates (|p|×|p| row/column blocks, element chunks) until the
 * GPU versions of kernels/linalg.ts (`spdInverse`, `batchedSpdSolve`) are available; the GPU
 * runs everything dense around them (costs, GEMM updates, masks).
 *
 * @module
 */

/** Raised when a matrix that must be symmetric positive definite is not. */
export class NotSpdError extends Error {
  /**
   * @param what the matrix (module and factor) that failed
   * @param pivot the failing pivot index
   * @param value the non-positive pivot value
   */
  constructor(what: string, pivot: number, value: number) {
    super(`${what}: not positive definite (pivot ${pivot} = ${value}); increase the damping`);
    this.name = "NotSpdError";
  }
}

/** In-place lower Cholesky factor of a row-major n×n SPD matrix (upper triangle zeroed). */
export function choleskyInPlace(a: Float64Array, n: number, what = "matrix"): Float64Array {
  for (let j = 0; j < n; j++) {
    const rj = j * n;
    let d = a[rj + j];
    for (let k = 0; k < j; k++) d -= a[rj + k] * a[rj + k];
    if (!(d > 0)) throw new NotSpdError(what, j, d);
    const ljj = Math.sqrt(d);
    a[rj + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      const ri = i * n;
      let s = a[ri + j];
      for (let k = 0; k < j; k++) s -= a[ri + k] * a[rj + k];
      a[ri + j] = s / ljj;
    }
    for (let k = j + 1; k < n; k++) a[rj + k] = 0;
  }
  return a;
}

/** Solves L·Lᵀ·X = B in place for `k` right-hand sides (B row-major n×k). */
export function cholSolveInPlace(
  L: Float64Array,
  n: number,
  b: Float64Array,
  k: number,
): Float64Array {
  for (let c = 0; c < k; c++) {
    for (let i = 0; i < n; i++) {
      let s = b[i * k + c];
      const ri = i * n;
      for (let j = 0; j < i; j++) s -= L[ri + j] * b[j * k + c];
      b[i * k + c] = s / L[ri + i];
    }
    for (let i = n - 1; i >= 0; i--) {
      let s = b[i * k + c];
      for (let j = i + 1; j < n; j++) s -= L[j * n + i] * b[j * k + c];
      b[i * k + c] = s / L[i * n + i];
    }
  }
  return b;
}

/** Inverse of an SPD matrix (copy), symmetrised. */
export function spdInverse(m: Float64Array, n: number, what = "matrix"): Float64Array {
  const L = choleskyInPlace(Float64Array.from(m), n, what);
  // Inverse of L (lower), then L⁻ᵀ·L⁻¹.
  const Li = new Float64Array(n * n);
  for (let c = 0; c < n; c++) {
    Li[c * n + c] = 1 / L[c * n + c];
    for (let i = c + 1; i < n; i++) {
      let s = 0;
      for (let j = c; j < i; j++) s -= L[i * n + j] * Li[j * n + c];
      Li[i * n + c] = s / L[i * n + i];
    }
  }
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let k = i; k < n; k++) s += Li[k * n + i] * Li[k * n + j];
      out[i * n + j] = s;
      out[j * n + i] = s;
    }
  }
  return out;
}

/**
 * `inv(M, λ) = (M + λ·mean(diag M)·I)⁻¹` (ALGORITHM.md §4.1) restricted to the indices with
 * `keep[i]`; dead indices get an identity row/column (so the full-size result is the inverse of
 * the sub-factor embedded in an identity, which decouples dead entries exactly).
 */
export function dampedInverse(
  m: Float64Array | Float32Array,
  n: number,
  damp: number,
  keep: Uint8Array,
  what: string,
): Float64Array {
  const idx: number[] = [];
  for (let i = 0; i < n; i++) if (keep[i]) idx.push(i);
  const k = idx.length;
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) if (!keep[i]) out[i * n + i] = 1;
  if (k === 0) return out;
  const sub = new Float64Array(k * k);
  let tr = 0;
  for (let a = 0; a < k; a++) {
    for (let b = 0; b < k; b++) sub[a * k + b] = m[idx[a] * n + idx[b]];
    tr += sub[a * k + a];
  }
  const add = damp * tr / k;
  for (let a = 0; a < k; a++) sub[a * k + a] += add;
  const inv = spdInverse(sub, k, what);
  for (let a = 0; a < k; a++) {
    for (let b = 0; b < k; b++) out[idx[a] * n + idx[b]] = inv[a * k + b];
  }
  return out;
}
