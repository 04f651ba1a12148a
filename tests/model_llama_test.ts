import assert from "node:assert/strict";
import { fromWeights } from "../model/load.ts";
import { referenceLogits, referenceLoss } from "./_reference_nets.ts";
import { randomWeights, tinyLlamaConfig, weightSource } from "./_tiny_models.ts";
import { assertClose, relFrob } from "./_util.ts";

const IDS = Int32Array.from([1, 5, 17, 33, 8, 8, 39, 0, 12, 21, 4, 30, 2]);

function checkLogits(got: Float32Array, want: Float64Array, what: string) {
  const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  assert.ok(relFrob(got, want) <= 1e-4, `${what}: relative error ${relFrob(got, want)}`);
  assertClose(got, want, 0, 1e-4 * scale, what);
}

for (
  const [label, over] of [
    ["GQA 4/2, untied head", {}],
    ["tied head, attention and MLP biases", {
      tie_word_embeddings: true,
      attention_bias: true,
      mlp_bias: true,
    }],
    ["llama3 rope scaling, theta 500000, GQA 4/1", {
      num_key_value_heads: 1,
      rope_theta: 500000,
      rope_scaling: {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 8,
      },
    }],
    ["linear rope scaling, MHA", {
      num_key_value_heads: 4,
      rope_scaling: { type: "linear", factor: 2 },
    }],
    ["Mistral-style sliding window 4", { model_type: "mistral", sliding_window: 4 }],
  ] as const
) {
  Deno.test(`Llama ${label}: logits and nll match the float64 reference`, async () => {
    const cfg = tinyLlamaConfig(over);
    if ("sliding_window" in over) assert.equal(cfg.slidingWindow, 4);
    const w = randomWeights(cfg, 21);
    const model = await fromWeights(cfg, weightSource(w));
    try {
      checkLogits(await model.logits(IDS), referenceLogits(cfg, w, IDS), label);
      assertClose([await model.nll(IDS)], [referenceLoss(cfg, w, IDS)], 1e-5, 1e-6, "nll");
    } finally {
      model.dispose();
    }
  });
}

Deno.test("Llama: a missing tensor is named in the error", async () => {
  const cfg = tinyLlamaConfig();
  const w = randomWeights(cfg, 1);
  w.delete("model.layers.0.mlp.up_proj.weight");
  await assert.rejects(
    () => fromWeights(cfg, weightSource(w)),
    /missing tensor model\.layers\.0\.mlp\.up_proj\.weight/,
  );
});
