/**
 * Tests of kernels/linalg_big.ts: Cholesky, triangular solves, SPD solves and SPD inverses of
 * matrices larger than one storage binding. The binding limit is lowered to 64 KiB (a 128×128
 * f32 matrix fits, 129×129 does not), so n = 150…300 runs one or two levels of blocking; results
 * are compared with float64 references written here.
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
import {
  choleskyBlocks,
  spdInverseBlocks,
  spdSolveBlocks,
  triangularSolveBlocks,
} from "../kernels/linalg_big.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertClose, matmulRef, relFrob, Rng } from "./_util.ts";
import {
  cholesky64,
  damped64,
  inverse64,
  randomSpd,
  spdSolve64,
  triSolve64,
  triSolveSide64,
  upload,
  withCondition,
} from "./_linalg_ref.ts";

/** The binding limit of these tests: 128² f32 values. */
const LIMIT = 64 * 1024;

/** Runs `fn` with bindings limited to {@link LIMIT} bytes. */
async function limited<T>(fn: () => Promise<T>): Promise<T> {
  const restore = (await gpu()).limitBinding(LIMIT);
  try {
    return await fn();
  } finally {
    restore();
  }
}

/** The same matrix with its strictly upper triangle overwritten by large garbage. */
function garbleUpper(m: Float32Array, n: number, rng: Rng): Float32Array {
  const g = Float32Array.from(m);
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) g[i * n + j] = 1e3 * rng.normal();
  return g;
}

// ---------------------------------------------------------------------------------------------
// Cholesky
// ---------------------------------------------------------------------------------------------

Deno.test("choleskyBlocks() matches float64 with one and two levels of blocking", async () => {
  const rng = new Rng(21);
  await limited(async () => {
    // 150: 64 + 86 (one level); 257 and 300: a trailing block over the limit (two levels).
    for (const n of [150, 257, 300]) {
      const m = randomSpd(n, rng);
      const M = await upload(garbleUpper(m, n, rng), [n, n]);
      const L = await choleskyBlocks(M);
      const l = await L.read();
      const err = relFrob(l, cholesky64(m, n));
      assert.ok(err < 2e-6, `n = ${n}: relative error ${err}`);
      for (let i = 0; i < n; i++) {
        for (let j = i + 1; j < n; j++) assert.equal(l[i * n + j], 0, `L[${i}, ${j}]`);
      }
      M.dispose();
      L.dispose();
    }
  });
  // Without a lowered limit the blocks fit at once; below 128 the split is not a multiple of 64.
  for (const n of [1, 2, 100]) {
    const m = randomSpd(n, rng);
    const L = await choleskyBlocks(await upload(m, [n, n]));
    assert.ok(relFrob(await L.read(), cholesky64(m, n)) < 2e-6, `n = ${n}`);
  }
});

