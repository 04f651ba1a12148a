import assert from "node:assert/strict";
import { fromWeights } from "../model/load.ts";
import { estimateCurvature } from "../curvature/estimate.ts";
import { disposeCurvature } from "../curvature/types.ts";
import { randomWeights, tinyOptConfig, weightSource } from "./_tiny_models.ts";
import { assertClose, Rng } from "./_util.ts";

Deno.test("estimateCurvature() on a tiny OPT: IAD factors equal sums over the model's own taps; sampled Fisher is seeded", async () => {
  const cfg = tinyOptConfig();
  const model = await fromWeights(cfg, weightSource(randomWeights(cfg, 3)));
  const rng = new Rng(9);
  const seqs = [0, 1].map(() => Int32Array.from({ length: 10 }, () => rng.int(cfg.vocabSize)));
  const N = 20;
  // Brute force: collect every tap on the host and sum outer products in float64.
  const lins = model.linears();
  const G = lins.map((l) => new Float64Array(l.outFeatures ** 2));
  const A = lins.map((l) => new Float64Array((l.inFeatures + 1) ** 2));
  for (const s of seqs) {
    const taps: { k: number; a: Float32Array; g: Float32Array }[] = [];
    const pending: Promise<void>[] = [];
    await model.calibrate(s, (lin, a, g) => {
      const k = lins.indexOf(lin);
      const ac = a.clone(), gc = g!.clone();
      pending.push(
        Promise.all([ac.read(), gc.read()]).then(([av, gv]) => {
          taps.push({ k, a: av, g: gv });
          ac.dispose(), gc.dispose();
        }),
      );
    });
    await Promise.all(pending);
    for (const { k, a, g } of taps) {
      const R = lins[k].outFeatures, C = lins[k].inFeatures + 1;
      for (let t = 0; t < 10; t++) {
        for (let i = 0; i < R; i++) {
          for (let j = 0; j < R; j++) G[k][i * R + j] += g[t * R + i] * g[t * R + j] / N;
        }
        for (let i = 0; i < C; i++) {
          for (let j = 0; j < C; j++) A[k][i * C + j] += a[t * C + i] * a[t * C + j] / N;
        }
      }
    }
  }
  const curv = await estimateCurvature(model, seqs, { kind: "kfac", useIad: true });
  for (const [k, l] of lins.entries()) {
    const f = curv.get(l.name)!;
    const [g, a] = [await f.G[0].read(), await f.A[0].read()];
    const ng = Math.hypot(...G[k]), na = Math.hypot(...A[k]), m = Math.sqrt(ng * na);
    assertClose(g, G[k].map((x) => x * m / ng), 1e-3, 1e-6 * m / ng, `${l.name} G`);
    assertClose(a, A[k].map((x) => x * m / na), 1e-3, 1e-6 * m / na, `${l.name} A`);
  }
  disposeCurvature(curv);
  const s1 = await estimateCurvature(model, seqs, {
    kind: "kfac",
    useIad: true,
    fisherSamples: 1,
    seed: 5,
  });
  const s2 = await estimateCurvature(model, seqs, {
    kind: "kfac",
    useIad: true,
    fisherSamples: 1,
    seed: 5,
  });
  const name = lins[0].name;
  const [x1, x2] = [await s1.get(name)!.G[0].read(), await s2.get(name)!.G[0].read()];
  assert.deepEqual(x1, x2);
  assert.ok(x1.every(Number.isFinite));
  disposeCurvature(s1);
  disposeCurvature(s2);
  model.dispose();
});
