/**
 * Tests of kernels/linalg.ts against plain float64 TypeScript references: Cholesky, triangular
 * solves, damped SPD inverse (with the accuracy bounds of issue #2 on matrices of controlled
 * condition number), SPD solves and batched SPD solves.
 */
import assert from "node:assert/strict";
import { gpu } from "../kernels/device.ts";
import {
  batchedSpdSolve,
  cholesky,
  NotPositiveDefiniteError,
  spdInverse,
  spdSolve,
  triangularSolve,
} from "../kernels/linalg.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertClose, matmulRef, relFrob, Rng } from "./_util.ts";
import {
  cholesky64,
  inverse64,
  randomSpd,
  spdSolve64,
  triSolve64,
  triSolveSide64,
  upload,
  withCondition,
} from "./_linalg_ref.ts";

// ---------------------------------------------------------------------------------------------
// Cholesky
// ---------------------------------------------------------------------------------------------

Deno.test("cholesky() matches a float64 reference on odd sizes and leaves zeros above", async () => {
  const rng = new Rng(11);
  for (const n of [1, 3, 17, 64, 65, 100, 257]) {
    const m = randomSpd(n, rng);
    const M = await upload(m, [n, n]);
    const L = await cholesky(M);
    const l = await L.read();
    assert.ok(relFrob(l, cholesky64(m, n)) < 2e-6, `n = ${n}: ${relFrob(l, cholesky64(m, n))}`);
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) assert.equal(l[i * n + j], 0, `L[${i}, ${j}] above diagonal`);
    }
    M.dispose();
    L.dispose();
  }
});

Deno.test("cholesky() past the explicit-inverse block size (recursive right solves) matches float64", async () => {
  // 600 = 320 + 280: the leading 320 block is applied by a recursive solve (> 256), the rest
  // through explicit inverses of ≤ 256 blocks; the leaves are 64 and odd remainders.
  const rng = new Rng(12);
  const n = 600;
  const m = randomSpd(n, rng);
  const L = await cholesky(await upload(m, [n, n]));
  const l = await L.read();
  const err = relFrob(l, cholesky64(m, n));
  assert.ok(err < 2e-6, `relative error ${err}`);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) assert.equal(l[i * n + j], 0, `L[${i}, ${j}] above diagonal`);
  }
});

Deno.test("cholesky() of the identity is the identity, and of a 0×0 matrix is 0×0", async () => {
  const n = 70;
  const eye = new Float32Array(n * n);
  for (let i = 0; i < n; i++) eye[i * n + i] = 1;
  const L = await cholesky(await upload(eye, [n, n]));
  assert.deepStrictEqual(await L.read(), eye);
  const E = await cholesky(await Tensor.zeros([0, 0]));
  assert.deepStrictEqual(E.shape, [0, 0]);
});

Deno.test("cholesky() throws NotPositiveDefiniteError naming the matrix and the pivot", async () => {
  // Singular: rows 0 and 1 equal → pivot 1 is exactly 0.
  const S = await upload([1, 1, 0, 1, 1, 0, 0, 0, 1], [3, 3], "G_0");
  await assert.rejects(() => cholesky(S), (e: unknown) => {
    assert.ok(e instanceof NotPositiveDefiniteError);
    assert.equal(e.pivot, 1);
    assert.equal(e.matrix, "G_0");
    assert.match(e.message, /G_0.*pivot 1/);
    return true;
  });
  // A negative pivot deep inside the recursion (second leaf).
  const n = 100, bad = 70;
  const m = new Float32Array(n * n);
  for (let i = 0; i < n; i++) m[i * n + i] = i === bad ? -2 : 1;
  const N = await upload(m, [n, n], "A_fc2");
  await assert.rejects(() => cholesky(N, { name: "layer3.fc2 A" }), (e: unknown) => {
    assert.ok(e instanceof NotPositiveDefiniteError);
    assert.equal(e.pivot, bad);
    assert.equal(e.value, -2);
    assert.match(e.message, /layer3\.fc2 A.*pivot 70/);
    return true;
  });
  // NaN input is reported, not propagated.
  const nan = await upload([4, NaN, NaN, 5], [2, 2]);
  await assert.rejects(() => cholesky(nan), NotPositiveDefiniteError);
});

// ---------------------------------------------------------------------------------------------
// Triangular solves
// ---------------------------------------------------------------------------------------------

