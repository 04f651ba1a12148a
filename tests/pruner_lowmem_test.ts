import assert from "node:assert/strict";
import { fromWeights } from "../model/load.ts";
import type { CausalLM, ModelConfig } from "../model/types.ts";
import { estimateCurvature } from "../curvature/estimate.ts";
import { disposeCurvature } from "../curvature/types.ts";
import { type PruneOptions, pruneShot } from "../pruner/mod.ts";
import { randomWeights, tinyLlamaConfig, tinyOptConfig, weightSource } from "./_tiny_models.ts";
import { Rng } from "./_util.ts";

function seqs(n: number, T: number, vocab: number, seed: number): Int32Array[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => Int32Array.from({ length: T }, () => rng.int(vocab)));
}

async function weightsOf(model: CausalLM): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (const l of model.linears()) {
    out.push(await l.weight.read() as Float32Array);
    if (l.bias) out.push(await l.bias.read() as Float32Array);
  }
  return out;
}

Deno.test("pruneShot({ lowMemory }): one module prepared at a time gives bit-identical weights", async () => {
  const cases: [string, () => ModelConfig, PruneOptions, number][] = [
    ["OPT element OBS", () => tinyOptConfig(), { structure: "element", maxCorrelate: 48 }, 1],
    ["OPT rows and columns OBS", () => tinyOptConfig(), { structure: "rowcol" }, 1],
    ["OPT rows and columns OBD", () => tinyOptConfig(), { structure: "rowcol", obd: true }, 1],
    ["Llama 2:4 OBS", () => tinyLlamaConfig(), { structure: { n: 2, m: 4 }, addupdate: true }, 1],
    ["OPT rows and columns, krank 2", () => tinyOptConfig(), {
      structure: "rowcol",
      eigenfix: true,
    }, 2],
  ];
  for (const [what, config, opts, krank] of cases) {
    const cfg = config();
    const calib = seqs(4, 12, cfg.vocabSize, 7);
    const run = async (lowMemory: boolean) => {
      const model = await fromWeights(cfg, weightSource(randomWeights(cfg, 3)));
      const curv = await estimateCurvature(model, calib, {
        kind: "kfac",
        useIad: true,
        krank,
        kpcaIter: 2,
      });
      const rt = model.linears()[0].weight.rt;
      const before = rt.liveBytes;
      rt.resetPeak();
      const report = await pruneShot(model, curv, 0.3, { ...opts, lowMemory });
      const peak = rt.peakBytes - before;
      disposeCurvature(curv);
      const w = await weightsOf(model);
      model.dispose();
      return { report, w, peak };
    };
    const a = await run(false), b = await run(true);
    assert.ok(a.report.sparsity > 0.1, `${what}: sparsity ${a.report.sparsity}`);
    assert.equal(b.report.threshold, a.report.threshold, what);
    assert.equal(b.report.removedUnits, a.report.removedUnits, what);
    assert.equal(b.report.sparsity, a.report.sparsity, what);
    a.w.forEach((x, i) => assert.deepEqual(b.w[i], x, `${what}: tensor ${i}`));
    // Inverses and weight copies of one module at a time instead of all of them.
    assert.ok(b.peak < a.peak, `${what}: peak ${b.peak} bytes with lowMemory, ${a.peak} without`);
  }
});

Deno.test("estimateCurvature({ lowMemory }): one buffer per factor, the same factors up to f32 rounding", async () => {
  const cfg = tinyOptConfig();
  const model = await fromWeights(cfg, weightSource(randomWeights(cfg, 4)));
  // 9 sequences: the default folds a second buffer into each factor every 3 sequences.
  const calib = seqs(9, 10, cfg.vocabSize, 8);
  const rt = model.linears()[0].weight.rt;
  const peakOf = async (lowMemory: boolean) => {
    const before = rt.liveBytes;
    rt.resetPeak();
    const c = await estimateCurvature(model, calib, { kind: "kfac", useIad: true, lowMemory });
    return { c, peak: rt.peakBytes - before, kept: rt.liveBytes - before };
  };
  const { c: plain, peak: p0, kept } = await peakOf(false);
  const { c: lean, peak: p1 } = await peakOf(true);
  // The default holds a second buffer per factor during the pass; lowMemory only the factors
  // (plus the pass's activations).
  assert.ok(p0 >= 2 * kept, `default peak ${p0}, factors ${kept}`);
  assert.ok(p1 < p0 - kept / 2, `lowMemory peak ${p1}, default ${p0}, factors ${kept}`);
  let compared = 0;
  for (const [name, l] of plain) {
    const m = lean.get(name)!;
    for (const [x, y] of [...l.G.map((g, i) => [g, m.G[i]]), ...l.A.map((a, i) => [a, m.A[i]])]) {
      const u = await x.read() as Float32Array, v = await y.read() as Float32Array;
      let num = 0, den = 0;
      for (let i = 0; i < u.length; i++) num += (u[i] - v[i]) ** 2, den += u[i] ** 2;
      assert.ok(
        Math.sqrt(num / den) < 1e-5,
        `${name}: relative difference ${Math.sqrt(num / den)}`,
      );
      compared++;
    }
  }
  assert.equal(compared, 2 * model.linears().length);
  disposeCurvature(plain);
  disposeCurvature(lean);
  model.dispose();
});
