/** config.json parsing: OPT (incl. opt-350m), Llama (GQA, RoPE scaling), Mistral, errors. */
import assert from "node:assert/strict";
import { ConfigError, loadConfig, parseConfig } from "../model/config.ts";
import type { LlamaConfig, OptConfig } from "../model/types.ts";

const DATA = new URL("../../shared/data/", import.meta.url);
const exists = (url: URL) => Deno.stat(url).then(() => true, () => false);

const OPT_125M = {
  activation_function: "relu",
  architectures: ["OPTForCausalLM"],
  bos_token_id: 2,
  do_layer_norm_before: true,
  dropout: 0.1,
  eos_token_id: 2,
  ffn_dim: 3072,
  hidden_size: 768,
  max_position_embeddings: 2048,
  model_type: "opt",
  num_attention_heads: 12,
  num_hidden_layers: 12,
  pad_token_id: 1,
  prefix: "</s>",
  torch_dtype: "float16",
  vocab_size: 50272,
  word_embed_proj_dim: 768,
};

const LLAMA2_7B = {
  architectures: ["LlamaForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  intermediate_size: 11008,
  max_position_embeddings: 4096,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  tie_word_embeddings: false,
  torch_dtype: "float16",
  vocab_size: 32000,
};

function configError(fn: () => unknown, words: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    assert.match(e.message, words);
    return true;
  });
}

Deno.test("config: OPT-125m and opt-350m (project_in/out, post-LN)", () => {
  const c = parseConfig(OPT_125M, "opt-125m/config.json") as OptConfig;
  assert.equal(c.modelType, "opt");
  assert.deepEqual(
    [c.vocabSize, c.hiddenSize, c.numLayers, c.numHeads, c.ffnDim, c.maxPositions],
    [50272, 768, 12, 12, 3072, 2048],
  );
  assert.equal(c.wordEmbedProjDim, 768);
  assert.equal(c.doLayerNormBefore, true);
  assert.equal(c.activation, "relu");
  assert.equal(c.layerNormEps, 1e-5);
  assert.equal(c.enableBias, true);
  assert.equal(c.layerNormAffine, true);
  assert.equal(c.tieWordEmbeddings, true);
  assert.deepEqual([c.bosTokenId, c.eosTokenId, c.padTokenId], [2, 2, 1]);
  assert.equal(c.raw, OPT_125M);

  const c350 = parseConfig({
    ...OPT_125M,
    hidden_size: 1024,
    word_embed_proj_dim: 512,
    do_layer_norm_before: false,
    ffn_dim: 4096,
    num_hidden_layers: 24,
    num_attention_heads: 16,
    activation_function: "gelu",
    enable_bias: false,
    layer_norm_elementwise_affine: false,
  }) as OptConfig;
  assert.equal(c350.wordEmbedProjDim, 512);
  assert.equal(c350.hiddenSize, 1024);
  assert.equal(c350.doLayerNormBefore, false);
  assert.equal(c350.activation, "gelu");
  assert.equal(c350.enableBias, false);
  assert.equal(c350.layerNormAffine, false);

  // HF defaults fill missing keys
  const bare = parseConfig({ model_type: "opt" }) as OptConfig;
  assert.deepEqual([bare.hiddenSize, bare.wordEmbedProjDim, bare.numLayers], [768, 768, 12]);
});

Deno.test("config: Llama-2 (MHA), GQA, head_dim, RoPE scaling variants, tied head", () => {
  const c = parseConfig(LLAMA2_7B) as LlamaConfig;
  assert.equal(c.modelType, "llama");
  assert.deepEqual(
    [c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.intermediateSize],
    [4096, 32, 32, 32, 128, 11008],
  );
  assert.equal(c.rmsNormEps, 1e-5);
  assert.equal(c.ropeTheta, 10000);
  assert.equal(c.ropeScaling, null);
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.attentionBias, false);
  assert.equal(c.mlpBias, false);
  assert.equal(c.slidingWindow, null);
  assert.deepEqual([c.bosTokenId, c.eosTokenId, c.padTokenId], [1, 2, null]);

  const l3 = parseConfig({
    ...LLAMA2_7B,
    num_key_value_heads: 8,
    rope_theta: 500000.0,
    vocab_size: 128256,
    eos_token_id: [128001, 128008, 128009],
    rope_scaling: {
      factor: 8.0,
      low_freq_factor: 1.0,
      high_freq_factor: 4.0,
      original_max_position_embeddings: 8192,
      rope_type: "llama3",
    },
    attention_bias: true,
    mlp_bias: true,
  }) as LlamaConfig;
  assert.equal(l3.numKvHeads, 8);
  assert.equal(l3.ropeTheta, 500000);
  assert.equal(l3.eosTokenId, 128001);
  assert.deepEqual(l3.ropeScaling, {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositions: 8192,
  });
  assert.equal(l3.attentionBias, true);
  assert.equal(l3.mlpBias, true);

  const lin = parseConfig({
    ...LLAMA2_7B,
    rope_scaling: { type: "linear", factor: 2.0 },
  }) as LlamaConfig;
  assert.deepEqual(lin.ropeScaling, { type: "linear", factor: 2 });
  const dflt = parseConfig({ ...LLAMA2_7B, rope_scaling: { rope_type: "default" } }) as LlamaConfig;
  assert.equal(dflt.ropeScaling, null);

  const hd = parseConfig({
    ...LLAMA2_7B,
    hidden_size: 64,
    num_attention_heads: 8,
    num_key_value_heads: 2,
    head_dim: 16,
  }) as LlamaConfig;
  assert.equal(hd.headDim, 16);
  const tied = parseConfig({ ...LLAMA2_7B, tie_word_embeddings: true }) as LlamaConfig;
  assert.equal(tied.tieWordEmbeddings, true);
  const bare = parseConfig({ model_type: "llama" }) as LlamaConfig;
  assert.deepEqual([bare.numKvHeads, bare.rmsNormEps, bare.maxPositions], [32, 1e-6, 2048]);
});