Deno.test("triangularSolve() handles lower/upper, transposed, left/right on odd sizes", async () => {
  const rng = new Rng(5);
  for (const n of [1, 17, 100]) {
    const k = 3;
    // A well-conditioned triangle: unit-ish diagonal, small off-diagonal entries.
    const full = rng.normals(n * n, 0.3 / Math.sqrt(n));
    for (let i = 0; i < n; i++) full[i * n + i] = 1 + rng.next();
    const T = await upload(full, [n, n], "T");
    for (const lower of [true, false]) {
      // The reference sees only the used triangle; the other one holds garbage on the GPU.
      const tri = Float64Array.from(full);
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) if (lower ? j > i : j < i) tri[i * n + j] = 0;
      }
      for (const transpose of [false, true]) {
        for (const side of ["left", "right"] as const) {
          const b = rng.normals(n * k);
          const B = await upload(b, side === "left" ? [n, k] : [k, n], "B");
          const X = triangularSolve(T, B, { lower, transpose, side });
          const ref = triSolveSide64(tri, n, b, k, lower, transpose, side);
          assert.deepStrictEqual(X.shape, B.shape);
          const what = `n=${n} lower=${lower} transpose=${transpose} side=${side}`;
          assertClose(await X.read(), ref, 1e-4, 1e-5, what);
          B.dispose();
          X.dispose();
        }
      }
    }
    T.dispose();
  }
});

Deno.test("triangularSolve() on a triangle larger than one inverse block (n = 300)", async () => {
  const rng = new Rng(13);
  const n = 300, k = 5;
  const full = rng.normals(n * n, 0.3 / Math.sqrt(n));
  for (let i = 0; i < n; i++) full[i * n + i] = 1 + rng.next();
  const tri = Float64Array.from(full);
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) tri[i * n + j] = 0;
  const T = await upload(full, [n, n], "T300");
  const b = rng.normals(n * k);
  for (const transpose of [false, true]) {
    const X = triangularSolve(T, await upload(b, [n, k]), { lower: true, transpose });
    const ref = triSolve64(tri, n, b, k, true, transpose);
    assertClose(await X.read(), ref, 1e-4, 1e-5, `transpose=${transpose}`);
  }
});

Deno.test("triangularSolve() accepts a 1-D right-hand side and zero columns", async () => {
  const T = await upload([2, 0, 1, 4], [2, 2]);
  const x = triangularSolve(T, await upload([2, 9], [2]), { lower: true });
  assert.deepStrictEqual(x.shape, [2]);
  assertClose(await x.read(), [1, 2], 1e-6, 1e-7);
  const e = triangularSolve(T, await Tensor.zeros([2, 0]), { lower: true });
  assert.deepStrictEqual(e.shape, [2, 0]);
  assert.throws(() => triangularSolve(T, x, { lower: true, side: "right" }), /side/);
});

// ---------------------------------------------------------------------------------------------
// SPD inverse
// ---------------------------------------------------------------------------------------------

Deno.test("spdInverse() reproduces the damping example of ALGORITHM.md §12 R6", async () => {
  const X = await spdInverse(await upload([2, 1, 1, 4], [2, 2]), { damp: 0.1 });
  assertClose(await X.read(), [0.483690, -0.112486, -0.112486, 0.258718], 0, 1e-6);
  // Also against the closed form 1/8.89·[[4.3, −1], [−1, 2.3]] to f32 precision.
  assertClose(await X.read(), [4.3 / 8.89, -1 / 8.89, -1 / 8.89, 2.3 / 8.89], 1e-6, 0);
});

Deno.test("spdInverse() matches float64 on odd sizes, identity, 1×1 and 0×0", async () => {
  const rng = new Rng(3);
  for (const n of [1, 3, 17, 100, 257]) {
    const m = randomSpd(n, rng);
    const X = await spdInverse(await upload(m, [n, n]));
    const err = relFrob(await X.read(), inverse64(m, n));
    assert.ok(err < 1e-6, `n = ${n}: relative error ${err}`);
  }
  const eye = new Float32Array(9);
  eye[0] = eye[4] = eye[8] = 1;
  assertClose(await (await spdInverse(await upload(eye, [3, 3]))).read(), eye, 0, 1e-7);
  assertClose(await (await spdInverse(await upload([4], [1, 1]))).read(), [0.25], 1e-7, 0);
  assert.deepStrictEqual((await spdInverse(await Tensor.zeros([0, 0]))).shape, [0, 0]);
});

