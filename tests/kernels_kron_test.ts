import assert from "node:assert/strict";
import {
  colQuadForm,
  kron,
  kronDiag,
  kronMatVec,
  kronSolve,
  rowQuadForm,
} from "../kernels/kron.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertClose, matmulRef, Rng } from "./_util.ts";

/** A random symmetric positive semi-definite n×n matrix (XᵀX / m). */
function spd(rng: Rng, n: number): Float64Array {
  const m = n + 3, x = rng.normals(m * n);
  return matmulRef(x, x, n, n, m, true, false).map((v) => v / m);
}

const up = (x: ArrayLike<number>, shape: number[]) => Tensor.from(Float32Array.from(x), shape);

Deno.test("kron() builds the explicit Kronecker product of rectangular factors", async () => {
  const rng = new Rng(41);
  const [a, b, c, d] = [2, 3, 3, 1];
  const g = rng.normals(a * b), x = rng.normals(c * d);
  const out = await kron(await up(g, [a, b]), await up(x, [c, d])).read();
  const want = new Float64Array(a * c * b * d);
  for (let i = 0; i < a; i++) {
    for (let j = 0; j < b; j++) {
      for (let k = 0; k < c; k++) {
        for (let l = 0; l < d; l++) {
          want[(i * c + k) * (b * d) + j * d + l] = g[i * b + j] * x[k * d + l];
        }
      }
    }
  }
  assertClose(out, want, 1e-6, 1e-6, "kron");
});

Deno.test("kronMatVec() equals the explicit (G ⊗ A)·vec X, and kronDiag() its diagonal", async () => {
  const rng = new Rng(42);
  for (const [R, C] of [[1, 1], [3, 5], [17, 4]]) {
    const g = spd(rng, R), a = spd(rng, C), x = rng.normals(R * C);
    const G = await up(g, [R, R]), A = await up(a, [C, C]), X = await up(x, [R, C]);
    const F = await kron(G, A).read();
    const want = matmulRef(F, x, R * C, 1, R * C);
    assertClose(await kronMatVec(G, A, X).read(), want, 1e-4, 1e-4, `kronMatVec ${R}×${C}`);
    const dWant = Array.from({ length: R * C }, (_, i) => F[i * R * C + i]);
    assertClose(await kronDiag(G, A).read(), dWant, 1e-5, 1e-6, `kronDiag ${R}×${C}`);
    for (const t of [G, A, X]) t.dispose();
  }
  const G = await up([1, 0, 0, 1], [2, 2]),
    A = await up([1], [1, 1]),
    X = await up([1, 2, 3], [3, 1]);
  assert.throws(() => kronMatVec(G, A, X), /X .* must be \[2, 1\]/);
});

Deno.test("rowQuadForm() and colQuadForm() match float64 quadratic forms", async () => {
  const rng = new Rng(43);
  for (const [R, C] of [[1, 1], [5, 3], [33, 100], [130, 17]]) {
    const w = rng.normals(R * C), a = spd(rng, C), g = spd(rng, R);
    const W = await up(w, [R, C]), A = await up(a, [C, C]), G = await up(g, [R, R]);
    const rowWant = Array.from({ length: R }, (_, i) => {
      let s = 0;
      for (let j = 0; j < C; j++) {
        for (let k = 0; k < C; k++) s += w[i * C + j] * a[j * C + k] * w[i * C + k];
      }
      return s;
    });
    const colWant = Array.from({ length: C }, (_, j) => {
      let s = 0;
      for (let i = 0; i < R; i++) {
        for (let k = 0; k < R; k++) s += w[i * C + j] * g[i * R + k] * w[k * C + j];
      }
      return s;
    });
    assertClose(await rowQuadForm(W, A).read(), rowWant, 1e-4, 1e-4, `rowQuadForm ${R}×${C}`);
    assertClose(await colQuadForm(G, W).read(), colWant, 1e-4, 1e-4, `colQuadForm ${R}×${C}`);
    for (const t of [W, A, G]) t.dispose();
  }
});

Deno.test("kronSolve() inverts kronMatVec() for SPD factors, with damping", async () => {
  const rng = new Rng(44);
  const [R, C] = [6, 9];
  const g = spd(rng, R), a = spd(rng, C), x = rng.normals(R * C);
  for (let i = 0; i < R; i++) g[i * R + i] += 0.5;
  for (let i = 0; i < C; i++) a[i * C + i] += 0.5;
  const G = await up(g, [R, R]), A = await up(a, [C, C]), X = await up(x, [R, C]);
  const Y = kronMatVec(G, A, X);
  assertClose(
    await (await kronSolve(G, A, Y)).read(),
    x,
    1e-4,
    1e-4,
    "kronSolve(kronMatVec(X)) = X",
  );
  // Damped: (G_d ⊗ A_d)·Z = X with M_d = M + λ·mean(diag M)·I.
  const lam = 0.1;
  const damp = (m: Float64Array, n: number) => {
    let tr = 0;
    for (let i = 0; i < n; i++) tr += m[i * n + i];
    const d = Float64Array.from(m);
    for (let i = 0; i < n; i++) d[i * n + i] += (lam * tr) / n;
    return d;
  };
  const Z = await kronSolve(G, A, X, { damp: lam });
  const back = kronMatVec(await up(damp(g, R), [R, R]), await up(damp(a, C), [C, C]), Z);
  assertClose(await back.read(), x, 1e-4, 1e-4, "damped kronSolve");
});
