import assert from "node:assert/strict";
import { estimateCurvature } from "../curvature/estimate.ts";
import { CurvatureError, disposeCurvature } from "../curvature/types.ts";
import { optLikeToy, TapReplayModel } from "../curvature/_toy.ts";
import { assertClose, Rng } from "./_util.ts";

function outerSum(x: Float64Array, T: number, n: number, acc: Float64Array, scale: number): void {
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < n; i++) {
      const xi = x[t * n + i];
      if (xi === 0) continue;
      for (let j = 0; j < n; j++) acc[i * n + j] += scale * xi * x[t * n + j];
    }
  }
}

const frob = (m: ArrayLike<number>) => Math.sqrt(Array.from(m).reduce((s, v) => s + v * v, 0));

Deno.test("estimateCurvature() KFAC-IAD reproduces the R8 hand example (balancing)", async () => {
  const model = await TapReplayModel.of(1, 2, [{ a: [[1, 2], [3, 0]], g: [[1], [0]] }]);
  const curv = await estimateCurvature(model, model.seqs(), { kind: "kfac", useIad: true });
  const l = curv.get("replay.layers.0.q_proj")!;
  const G = await l.G[0].read(), A = await l.A[0].read();
  assertClose(G, [1.668497], 1e-6, 0, "G");
  const s = 0.299671;
  assertClose(A, [5 * s, 1 * s, 1 * s, 2 * s], 2e-6, 0, "A");
  // G⊗A = 0.5·A_raw and equal norms.
  assertClose([G[0] * A[0]], [2.5], 1e-6, 0, "G⊗A");
  assertClose([frob(G)], [frob(A)], 1e-6, 0, "norms");
  disposeCurvature(curv);
  model.dispose();
});

Deno.test("estimateCurvature() KFAC-IAD, Activations and the diagonal equal brute-force sums over a toy model's taps", async () => {
  const model = await optLikeToy(3);
  const rng = new Rng(5);
  const seqs = [0, 1].map(() => Int32Array.from({ length: 4 }, () => rng.int(11)));
  const taps = await Promise.all(seqs.map((s) => model.hostTaps(s)));
  const N = 8;
  const kfac = await estimateCurvature(model, seqs, { kind: "kfac", useIad: true, diagonal: true });
  const act = await estimateCurvature(model, seqs, { kind: "activations" });
  for (const [k, lin] of model.linears().entries()) {
    const R = lin.outFeatures, C = lin.inFeatures + (lin.bias ? 1 : 0);
    const G = new Float64Array(R * R), A = new Float64Array(C * C), D = new Float64Array(R * C);
    for (const t of taps) {
      // The last position's output gradient is exactly zero (causal model, §2.1).
      for (let r = 0; r < R; r++) assert.equal(t.g[k][3 * R + r], 0, "g_{T-1} = 0");
      outerSum(t.g[k], 4, R, G, 1 / N);
      outerSum(t.a[k], 4, C, A, 1 / N);
      for (let s = 0; s < 4; s++) {
        for (let r = 0; r < R; r++) {
          for (let c = 0; c < C; c++) {
            D[r * C + c] += (t.g[k][s * R + r] * t.a[k][s * C + c]) ** 2 / N;
          }
        }
      }
    }
    const gamma = frob(G), alpha = frob(A), m = Math.sqrt(gamma * alpha);
    const l = kfac.get(lin.name)!;
    assertClose(
      await l.G[0].read(),
      G.map((v) => v * m / gamma),
      1e-4,
      1e-7 * m / gamma,
      `${lin.name} G`,
    );
    assertClose(await l.A[0].read(), A.map((v) => v * m / alpha), 1e-4, 1e-7, `${lin.name} A`);
    assertClose(await l.D!.read(), D, 1e-4, 1e-9, `${lin.name} D`);
    const la = act.get(lin.name)!;
    assert.equal(la.G.length, 0);
    // Accumulated over both sequences (quirk Q2 fixed), not just the last one.
    assertClose(await la.A[0].read(), A, 1e-5, 1e-7, `${lin.name} activations A`);
  }
  disposeCurvature(kfac);
  disposeCurvature(act);
  model.dispose();
});

Deno.test("estimateCurvature() stops on non-finite taps naming the module and the sequence", async () => {
  const good = { a: [[1, 2], [3, 1]], g: [[1], [0]] };
  const bad = { a: [[1, NaN], [3, 1]], g: [[1], [0]] };
  const model = await TapReplayModel.of(1, 2, [good, good, bad]);
  await assert.rejects(
    () => estimateCurvature(model, model.seqs(), { kind: "kfac", useIad: true }),
    (e: Error) =>
      e instanceof CurvatureError && /replay\.layers\.0\.q_proj/.test(e.message) &&
      /sequence 2/.test(e.message),
  );
  model.dispose();
});

Deno.test("estimateCurvature() rejects an odd --kpca_iter for power iteration (quirk Q1)", async () => {
  const model = await TapReplayModel.of(1, 2, [{ a: [[1, 2], [3, 1]], g: [[1], [0]] }]);
  for (const kpcaIter of [1, 3]) {
    await assert.rejects(
      () => estimateCurvature(model, model.seqs(), { kind: "kfac", kpcaIter }),
      (e: Error) =>
        e instanceof CurvatureError && /kpca_iter/.test(e.message) && /even/.test(e.message),
    );
  }
  // IAD with krank 1 does not iterate, so the default count is fine there.
  const ok = await estimateCurvature(model, model.seqs(), {
    kind: "kfac",
    useIad: true,
    kpcaIter: 1,
  });
  disposeCurvature(ok);
  const id = await estimateCurvature(model, [], { kind: "identity" });
  assert.deepEqual(id.get("replay.layers.0.q_proj")!.G, []);
  model.dispose();
});