Deno.test("spdInverse() meets 1e-5 at κ = 1e3 and 1e-4 at κ = 1e6 (float64 reference)", async () => {
  const rng = new Rng(2024);
  for (const [n, kappa, bound] of [[150, 1e3, 1e-5], [200, 1e6, 1e-4], [129, 1e6, 1e-4]]) {
    const m = withCondition(n, kappa, rng);
    const ref = inverse64(m, n);
    const M = await upload(m, [n, n], `cond${kappa}`);
    const plain = await spdInverse(M, { maxRefine: 0 });
    const X = await spdInverse(M);
    const errPlain = relFrob(await plain.read(), ref);
    const err = relFrob(await X.read(), ref);
    assert.ok(err < bound, `n=${n} κ=${kappa}: relative error ${err} (plain f32 ${errPlain})`);
    // The refinement is what makes the difference at κ = 1e6 (guards against a no-op refinement).
    if (kappa >= 1e6) assert.ok(errPlain > 10 * bound, `plain f32 already ${errPlain}`);
    // Symmetric output.
    const x = await X.read();
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < i; j++) assert.equal(x[i * n + j], x[j * n + i]);
    }
  }
});

Deno.test("spdInverse() on blocked sizes (block inverse from the factor tree, lower-triangle products)", async () => {
  // n > 256: the block inverse over several tree levels, and the lower-block-triangle products
  // of the factor correction (and of Newton steps where the error estimate asks for them).
  const rng = new Rng(21);
  for (const [n, kappa, bound] of [[300, 1e4, 1e-5], [520, 1e3, 1e-5]]) {
    const m = withCondition(n, kappa, rng);
    const ref = inverse64(m, n, 0.001);
    const X = await spdInverse(await upload(m, [n, n], `cond${n}`), { damp: 0.001 });
    const x = await X.read();
    const err = relFrob(x, ref);
    assert.ok(err < bound, `n=${n} κ=${kappa}: relative error ${err}`);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < i; j++) assert.equal(x[i * n + j], x[j * n + i], `X[${i}, ${j}]`);
    }
    X.dispose();
  }
});

Deno.test("spdInverse() refines to its tol: factor correction alone, or Newton steps after it", async () => {
  const rt = await gpu();
  const rng = new Rng(22);
  const n = 300;
  const m = withCondition(n, 1e3, rng);
  const ref = inverse64(m, n);
  const M = await upload(m, [n, n], "tol300");
  const plain = relFrob(await (await spdInverse(M, { maxRefine: 0 })).read(), ref);
  const runs = [];
  for (const tol of [1e-4, 2e-6, 1e-7]) {
    const d0 = rt.stats.dispatches;
    const X = await spdInverse(M, { tol });
    runs.push({ tol, err: relFrob(await X.read(), ref), dispatches: rt.stats.dispatches - d0 });
    X.dispose();
  }
  const [loose, normal, tight] = runs;
  // The factor correction alone already gains more than an order of magnitude on f32.
  assert.ok(loose.err < plain / 10, `plain ${plain}, factor-corrected ${loose.err}`);
  for (const r of [loose, normal, tight]) assert.ok(r.err <= 2 * r.tol, JSON.stringify(r));
  // A tight tol takes Newton steps the loose one skips.
  assert.ok(tight.dispatches > loose.dispatches, JSON.stringify(runs));
  assert.ok(tight.err < 3e-7, `tight: ${tight.err}`);
  await assert.rejects(() => spdInverse(M, { tol: 0 }), /tol 0 must be positive/);
});

Deno.test("spdInverse() applies relative damping like the float64 reference", async () => {
  const rng = new Rng(9);
  const n = 90;
  // A rank-deficient PSD matrix: only the damping makes it invertible.
  const g = rng.normals(n * 30);
  const m = Float32Array.from(matmulRef(g, g, n, n, 30, false, true));
  const X = await spdInverse(await upload(m, [n, n]), { damp: 0.01 });
  const err = relFrob(await X.read(), inverse64(m, n, 0.01));
  assert.ok(err < 1e-5, `relative error ${err}`);
});

Deno.test("spdInverse() reports a singular matrix, or retries with more damping on request", async () => {
  const m = [1, 1, 0, 1, 1, 0, 0, 0, 1];
  const M = await upload(m, [3, 3], "A_hat");
  await assert.rejects(() => spdInverse(M), (e: unknown) => {
    assert.ok(e instanceof NotPositiveDefiniteError);
    assert.equal(e.pivot, 1);
    assert.equal(e.damp, 0);
    assert.match(e.message, /A_hat.*λ = 0.*pivot 1/);
    return true;
  });
  const warnings: string[] = [];
  const warn = console.warn;
  console.warn = (msg: string) => warnings.push(msg);
  let X: Tensor;
  try {
    X = await spdInverse(M, { retryDamping: true });
  } finally {
    console.warn = warn;
  }
  const used = Number(/damping λ = ([0-9.e-]+)$/.exec(warnings[warnings.length - 1])![1]);
  assert.ok(used > 0, `warnings: ${warnings.join(" | ")}`);
  const err = relFrob(await X.read(), inverse64(m, 3, used));
  assert.ok(err < 1e-4, `relative error ${err} with λ = ${used}`);
  // Negative definite even after a small damping: still an error without retry.
  await assert.rejects(
    () => spdInverse(M, { damp: 1e-9 }),
    (e: unknown) => e instanceof NotPositiveDefiniteError && e.damp === 1e-9,
  );
});

