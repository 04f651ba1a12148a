import assert from "node:assert/strict";
import {
  colQuadForm,
  kron,
  kronDiag,
  kronMatVec,
  kronSolve,
  rowQuadForm,
} from "../kernels/kron.ts";
import { gpu } from "../kernels/device.ts";
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
  const rt = await gpu(), before = rt.stats.dispatches;
  kron(await up(g, [a, b]), await up(x, [c, d])).dispose();
  assert.equal(rt.stats.dispatches - before, 1, "one dispatch when everything fits one binding");
});

Deno.test("kron() refuses factors that are not f32", async () => {
  const H = await Tensor.from([1, 2, 3, 4], [2, 2], "f16", "half");
  const F = await up([1, 2, 3, 4], [2, 2]);
  assert.throws(() => kron(F, H), /kron: A Tensor\(half .* must be f32/);
  H.dispose();
  F.dispose();
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

/** Deterministic values in [-1, 1), cheap enough for tens of millions of elements. */
function pattern(n: number, seed: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (Math.imul(i ^ seed, 2654435761) >>> 0) / 2 ** 31 - 1;
  return x;
}

Deno.test("kron() writes products larger than one storage binding", async () => {
  const rt = await gpu();
  // Blocks of whole G rows (61×97 rows of 5963), then blocks of A rows within one G row (a G row
  // alone gives 4100 rows of 8202 elements, more than one binding).
  for (const [a, b, c, d] of [[61, 67, 97, 89], [1, 2, 4100, 4101]]) {
    const g = pattern(a * b, 1), x = pattern(c * d, 2);
    const G = await up(g, [a, b]), A = await up(x, [c, d]);
    const K = kron(G, A);
    assert.ok(K.size * 4 > rt.maxBinding, `kron [${a}, ${b}] ⊗ [${c}, ${d}] exceeds one binding`);
    const out = await K.read();
    // An f32·f32 product is exact in float64, so rounding it once gives the GPU's value.
    for (let i = 0; i < a; i++) {
      for (let k = 0; k < c; k++) {
        for (let j = 0; j < b; j++) {
          for (let l = 0; l < d; l++) {
            const e = (i * c + k) * (b * d) + j * d + l,
              want = Math.fround(g[i * b + j] * x[k * d + l]);
            if (out[e] !== want) {
              assert.fail(`kron[${i * c + k}, ${j * d + l}] = ${out[e]}, expected ${want}`);
            }
          }
        }
      }
    }
    for (const t of [G, A, K]) t.dispose();
  }
});

Deno.test("kron() refuses a product row larger than one binding, before allocating", async () => {
  const rt = await gpu();
  const G = await Tensor.zeros([1, 2], "g"),
    A = await Tensor.zeros([1, rt.maxBinding / 8 + 8], "a");
  const live = rt.liveBytes;
  assert.throws(() => kron(G, A), /kron: a row of kron\(g, a\) .* larger than one storage binding/);
  assert.equal(rt.liveBytes, live);
  G.dispose();
  A.dispose();
});

Deno.test("kronMatVec() and kronDiag() take a factor larger than one storage binding", async () => {
  const rt = await gpu();
  const R = 2, C = Math.floor(Math.sqrt(rt.maxBinding / 4)) + 2;
  const g = Float32Array.from([1.5, -0.5, 0.25, 2]), a = pattern(C * C, 5), x = pattern(R * C, 6);
  const G = await up(g, [R, R]), A = await up(a, [C, C]), X = await up(x, [R, C]);
  assert.ok(A.size * 4 > rt.maxBinding);
  // (G ⊗ A)·vec X = G·X·Aᵀ in float64.
  const gx = matmulRef(g, x, R, C, R);
  const want = new Float64Array(R * C);
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let k = 0; k < C; k++) s += gx[r * C + k] * a[c * C + k];
      want[r * C + c] = s;
    }
  }
  const Y = kronMatVec(G, A, X);
  assertClose(await Y.read(), want, 1e-4, 1e-4, "kronMatVec with A over one binding");
  const D = kronDiag(G, A);
  const dWant = Array.from({ length: R * C }, (_, i) => {
    const r = Math.floor(i / C), c = i % C;
    return g[r * R + r] * a[c * C + c];
  });
  assertClose(await D.read(), dWant, 1e-6, 0, "kronDiag with A over one binding");
  for (const t of [G, A, X, Y, D]) t.dispose();
});

Deno.test("rowQuadForm() takes W larger than one storage binding", async () => {
  const rt = await gpu();
  // W is [m, 17]: 1.97 M rows keep matmul's grid within 65,535 row tiles.
  const n = 17, m = Math.floor(rt.maxBinding / 4 / n) + 5;
  const w = pattern(m * n, 8), a = spd(new Rng(45), n);
  const W = await up(w, [m, n]), A = await up(a, [n, n]);
  assert.ok(W.size * 4 > rt.maxBinding);
  const want = new Float64Array(m);
  for (let i = 0; i < m; i++) {
    let s = 0;
    for (let j = 0; j < n; j++) {
      let t = 0;
      for (let k = 0; k < n; k++) t += a[j * n + k] * w[i * n + k];
      s += w[i * n + j] * t;
    }
    want[i] = s;
  }
  const q = rowQuadForm(W, A);
  assertClose(await q.read(), want, 1e-4, 1e-5, "rowQuadForm with W over one binding");
  for (const t of [W, A, q]) t.dispose();
});

Deno.test("colQuadForm() takes W larger than one storage binding", async () => {
  const rt = await gpu();
  // W is [512, 65,537]; G·W is split by rows, the column sums by row windows.
  const n = 512, m = Math.floor(rt.maxBinding / 4 / n) + 1;
  const w = pattern(n * m, 9), g = pattern(n * n, 10);
  const W = await up(w, [n, m]), G = await up(g, [n, n]);
  assert.ok(W.size * 4 > rt.maxBinding);
  const q = colQuadForm(G, W);
  const got = await q.read();
  // Every 331st column and the last three, against float64 W_:,jᵀ G W_:,j.
  const cols = [...Array.from({ length: Math.ceil(m / 331) }, (_, i) => i * 331), m - 3, m - 2];
  const want = cols.map((j) => {
    let s = 0;
    for (let i = 0; i < n; i++) {
      let t = 0;
      for (let k = 0; k < n; k++) t += g[i * n + k] * w[k * m + j];
      s += w[i * m + j] * t;
    }
    return s;
  });
  assertClose(cols.map((j) => got[j]), want, 1e-4, 1e-3, "colQuadForm with W over one binding");
  for (const t of [W, G, q]) t.dispose();
});
