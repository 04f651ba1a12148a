import assert from "node:assert/strict";
import { fromWeights } from "../model/load.ts";
import type { CausalLM } from "../model/types.ts";
import { presetFor, runSchedule, sparsityStats } from "../pruner/mod.ts";
import { randomWeights, tinyLlamaConfig, tinyOptConfig, weightSource } from "./_tiny_models.ts";
import { randomSequences } from "./_util.ts";

async function meanNll(model: CausalLM, xs: Int32Array[]): Promise<number> {
  let s = 0;
  for (const x of xs) s += await model.nll(x);
  return s / xs.length;
}

Deno.test("runSchedule() on a tiny random OPT: structured LLM Surgeon with LoRA between shots", async () => {
  const cfg = tinyOptConfig();
  const model = await fromWeights(cfg, weightSource(randomWeights(cfg, 1)));
  const calib = randomSequences(3, 12, cfg.vocabSize, 4);
  const seen: number[] = [];
  await runSchedule(model, calib, {
    ...presetFor("surgeon-structured", "rowcol"),
    sparsity: 0.3,
    shots: 2,
    lora: { lr: 1e-3, subset: 0.7, epochs: 2 },
    seed: 100,
  }, {
    onShot: async (_k, r) => {
      seen.push(r.sparsity);
      assert.ok(Number.isFinite(await meanNll(model, calib)));
    },
  });
  assert.equal(seen.length, 2);
  assert.ok(seen[0] <= 0.15 + 1e-9 && seen[1] <= 0.3 + 1e-9 && seen[1] > 0.2, `sparsities ${seen}`);
  // LoRA absorption kept every removed row/column removed.
  const st = await sparsityStats(model);
  assert.equal(st.overall, seen[1]);
  assert.ok(model.linears().every((l) => l.adapter === null));
  model.dispose();
});

Deno.test("runSchedule() on a tiny random Llama (no biases): 2:4 LLM Surgeon gives valid patterns", async () => {
  const cfg = tinyLlamaConfig();
  const model = await fromWeights(cfg, weightSource(randomWeights(cfg, 2)));
  const calib = randomSequences(3, 12, cfg.vocabSize, 5);
  const before = await meanNll(model, calib);
  await runSchedule(model, calib, {
    ...presetFor("surgeon-semistructured", { n: 2, m: 4 }),
    sparsity: 0.5,
    shots: 2,
    maxCorrelate: 64,
    seed: 100,
  });
  for (const l of model.linears()) {
    assert.equal(l.bias, null);
    const W = await l.weight.read(), C0 = l.inFeatures;
    for (let r = 0; r < l.outFeatures; r++) {
      for (let g = 0; g + 4 <= C0; g += 4) {
        const zeros = [0, 1, 2, 3].filter((t) => W[r * C0 + g + t] === 0).length;
        assert.ok(zeros >= 2, `${l.name} row ${r} group ${g / 4}: ${zeros} zeros`);
      }
    }
  }
  const st = await sparsityStats(model);
  assert.ok(st.overall >= 0.5, `sparsity ${st.overall}`);
  const after = await meanNll(model, calib);
  assert.ok(Number.isFinite(after) && after > before - 1, `nll ${before} → ${after}`);
  model.dispose();
});