Deno.test("spdInverse(), cholesky() and solves free every temporary", async () => {
  const rt = await gpu();
  const rng = new Rng(4);
  for (const n of [130, 300]) {
    const M = await upload(randomSpd(n, rng), [n, n]);
    const B = await upload(rng.normals(n * 2), [n, 2]);
    const Ms = await upload(
      new Float32Array(2 * n * n).fill(0).map((_, i) => {
        const r = Math.floor(i / n) % n, c = i % n;
        return r === c ? 2 : 0.1 / n;
      }),
      [2, n, n],
    );
    const Bs = await upload(rng.normals(2 * n), [2, n, 1]);
    await rt.sync();
    const before = rt.liveBytes;
    for (let i = 0; i < 2; i++) {
      (await spdInverse(M, { damp: 0.01 })).dispose();
      (await cholesky(M)).dispose();
      (await spdSolve(M, B)).dispose();
      (await batchedSpdSolve(Ms, Bs)).dispose();
      triangularSolve(M, B, { lower: false, side: "left" }).dispose();
    }
    await rt.sync();
    assert.equal(rt.liveBytes, before, `n = ${n}`);
  }
});

// ---------------------------------------------------------------------------------------------
// SPD solves
// ---------------------------------------------------------------------------------------------

Deno.test("spdSolve() meets 1e-4 at κ = 1e6 and handles vectors and damping", async () => {
  const rng = new Rng(77);
  const n = 180, k = 4;
  const m = withCondition(n, 1e6, rng);
  const b = rng.normals(n * k);
  const X = await spdSolve(await upload(m, [n, n]), await upload(b, [n, k]));
  const err = relFrob(await X.read(), spdSolve64(m, n, b, k));
  assert.ok(err < 1e-4, `relative error ${err}`);
  // A vector right-hand side and relative damping.
  const m2 = randomSpd(17, rng);
  const b2 = rng.normals(17);
  const x2 = await spdSolve(await upload(m2, [17, 17]), await upload(b2, [17]), { damp: 0.1 });
  assert.deepStrictEqual(x2.shape, [17]);
  const ref2 = Array.from(matmulRef(inverse64(m2, 17, 0.1), b2, 17, 1, 17));
  assertClose(await x2.read(), ref2, 1e-5, 1e-7);
});

Deno.test("batchedSpdSolve() matches float64 per system and names a failing system", async () => {
  const rng = new Rng(31);
  // 200 and 300 exceed what one small workgroup may loop over on llvmpipe (65,535 loop
  // iterations per invocation): they must take the wider-workgroup or one-by-one paths.
  for (
    const [b, n, k, kappa] of [[1, 1, 1, 1], [5, 17, 3, 1e3], [3, 70, 2, 1e5], [2, 200, 2, 1e3], [
      1,
      300,
      1,
      1e3,
    ]]
  ) {
    const ms = new Float32Array(b * n * n), bs = rng.normals(b * n * k);
    for (let s = 0; s < b; s++) ms.set(withCondition(n, kappa, rng), s * n * n);
    const X = await batchedSpdSolve(await upload(ms, [b, n, n]), await upload(bs, [b, n, k]));
    const x = await X.read();
    for (let s = 0; s < b; s++) {
      const ref = spdSolve64(
        ms.subarray(s * n * n, (s + 1) * n * n),
        n,
        bs.subarray(s * n * k, (s + 1) * n * k),
        k,
      );
      const err = relFrob(x.subarray(s * n * k, (s + 1) * n * k), ref);
      assert.ok(err < 1e-5, `b=${b} n=${n} κ=${kappa} system ${s}: relative error ${err}`);
    }
  }
  // Damping per system, and a 2-D right-hand side.
  const n = 6;
  const ms = new Float32Array(2 * n * n);
  for (let s = 0; s < 2; s++) ms.set(randomSpd(n, rng), s * n * n);
  const bs = rng.normals(2 * n);
  const X = await batchedSpdSolve(await upload(ms, [2, n, n]), await upload(bs, [2, n]), {
    damp: 0.5,
  });
  assert.deepStrictEqual(X.shape, [2, n]);
  const x = await X.read();
  for (let s = 0; s < 2; s++) {
    const inv = inverse64(ms.subarray(s * n * n, (s + 1) * n * n), n, 0.5);
    assertClose(
      x.subarray(s * n, (s + 1) * n),
      matmulRef(inv, bs.subarray(s * n), n, 1, n),
      1e-5,
      1e-7,
    );
  }
  // System 2 of 3 is singular at pivot 4.
  const bad = new Float32Array(3 * n * n);
  for (let s = 0; s < 3; s++) for (let i = 0; i < n; i++) bad[s * n * n + i * n + i] = 1;
  bad[2 * n * n + 4 * n + 4] = 0;
  const Bad = await upload(bad, [3, n, n], "Cm");
  await assert.rejects(
    () => batchedSpdSolve(Bad, Tensor.emptySync(Bad.rt, [3, n, 1])),
    (e: unknown) => {
      assert.ok(e instanceof NotPositiveDefiniteError);
      assert.equal(e.pivot, 4);
      assert.match(e.message, /Cm \(system 2 of 3\).*pivot 4/);
      return true;
    },
  );
});

