import assert from "node:assert/strict";
import { generateIds, pickToken } from "../model/generate.ts";
import { fromWeights, loadModel } from "../model/load.ts";
import type { DecoderLM } from "../model/transformer.ts";
import { assertLogitsClose, referenceLogits, referenceLoss } from "./_reference_nets.ts";
import {
  makeTinyModelDir,
  randomWeights,
  tinyLlamaConfig,
  tinyOptConfig,
  weightSource,
} from "./_tiny_models.ts";
import { assertClose } from "./_util.ts";

const IDS = Int32Array.from([1, 5, 17, 33, 8, 8, 39, 0, 12, 21, 4, 30, 2]);

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
      assertLogitsClose(await model.logits(IDS), referenceLogits(cfg, w, IDS), label);
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

Deno.test("generation: the KV-cache path gives the same tokens as recomputing from scratch (greedy and sampled)", async () => {
  for (
    const cfg of [tinyLlamaConfig({ sliding_window: 5, model_type: "mistral" }), tinyOptConfig()]
  ) {
    const model = await fromWeights(cfg, weightSource(randomWeights(cfg, 31)));
    try {
      const prompt = Int32Array.from([2, 7, 9, 11]);
      for (const opts of [{ temperature: 0 }, { temperature: 0.9, topP: 0.8, seed: 5 }]) {
        const a = await generateIds(model, prompt, { ...opts, maxTokens: 12, eosId: null });
        const b = await generateIds(model, prompt, {
          ...opts,
          maxTokens: 12,
          eosId: null,
          useCache: false,
        });
        assert.equal(a.length, 12);
        assert.deepEqual(a, b, `${cfg.modelType} ${JSON.stringify(opts)}`);
      }
      // greedy: every generated token is the argmax of the reference logits of the prefix
      const g = await generateIds(model, prompt, { maxTokens: 4, eosId: null });
      const w = randomWeights(cfg, 31);
      const seq = [...prompt];
      for (const id of g) {
        const z = referenceLogits(cfg, w, seq);
        const V = cfg.vocabSize, off = (seq.length - 1) * V;
        let best = 0;
        for (let c = 1; c < V; c++) if (z[off + c] > z[off + best]) best = c;
        assert.equal(id, best);
        seq.push(id);
      }
    } finally {
      model.dispose();
    }
  }
});

Deno.test("pickToken: greedy argmax, top-p keeps the smallest sufficient set", () => {
  const z = Float32Array.from([0, Math.log(6), Math.log(3), 0]); // p ∝ 1, 6, 3, 1
  assert.equal(pickToken(z, 0, 1, 0.99), 1);
  // top-p 0.5: only token 1 (6/11 ≥ 0.5) survives, whatever u is
  for (const u of [0, 0.5, 0.999]) assert.equal(pickToken(z, 1, 0.5, u), 1);
  // full distribution: u just below 6/11 → token 1; just above → token 2 (order 1, 2, 0, 3)
  assert.equal(pickToken(z, 1, 1, 6 / 11 - 1e-6), 1);
  assert.equal(pickToken(z, 1, 1, 6 / 11 + 1e-6), 2);
  assert.throws(() => pickToken(z, -1, 1, 0), /temperature/);
});

Deno.test("generate(text): a tiny Llama folder generates and decodes text", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tiny-llama-" });
  try {
    await makeTinyModelDir(dir, "llama", 2);
    const model = await loadModel(dir);
    const text = await model.generate("abc", { maxTokens: 6, temperature: 0 });
    assert.equal(typeof text, "string");
    const ids = model.tokenizer!.encode("abc");
    assert.equal(ids[0], 1, "Llama prepends <s> = 1");
    const want = await generateIds(model as DecoderLM, ids, { maxTokens: 6 });
    assert.equal(text, model.tokenizer!.decode(want));
    model.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
