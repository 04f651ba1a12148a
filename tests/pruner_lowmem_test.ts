import assert from "node:assert/strict";
import { fromWeights } from "../model/load.ts";
import type { CausalLM, ModelConfig } from "../model/types.ts";
import { estimateCurvature } from "../curvature/estimate.ts";
import { estimateCurvatureInGroups } from "../curvature/host.ts";
import { disposeCurvature } from "../curvature/types.ts";
import { presetFor, type PruneOptions, pruneShot, runSchedule } from "../pruner/mod.ts";
import { randomWeights, tinyLlamaConfig, tinyOptConfig, weightSource } from "./_tiny_models.ts";
import { randomSequences } from "./_util.ts";

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
    const calib = randomSequences(4, 12, cfg.vocabSize, 7);
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
  const calib = randomSequences(9, 10, cfg.vocabSize, 8);
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

Deno.test("estimateCurvatureInGroups(): the same factors bit for bit, one group on the GPU at a time; pruneShot takes them", async () => {
  const cfg = tinyOptConfig({ num_hidden_layers: 3 });
  const calib = randomSequences(4, 12, cfg.vocabSize, 9);
  const make = () => fromWeights(cfg, weightSource(randomWeights(cfg, 5)));
  const opts = { kind: "kfac" as const, useIad: true, diagonal: true };
  // one pass over all layers, factors on the GPU
  const m1 = await make();
  const rt = m1.linears()[0].weight.rt;
  let base = rt.liveBytes;
  rt.resetPeak();
  const dev = await estimateCurvature(m1, calib, opts);
  const peakAll = rt.peakBytes - base;
  // three rounds of one layer each, factors in host memory
  const m2 = await make();
  const lines: string[] = [];
  base = rt.liveBytes;
  rt.resetPeak();
  const host = await estimateCurvatureInGroups(
    m2,
    calib,
    { ...opts, onProgress: (m) => lines.push(m) },
    3,
  );
  const peakGroups = rt.peakBytes - base;
  assert.equal(rt.liveBytes, base, "no factor is left on the GPU");
  assert.ok(peakGroups < peakAll, `peak ${peakGroups} in groups, ${peakAll} in one pass`);
  assert.ok(lines.some((l) => /^layer group 3\/3 \(layers 2–2\): .*host memory/.test(l)), lines[0]);
  assert.equal(host.size, dev.size);
  for (const [name, l] of dev) {
    const h = host.get(name)!;
    assert.equal(h.kind, l.kind);
    const pairs = [
      ...l.G.map((t, i) => [t, h.G[i]] as const),
      ...l.A.map((t, i) => [t, h.A[i]] as const),
    ];
    pairs.push([l.D!, h.D!]);
    for (const [t, f] of pairs) {
      assert.deepEqual(f.shape, t.shape);
      assert.deepEqual(f.data, await t.read(), `${name} ${f.name}`);
    }
  }
  // pruning from host factors: the same weights as from GPU factors
  const r1 = await pruneShot(m1, dev, 0.3, { structure: "rowcol" });
  const r2 = await pruneShot(m2, host, 0.3, { structure: "rowcol" });
  assert.equal(r2.removedUnits, r1.removedUnits);
  const [w1, w2] = [await weightsOf(m1), await weightsOf(m2)];
  w1.forEach((x, i) => assert.deepEqual(w2[i], x, `tensor ${i}`));
  disposeCurvature(dev);
  m1.dispose();
  m2.dispose();
  await assert.rejects(
    () => estimateCurvatureInGroups(m2, calib, opts, 0),
    /--curvature_groups must be a positive integer, got 0/,
  );
});

Deno.test("runSchedule({ curvatureGroups }): two shots give the same model as one pass per shot", async () => {
  const cfg = tinyLlamaConfig();
  const calib = randomSequences(4, 12, cfg.vocabSize, 10);
  const run = async (curvatureGroups: number) => {
    const model = await fromWeights(cfg, weightSource(randomWeights(cfg, 6)));
    await runSchedule(model, calib, {
      ...presetFor("surgeon-unstructured", "element"),
      sparsity: 0.4,
      shots: 2,
      maxCorrelate: 32,
      seed: 100,
      curvatureGroups,
    });
    const w = await weightsOf(model);
    model.dispose();
    return w;
  };
  const [a, b] = [await run(1), await run(2)];
  a.forEach((x, i) => assert.deepEqual(b[i], x, `tensor ${i}`));
  const model = await fromWeights(cfg, weightSource(randomWeights(cfg, 6)));
  await assert.rejects(
    () =>
      runSchedule(model, calib, {
        ...presetFor("surgeon-structured", "rowcol"),
        sparsity: 0.2,
        shots: 1,
        seed: 1,
        reuse: true,
        curvatureGroups: 2,
      }),
    /--reuse .*cannot be combined with --curvature_groups/,
  );
  model.dispose();
});