Deno.test("batchedSpdSolve() of systems too large for one workgroup: odd size, damping, failures", async () => {
  // n = 257 > what one workgroup may loop over on llvmpipe: all systems go through the stacked
  // blocked path at once (on other adapters through the one-workgroup kernel; same results).
  const rng = new Rng(44);
  const b = 3, n = 257, k = 2;
  const ms = new Float32Array(b * n * n);
  for (let s = 0; s < b; s++) ms.set(withCondition(n, 10 ** (2 + s), rng), s * n * n);
  const bs = rng.normals(b * n * k);
  const Ms = await upload(ms, [b, n, n], "stack");
  const X = await batchedSpdSolve(Ms, await upload(bs, [b, n, k]), { damp: 1e-3 });
  assert.deepStrictEqual(X.shape, [b, n, k]);
  const x = await X.read();
  for (let s = 0; s < b; s++) {
    const inv = inverse64(ms.subarray(s * n * n, (s + 1) * n * n), n, 1e-3);
    const ref = matmulRef(inv, bs.subarray(s * n * k, (s + 1) * n * k), n, k, n);
    const err = relFrob(x.subarray(s * n * k, (s + 1) * n * k), ref);
    assert.ok(err < 1e-5, `system ${s}: relative error ${err}`);
  }
  // One column per system given as [b, n]; system 1 of 3 fails at pivot 200.
  const bad = new Float32Array(b * n * n);
  for (let s = 0; s < b; s++) for (let i = 0; i < n; i++) bad[s * n * n + i * n + i] = 1;
  bad[n * n + 200 * n + 200] = -1;
  const Bad = await upload(bad, [b, n, n], "Cm257");
  const ones = await upload(new Float32Array(b * n).fill(1), [b, n]);
  await assert.rejects(() => batchedSpdSolve(Bad, ones), (e: unknown) => {
    assert.ok(e instanceof NotPositiveDefiniteError);
    assert.equal(e.pivot, 200);
    assert.match(e.message, /Cm257 \(system 1 of 3\).*pivot 200/);
    return true;
  });
  bad[n * n + 200 * n + 200] = 1;
  const Y = await batchedSpdSolve(await upload(bad, [b, n, n]), ones);
  assert.deepStrictEqual(Y.shape, [b, n]);
  assertClose(await Y.read(), new Float32Array(b * n).fill(1), 0, 1e-6);
});

Deno.test("cholesky(), spdInverse(), spdSolve() and batchedSpdSolve() read only the lower triangle", async () => {
  const rng = new Rng(8);
  const n = 40;
  const m = randomSpd(n, rng);
  const garbled = Float32Array.from(m);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) garbled[i * n + j] = 1e3 * rng.normal();
  }
  const G = await upload(garbled, [n, n], "garbled");
  assert.ok(relFrob(await (await cholesky(G)).read(), cholesky64(m, n)) < 2e-6);
  assert.ok(
    relFrob(await (await spdInverse(G, { damp: 0.01 })).read(), inverse64(m, n, 0.01)) < 1e-6,
  );
  const b = rng.normals(n);
  const x = await (await spdSolve(G, await upload(b, [n]))).read();
  assert.ok(relFrob(x, spdSolve64(m, n, b, 1)) < 1e-6);
  const xb =
    await (await batchedSpdSolve(await upload(garbled, [1, n, n]), await upload(b, [1, n]))).read();
  assert.ok(relFrob(xb, spdSolve64(m, n, b, 1)) < 1e-6);
});