Deno.test("choleskyBlocks() names the matrix and the pivot's index in the whole matrix", async () => {
  await limited(async () => {
    const n = 300;
    // A diagonal matrix with one negative entry: in the leading block, in the trailing block
    // after one level (200 ≥ 128), and in the trailing block of the second level (280 ≥ 192).
    for (const bad of [5, 140, 280]) {
      const m = new Float32Array(n * n);
      for (let i = 0; i < n; i++) m[i * n + i] = i === bad ? -3 : 2;
      const M = await upload(m, [n, n], "A_fc1");
      await assert.rejects(() => choleskyBlocks(M, { name: "layers.2.fc1 A" }), (e: unknown) => {
        assert.ok(e instanceof NotPositiveDefiniteError);
        assert.equal(e.pivot, bad);
        assert.equal(e.matrix, "layers.2.fc1 A");
        assert.equal(e.value, -3);
        assert.match(e.message, new RegExp(`layers\\.2\\.fc1 A.*pivot ${bad} is -3`));
        return true;
      });
      M.dispose();
    }
    // NaN is reported as a failed pivot, never returned.
    const nan = randomSpd(140, new Rng(2));
    nan[139 * 140 + 3] = NaN;
    await assert.rejects(() => upload(nan, [140, 140]).then(choleskyBlocks), (e: unknown) => {
      assert.ok(e instanceof NotPositiveDefiniteError);
      assert.ok(e.pivot >= 64, `pivot ${e.pivot}`);
      return true;
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Triangular solves
// ---------------------------------------------------------------------------------------------

Deno.test("triangularSolveBlocks() solves every variant of triangle, transpose and side", async () => {
  const rng = new Rng(8);
  await limited(async () => {
    for (const n of [150, 260]) {
      const k = 3;
      // A well-conditioned triangle; the unused triangle holds garbage.
      const t = rng.normals(n * n, 0.4 / Math.sqrt(n));
      for (let i = 0; i < n; i++) t[i * n + i] = 1 + rng.next();
      const T = await upload(t, [n, n], "T");
      for (const lower of [true, false]) {
        for (const transpose of [false, true]) {
          for (const side of ["left", "right"] as const) {
            if (n > 150 && (side === "right" || transpose)) continue; // two levels: one per side
            const b = rng.normals(n * k);
            const B = await upload(b, side === "left" ? [n, k] : [k, n], "B");
            const syncs = T.rt.stats.syncs;
            const X = triangularSolveBlocks(T, B, { lower, transpose, side });
            assert.equal(T.rt.stats.syncs, syncs, "recorded without waiting for the GPU");
            const ref = triSolveSide64(t, n, b, k, lower, transpose, side);
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
});

Deno.test("triangularSolveBlocks() takes 1-D and empty right-hand sides and refuses bad shapes", async () => {
  const rng = new Rng(10);
  await limited(async () => {
    const n = 200;
    const t = rng.normals(n * n, 0.4 / Math.sqrt(n));
    for (let i = 0; i < n; i++) t[i * n + i] = 2;
    const T = await upload(t, [n, n], "T");
    const b = rng.normals(n);
    const x = triangularSolveBlocks(T, await upload(b, [n], "b"), { lower: false });
    assert.deepStrictEqual(x.shape, [n]);
    assertClose(await x.read(), triSolve64(t, n, b, 1, false, false), 1e-4, 1e-5);
    assert.throws(
      () => triangularSolveBlocks(T, x, { lower: true, side: "right" }),
      /triangularSolveBlocks\(T, .*side/,
    );
    assert.throws(
      () => triangularSolveBlocks(T, Tensor.emptySync(T.rt, [n + 1, 2]), { lower: true }),
      /does not match the 200×200 triangle/,
    );
    // No right-hand sides: an empty result, even though T is over the binding limit.
    const none = triangularSolveBlocks(T, Tensor.emptySync(T.rt, [n, 0]), { lower: true });
    assert.deepStrictEqual(none.shape, [n, 0]);
    const noSolve = await spdSolveBlocks(T, Tensor.emptySync(T.rt, [n, 0]));
    assert.deepStrictEqual(noSolve.shape, [n, 0]);
  });
});

// ---------------------------------------------------------------------------------------------
// SPD solve and inverse
// ---------------------------------------------------------------------------------------------

Deno.test("spdSolveBlocks() matches float64 at κ = 10, 1e3, 1e6; vectors; damping", async () => {
  const rng = new Rng(33);
  await limited(async () => {
    const n = 300, k = 4;
    for (const kappa of [10, 1e3, 1e6]) {
      const m = withCondition(n, kappa, rng);
      const b = rng.normals(n * k);
      const ref = spdSolve64(m, n, b, k);
      const M = await upload(garbleUpper(m, n, rng), [n, n], `cond${kappa}`);
      const B = await upload(b, [n, k], "B");
      const err = relFrob(await (await spdSolveBlocks(M, B)).read(), ref);
      // Measured ≈ 3e-8 at every κ (float64-like).
      assert.ok(err < 1e-6, `κ = ${kappa}: relative error ${err}`);
      if (kappa === 1e6) {
        // Without refinement it is an f32 solve (≈ 4e-3 measured): the refinement does the work.
        const plain = await spdSolveBlocks(M, B, { maxRefine: 0 });
        const errPlain = relFrob(await plain.read(), ref);
        assert.ok(errPlain > 1e-4 && errPlain < 5e-2, `κ = 1e6 unrefined: ${errPlain}`);
      }
      M.dispose();
      B.dispose();
    }
    // A rank-deficient PSD matrix (rank 40): only the damping over the whole matrix makes it
    // invertible; a 1-D right-hand side.
    const g = rng.normals(n * 40);
    const m = Float32Array.from(matmulRef(g, g, n, n, 40, false, true));
    const b = rng.normals(n);
    const x = await spdSolveBlocks(await upload(m, [n, n]), await upload(b, [n]), { damp: 0.05 });
    assert.deepStrictEqual(x.shape, [n]);
    const err = relFrob(await x.read(), spdSolve64(damped64(m, n, 0.05), n, b, 1));
    assert.ok(err < 1e-6, `damped: relative error ${err}`);
  });
});

Deno.test("spdSolveBlocks() reports the failing pivot of the whole matrix", async () => {
  await limited(async () => {
    const n = 200;
    const m = new Float32Array(n * n);
    for (let i = 0; i < n; i++) m[i * n + i] = 1;
    m[150 * n + 150] = -1; // in the Schur complement (leading block: 128)
    const M = await upload(m, [n, n], "G");
    const B = await upload(new Float32Array(n), [n, 1], "B");
    await assert.rejects(() => spdSolveBlocks(M, B, { damp: 0.5 }), (e: unknown) => {
      assert.ok(e instanceof NotPositiveDefiniteError);
      assert.equal(e.pivot, 150);
      assert.equal(e.damp, 0.5);
      assert.match(e.message, /^G: .*λ = 0\.5.*pivot 150/);
      return true;
    });
  });
});

Deno.test("spdInverseBlocks() matches float64 at κ = 10, 1e3, 1e6 and is symmetric", async () => {
  const rng = new Rng(44);
  await limited(async () => {
    const n = 300;
    for (const kappa of [10, 1e3, 1e6]) {
      const m = withCondition(n, kappa, rng);
      const ref = inverse64(m, n);
      const M = await upload(garbleUpper(m, n, rng), [n, n], `cond${kappa}`);
      const X = await spdInverseBlocks(M);
      const x = await X.read();
      const err = relFrob(x, ref);
      // Measured ≈ 3e-8 at every κ; the bounds for one binding are 1e-5 / 1e-4.
      assert.ok(err < 1e-6, `κ = ${kappa}: relative error ${err}`);
      if (kappa === 1e6) {
        const plain = await spdInverseBlocks(M, { maxRefine: 0 });
        const errPlain = relFrob(await plain.read(), ref);
        assert.ok(errPlain > 1e-4 && errPlain < 5e-2, `κ = 1e6 unrefined: ${errPlain}`);
        plain.dispose();
      }
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < i; j++) assert.equal(x[i * n + j], x[j * n + i], `X[${i}, ${j}]`);
      }
      M.dispose();
      X.dispose();
    }
  });
});

Deno.test("spdInverseBlocks() damps with the mean diagonal of the whole matrix", async () => {
  const rng = new Rng(5);
  await limited(async () => {
    const n = 160;
    // Rank 30, and the trailing rows scaled up: the blocks' diagonal means differ from the
    // whole matrix's, so a per-block mean would give a visibly different inverse.
    const g = rng.normals(n * 30);
    for (let i = 100; i < n; i++) for (let j = 0; j < 30; j++) g[i * 30 + j] *= 4;
    const m = Float32Array.from(matmulRef(g, g, n, n, 30, false, true));
    const X = await spdInverseBlocks(await upload(m, [n, n]), { damp: 0.01 });
    const ref = inverse64(m, n, 0.01);
    const err = relFrob(await X.read(), ref);
    assert.ok(err < 1e-6, `relative error ${err}`);
    // The shift of the leading 64×64 block's own mean would be far off.
    const own = Float64Array.from(m);
    let tr = 0;
    for (let i = 0; i < 64; i++) tr += m[i * n + i];
    for (let i = 0; i < n; i++) own[i * n + i] += (0.01 * tr) / 64;
    assert.ok(relFrob(inverse64(own, n), ref) > 100 * err);
  });
});

Deno.test("spdSolveBlocks() and spdInverseBlocks() damp a zero leading block", async () => {
  const rng = new Rng(12);
  await limited(async () => {
    // Rows and columns 0…149 are zero: the leading block's own mean diagonal is 0, so the shift
    // of the whole matrix cannot be expressed as a relative damping of that block.
    const n = 200;
    const g = rng.normals(n * 20);
    for (let i = 0; i < 150 * 20; i++) g[i] = 0;
    const m = Float32Array.from(matmulRef(g, g, n, n, 20, false, true));
    const M = await upload(m, [n, n], "G");
    const X = await spdInverseBlocks(M, { damp: 0.1 });
    const ref = inverse64(m, n, 0.1);
    assert.ok(relFrob(await X.read(), ref) < 1e-6, `inverse: ${relFrob(await X.read(), ref)}`);
    const b = rng.normals(n * 2);
    const Y = await spdSolveBlocks(M, await upload(b, [n, 2]), { damp: 0.1 });
    const err = relFrob(await Y.read(), spdSolve64(damped64(m, n, 0.1), n, b, 2));
    assert.ok(err < 1e-6, `solve: ${err}`);
  });
});

Deno.test("spdInverseBlocks() reports a singular matrix, or retries with more damping", async () => {
  await limited(async () => {
    const n = 150;
    // Rows 140 and 141 equal: pivot 141 is zero (in the Schur complement).
    const m = new Float32Array(n * n);
    for (let i = 0; i < n; i++) m[i * n + i] = 1;
    m[141 * n + 140] = m[140 * n + 141] = 1;
    const M = await upload(m, [n, n], "A_hat");
    await assert.rejects(() => spdInverseBlocks(M), (e: unknown) => {
      assert.ok(e instanceof NotPositiveDefiniteError);
      assert.equal(e.pivot, 141);
      assert.equal(e.damp, 0);
      assert.match(e.message, /^A_hat: .*λ = 0 .*pivot 141/);
      return true;
    });
    const warnings: string[] = [];
    const warn = console.warn;
    console.warn = (msg: string) => warnings.push(msg);
    let X: Tensor;
    try {
      X = await spdInverseBlocks(M, { retryDamping: true });
    } finally {
      console.warn = warn;
    }
    const last = warnings[warnings.length - 1] ?? "";
    const used = Number(
      /spdInverseBlocks\(A_hat\): succeeded with damping λ = (\S+)$/.exec(last)?.[1],
    );
    assert.ok(used > 0, `warnings: ${warnings.join(" | ")}`);
    const err = relFrob(await X.read(), inverse64(m, n, used));
    assert.ok(err < 1e-3, `relative error ${err} with λ = ${used}`);
  });
});

Deno.test("the blocked functions free every temporary", async () => {
  const rt = await gpu();
  const rng = new Rng(6);
  await limited(async () => {
    const n = 140;
    const M = await upload(randomSpd(n, rng), [n, n]);
    const B = await upload(rng.normals(n * 2), [n, 2]);
    const Br = await upload(rng.normals(n * 2), [2, n]);
    await rt.sync();
    const before = rt.liveBytes;
    (await choleskyBlocks(M)).dispose();
    triangularSolveBlocks(M, B, { lower: false, transpose: true }).dispose();
    triangularSolveBlocks(M, Br, { lower: true, side: "right" }).dispose();
    (await spdSolveBlocks(M, B, { damp: 0.01 })).dispose();
    (await spdInverseBlocks(M, { damp: 0.01 })).dispose();
    await rt.sync();
    assert.equal(rt.liveBytes, before);
  });
});

Deno.test("linalg.ts's public functions route matrices over one binding to the blocked versions", async () => {
  const rng = new Rng(77);
  const n = 150, k = 3;
  const m = withCondition(n, 100, rng);
  const b = Float32Array.from(rng.normals(n * k));
  await limited(async () => {
    const M = await Tensor.from(m, [n, n]);
    const B = await Tensor.from(b, [n, k]);
    const L = await cholesky(M);
    const l = await L.read();
    assert.ok(relFrob(l, cholesky64(m, n)) < 1e-5, "cholesky");
    const Y = triangularSolve(L, B, { lower: true });
    assertClose(
      await Y.read(),
      triSolve64(l, n, b, k, true, false),
      1e-4,
      1e-5,
      "trsm",
    );
    const X = await spdSolve(M, B, { damp: 0.01 });
    const want = spdSolve64(damped64(m, n, 0.01), n, b, k);
    assert.ok(relFrob(await X.read(), want) < 1e-5, "spdSolve");
    const Inv = await spdInverse(M, { damp: 0.01 });
    const inv = inverse64(m, n, 0.01);
    assert.ok(relFrob(await Inv.read(), inv) < 1e-5, "spdInverse");
    for (const t of [M, B, L, Y, X, Inv]) t.dispose();
  });
});

Deno.test("batchedSpdSolve() splits a batch over one binding into groups and names the failing system", async () => {
  const rng = new Rng(78);
  const b = 7, n = 60; // 7·60²·4 = 100,800 bytes > 64 KiB: groups of 4 systems
  const ms = new Float32Array(b * n * n), bs = Float32Array.from(rng.normals(b * n));
  for (let s = 0; s < b; s++) ms.set(withCondition(n, 50, rng), s * n * n);
  await limited(async () => {
    const Ms = await Tensor.from(ms, [b, n, n]);
    const Bs = await Tensor.from(bs, [b, n]);
    const X = await batchedSpdSolve(Ms, Bs);
    assert.deepStrictEqual(X.shape, [b, n]);
    const x = await X.read();
    for (let s = 0; s < b; s++) {
      const want = spdSolve64(
        ms.subarray(s * n * n, (s + 1) * n * n),
        n,
        bs.subarray(s * n, (s + 1) * n),
        1,
      );
      assert.ok(relFrob(x.subarray(s * n, (s + 1) * n), want) < 1e-5, `system ${s}`);
    }
    // System 5 (in the second group) is not positive definite.
    ms[5 * n * n + 3 * n + 3] = -1e3;
    const Bad = await Tensor.from(ms, [b, n, n], "f32", "G stack");
    await assert.rejects(
      () => batchedSpdSolve(Bad, Bs),
      (e: unknown) =>
        e instanceof NotPositiveDefiniteError && e.system === 5 &&
        /G stack \(system 5 of 7\)/.test(e.message),
    );
    for (const t of [Ms, Bs, X, Bad]) t.dispose();
  });
});

Deno.test("spdInverseBlocks() takes the tol option of spdInverse and refuses a non-positive one", async () => {
  const rng = new Rng(15);
  await limited(async () => {
    const n = 150;
    const m = withCondition(n, 1e3, rng);
    const M = await upload(m, [n, n], "G_tol");
    await assert.rejects(() => spdInverseBlocks(M, { tol: 0 }), /spdInverseBlocks\(G_tol\).*tol 0/);
    const X = await spdInverseBlocks(M, { tol: 1e-7 });
    const err = relFrob(await X.read(), inverse64(m, n));
    assert.ok(err < 1e-6, `relative error ${err}`);
    M.dispose();
    X.dispose();
  });
});

Deno.test("batchedSpdSolve() solves systems that alone exceed one binding one at a time", async () => {
  const rng = new Rng(79);
  const b = 2, n = 140, k = 2; // 140²·4 = 78,400 bytes > 64 KiB per system
  const ms = new Float32Array(b * n * n), bs = Float32Array.from(rng.normals(b * n * k));
  for (let s = 0; s < b; s++) ms.set(withCondition(n, 20, rng), s * n * n);
  await limited(async () => {
    const Ms = await Tensor.from(ms, [b, n, n]);
    const Bs = await Tensor.from(bs, [b, n, k]);
    const X = await batchedSpdSolve(Ms, Bs, { damp: 0.01 });
    assert.deepStrictEqual(X.shape, [b, n, k]);
    const x = await X.read();
    for (let s = 0; s < b; s++) {
      const m = ms.subarray(s * n * n, (s + 1) * n * n);
      const want = spdSolve64(damped64(m, n, 0.01), n, bs.subarray(s * n * k, (s + 1) * n * k), k);
      assert.ok(relFrob(x.subarray(s * n * k, (s + 1) * n * k), want) < 1e-5, `system ${s}`);
    }
    for (const t of [Ms, Bs, X]) t.dispose();
  });
});
