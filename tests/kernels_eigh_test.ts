/**
 * Tests of kernels/eigh.ts: eigenvalues against chosen spectra (Q·diag(λ)·Qᵀ, so the exact
 * answer is known) and against a float64 cyclic Jacobi reference, eigen-residuals
 * ‖M·V − V·diag(λ)‖, orthonormality of V, ascending order, and edge cases.
 */
import assert from "node:assert/strict";
import { eigh } from "../kernels/eigh.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertClose, matmulRef, Rng } from "./_util.ts";

/** Eigenvalues of a symmetric matrix by plain cyclic Jacobi in float64, ascending. */
function eigenvalues64(a: ArrayLike<number>, n: number): number[] {
  const A = Float64Array.from(a);
  for (let sweep = 0; sweep < 50; sweep++) {
    let off = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (i !== j) off += A[i * n + j] ** 2;
    if (off < 1e-26) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = A[p * n + q];
        if (apq === 0) continue;
        const theta = (A[q * n + q] - A[p * n + p]) / (2 * apq);
        const t = (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1), s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = A[k * n + p], akq = A[k * n + q];
          A[k * n + p] = c * akp - s * akq;
          A[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = A[p * n + k], aqk = A[q * n + k];
          A[p * n + k] = c * apk - s * aqk;
          A[q * n + k] = s * apk + c * aqk;
        }
      }
    }
  }
  return Array.from({ length: n }, (_, i) => A[i * n + i]).sort((x, y) => x - y);
}

/** A random symmetric matrix with entries ~ N(0, 1). */
function randomSymmetric(n: number, rng: Rng): Float32Array {
  const m = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) m[i * n + j] = m[j * n + i] = rng.normal();
  }
  return m;
}

/**
 * Q·diag(λ)·Qᵀ with a random orthogonal Q = H₁·H₂·…·Hₙ (products of Householder reflections
 * I − 2vvᵀ with Gaussian unit vectors v), rounded to f32.
 */
function withSpectrum(lam: number[], rng: Rng): Float32Array {
  const n = lam.length;
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  for (let h = 0; h < n; h++) {
    const v = rng.normals(n);
    const norm = Math.hypot(...v);
    for (let i = 0; i < n; i++) v[i] /= norm;
    // Q ← Q·(I − 2vvᵀ): each row r of Q loses 2(r·v)vᵀ.
    for (let r = 0; r < n; r++) {
      let d = 0;
      for (let i = 0; i < n; i++) d += q[r * n + i] * v[i];
      for (let i = 0; i < n; i++) q[r * n + i] -= 2 * d * v[i];
    }
  }
  const scaled = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let k = 0; k < n; k++) scaled[i * n + k] = q[i * n + k] * lam[k];
  return Float32Array.from(matmulRef(scaled, q, n, n, n, false, true));
}

/** Checks M·V ≈ V·diag(λ), VᵀV ≈ I and ascending λ; returns the relative residual. */
function checkDecomposition(
  m: Float32Array,
  n: number,
  lam: Float32Array,
  v: Float32Array,
): number {
  for (let i = 1; i < n; i++) assert.ok(lam[i - 1] <= lam[i], `eigenvalues not ascending at ${i}`);
  const mv = matmulRef(m, v, n, n, n);
  let num = 0, den = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      num += (mv[i * n + j] - v[i * n + j] * lam[j]) ** 2;
      den += m[i * n + j] ** 2;
    }
  }
  const vtv = matmulRef(v, v, n, n, n, true, false);
  for (let j = 0; j < n; j++) {
    for (let i = 0; i < n; i++) {
      const e = Math.abs(vtv[i * n + j] - (i === j ? 1 : 0));
      assert.ok(e < 5e-5, `(VᵀV)[${i}, ${j}] off by ${e}`);
    }
  }
  return Math.sqrt(num / (den || 1));
}

Deno.test("eigh() recovers a chosen spectrum on odd sizes", async () => {
  const rng = new Rng(12);
  for (const n of [2, 3, 17, 64, 100]) {
    // Well-conditioned spectrum in [1, 10], log-spaced, with a negative half for variety.
    const lam = Array.from({ length: n }, (_, i) => (i % 2 ? -1 : 1) * 10 ** (i / n));
    const m = withSpectrum(lam, rng);
    const { values, vectors } = await eigh(await Tensor.from(m, [n, n]));
    assert.deepStrictEqual(values.shape, [n]);
    assert.deepStrictEqual(vectors.shape, [n, n]);
    const l = await values.read();
    assertClose(l, [...lam].sort((a, b) => a - b), 1e-4, 1e-5, `eigenvalues n=${n}`);
    // f32 rotations accumulate rounding ~ 2⁻²⁴·√(rotations per entry): allow 2e-6·√n.
    const res = checkDecomposition(m, n, l, await vectors.read());
    assert.ok(res < 2e-6 * Math.sqrt(n), `n=${n}: residual ${res}`);
  }
});

Deno.test("eigh() matches a float64 Jacobi reference on random symmetric matrices", async () => {
  const rng = new Rng(99);
  for (const n of [5, 33]) {
    const m = randomSymmetric(n, rng);
    const { values, vectors } = await eigh(await Tensor.from(m, [n, n]));
    const l = await values.read();
    const ref = eigenvalues64(m, n);
    const scale = Math.max(...ref.map(Math.abs));
    assertClose(l, ref, 0, 1e-5 * scale, `eigenvalues n=${n}`);
    const res = checkDecomposition(m, n, l, await vectors.read());
    assert.ok(res < 1e-5, `n=${n}: residual ${res}`);
  }
});

Deno.test("eigh() handles 0×0, 1×1, diagonal, repeated and zero spectra", async () => {
  const e0 = await eigh(await Tensor.zeros([0, 0]));
  assert.deepStrictEqual([e0.values.shape, e0.vectors.shape], [[0], [0, 0]]);
  const e1 = await eigh(await Tensor.from([-3], [1, 1]));
  assert.deepStrictEqual([...await e1.values.read(), ...await e1.vectors.read()], [-3, 1]);
  // Diagonal input: eigenvalues sorted, vectors a permutation matrix (exactly: no rotations).
  const d = await eigh(await Tensor.from([3, 0, 0, 0, 1, 0, 0, 0, 2], [3, 3]));
  assert.deepStrictEqual([...await d.values.read()], [1, 2, 3]);
  assert.deepStrictEqual([...await d.vectors.read()], [0, 0, 1, 1, 0, 0, 0, 1, 0]);
  // A repeated eigenvalue (2, 2, 2, 5, 5) still gives an orthonormal basis.
  const rng = new Rng(4);
  const m = withSpectrum([2, 5, 2, 5, 2], rng);
  const r = await eigh(await Tensor.from(m, [5, 5]));
  const l = await r.values.read();
  assertClose(l, [2, 2, 2, 5, 5], 1e-5, 1e-6, "repeated eigenvalues");
  assert.ok(checkDecomposition(m, 5, l, await r.vectors.read()) < 1e-5);
  const z = await eigh(await Tensor.zeros([4, 4]));
  assert.deepStrictEqual([...await z.values.read()], [0, 0, 0, 0]);
  // Only the symmetric part is used.
  const s = await eigh(await Tensor.from([2, 3, -1, 2], [2, 2]));
  assertClose(await s.values.read(), [1, 3], 1e-6, 1e-6, "symmetric part [[2, 1], [1, 2]]");
  await assert.rejects(() => eigh(Tensor.emptySync(s.values.rt, [2, 3])), /square/);
});