Deno.test("config: Mistral-style configs (sliding window)", () => {
  const m = parseConfig({
    model_type: "mistral",
    hidden_size: 4096,
    intermediate_size: 14336,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    num_hidden_layers: 32,
    sliding_window: 4096,
    rope_theta: 10000.0,
    rms_norm_eps: 1e-5,
  }) as LlamaConfig;
  assert.equal(m.modelType, "mistral");
  assert.equal(m.slidingWindow, 4096);
  assert.equal(m.numKvHeads, 8);
  assert.equal(m.headDim, 128);
  const noWindow = parseConfig({ model_type: "mistral", sliding_window: null }) as LlamaConfig;
  assert.equal(noWindow.slidingWindow, null);
});

Deno.test("config: unsupported or invalid configs are refused with what to fix", () => {
  configError(
    () => parseConfig({ model_type: "gpt2" }, "x/config.json"),
    /x\/config\.json.*"gpt2".*opt, llama, mistral/,
  );
  configError(() => parseConfig({}), /model_type undefined is not supported/);
  configError(
    () => parseConfig({ ...OPT_125M, hidden_size: 100 }),
    /not divisible by num_attention_heads/,
  );
  configError(
    () => parseConfig({ ...OPT_125M, hidden_size: "768" }),
    /"hidden_size" must be an integer/,
  );
  configError(
    () => parseConfig({ ...OPT_125M, activation_function: "silu" }),
    /supported: relu, gelu/,
  );
  configError(
    () => parseConfig({ ...LLAMA2_7B, num_key_value_heads: 5 }),
    /multiple of num_key_value_heads/,
  );
  configError(
    () => parseConfig({ ...LLAMA2_7B, rope_scaling: { rope_type: "yarn", factor: 4 } }),
    /"yarn" is not supported \(supported: none, linear, llama3\)/,
  );
  configError(
    () => parseConfig({ ...LLAMA2_7B, rope_scaling: { rope_type: "llama3", factor: 8 } }),
    /rope_scaling: "original_max_position_embeddings" is required/,
  );
  configError(() => parseConfig({ ...LLAMA2_7B, hidden_act: "gelu" }), /supported: silu/);
  configError(
    () => parseConfig({ ...LLAMA2_7B, rms_norm_eps: -1 }),
    /"rms_norm_eps" must be a positive number/,
  );
});

Deno.test("config: loadConfig reads a folder and names the file on errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(LLAMA2_7B));
    const c = await loadConfig(dir);
    assert.equal(c.modelType, "llama");
    await Deno.writeTextFile(`${dir}/config.json`, "{ nope");
    await assert.rejects(() => loadConfig(dir), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, new RegExp(`${dir}/config\\.json: invalid JSON`));
      return true;
    });
    await assert.rejects(() => loadConfig(`${dir}/missing`), /missing\/config\.json: cannot read/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "config: the real model folders in shared/data",
  ignore: !await exists(new URL("models/hf/", DATA)),
  fn: async () => {
    const s = await loadConfig(new URL("models/hf/stories260K", DATA).pathname) as LlamaConfig;
    assert.deepEqual(
      [
        s.hiddenSize,
        s.numLayers,
        s.numHeads,
        s.numKvHeads,
        s.headDim,
        s.intermediateSize,
        s.vocabSize,
      ],
      [64, 5, 8, 4, 8, 172, 512],
    );
    assert.equal(s.tieWordEmbeddings, true);
    assert.equal(s.maxPositions, 512);
    const o = await loadConfig(new URL("models/hf/opt-tiny", DATA).pathname) as OptConfig;
    assert.deepEqual([o.hiddenSize, o.numLayers, o.numHeads, o.ffnDim, o.vocabSize], [
      128,
      4,
      4,
      512,
      50272,
    ]);
  },
});
