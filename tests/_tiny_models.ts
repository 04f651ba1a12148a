/**
 * Tiny random OPT and Llama models for every team's tests: configs, random weights (as a map,
 * as a {@link WeightSource}), and a saved Hugging Face folder (config.json, model.safetensors,
 * a small character-level tokenizer.json).
 *
 * @module
 */
import { parseConfig } from "../model/config.ts";
import { writeSafetensors } from "../model/safetensors.ts";
import type { LlamaConfig, ModelConfig, OptConfig, WeightSource } from "../model/types.ts";
import { Rng } from "./_util.ts";

/** Raw config.json of the tiny OPT (pre-LN, ReLU, biases, tied head). */
export function tinyOptRaw(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ["OPTForCausalLM"],
    model_type: "opt",
    vocab_size: 40,
    hidden_size: 16,
    word_embed_proj_dim: 16,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    ffn_dim: 24,
    max_position_embeddings: 32,
    do_layer_norm_before: true,
    activation_function: "relu",
    enable_bias: true,
    layer_norm_elementwise_affine: true,
    tie_word_embeddings: true,
    bos_token_id: 2,
    eos_token_id: 2,
    pad_token_id: 1,
    ...overrides,
  };
}

/** Raw config.json of the tiny Llama (GQA 4/2 heads, untied head). */
export function tinyLlamaRaw(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    vocab_size: 40,
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 4,
    max_position_embeddings: 64,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    rope_scaling: null,
    attention_bias: false,
    mlp_bias: false,
    tie_word_embeddings: false,
    hidden_act: "silu",
    bos_token_id: 1,
    eos_token_id: 2,
    ...overrides,
  };
}

/**
 * A tiny OPT config (d = 16, 4 heads, 2 layers, ffn 24, V = 40, 32 positions); `overrides` are
 * raw config.json keys (e.g. `{do_layer_norm_before: false, word_embed_proj_dim: 8}`).
 *
 * @example Usage
 * ```ts
 * const cfg = tinyOptConfig({ activation_function: "gelu" });
 * ```
 */
export function tinyOptConfig(overrides: Record<string, unknown> = {}): OptConfig {
  return parseConfig(tinyOptRaw(overrides), "tinyOptConfig") as OptConfig;
}

/**
 * A tiny Llama config (d = 16, 4 query / 2 kv heads of 4, 2 layers, ffn 24, V = 40); `overrides`
 * are raw config.json keys (e.g. `{tie_word_embeddings: true, attention_bias: true}`).
 *
 * @example Usage
 * ```ts
 * const cfg = tinyLlamaConfig({ rope_scaling: { rope_type: "linear", factor: 2 } });
 * ```
 */
export function tinyLlamaConfig(overrides: Record<string, unknown> = {}): LlamaConfig {
  return parseConfig(tinyLlamaRaw(overrides), "tinyLlamaConfig") as LlamaConfig;
}

/** A named tensor in host memory. */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

/** Every parameter name and shape a config implies (HF names; tied heads omitted). */
export function parameterShapes(config: ModelConfig): Map<string, number[]> {
  const s = new Map<string, number[]>();
  if (config.modelType === "opt") {
    const { hiddenSize: d, ffnDim: f, vocabSize: V, wordEmbedProjDim: E } = config;
    const p = "model.decoder";
    s.set(`${p}.embed_tokens.weight`, [V, E]);
    s.set(`${p}.embed_positions.weight`, [config.maxPositions + 2, d]);
    if (E !== d) {
      s.set(`${p}.project_in.weight`, [d, E]);
      s.set(`${p}.project_out.weight`, [E, d]);
    }
    const norm = (n: string) => {
      if (!config.layerNormAffine) return;
      s.set(`${n}.weight`, [d]);
      s.set(`${n}.bias`, [d]);
    };
    const lin = (n: string, o: number, i: number) => {
      s.set(`${n}.weight`, [o, i]);
      if (config.enableBias) s.set(`${n}.bias`, [o]);
    };
    for (let l = 0; l < config.numLayers; l++) {
      const q = `${p}.layers.${l}`;
      norm(`${q}.self_attn_layer_norm`);
      for (const m of ["q_proj", "k_proj", "v_proj", "out_proj"]) lin(`${q}.self_attn.${m}`, d, d);
      norm(`${q}.final_layer_norm`);
      lin(`${q}.fc1`, f, d);
      lin(`${q}.fc2`, d, f);
    }
    if (config.doLayerNormBefore) norm(`${p}.final_layer_norm`);
    if (!config.tieWordEmbeddings) s.set("lm_head.weight", [V, E]);
  } else {
    const {
      hiddenSize: d,
      intermediateSize: f,
      vocabSize: V,
      numHeads: H,
      numKvHeads: KH,
      headDim: D,
    } = config;
    s.set("model.embed_tokens.weight", [V, d]);
    const lin = (n: string, o: number, i: number, bias: boolean) => {
      s.set(`${n}.weight`, [o, i]);
      if (bias) s.set(`${n}.bias`, [o]);
    };
    for (let l = 0; l < config.numLayers; l++) {
      const p = `model.layers.${l}`;
      s.set(`${p}.input_layernorm.weight`, [d]);
      lin(`${p}.self_attn.q_proj`, H * D, d, config.attentionBias);
      lin(`${p}.self_attn.k_proj`, KH * D, d, config.attentionBias);
      lin(`${p}.self_attn.v_proj`, KH * D, d, config.attentionBias);
      lin(`${p}.self_attn.o_proj`, d, H * D, config.attentionBias);
      s.set(`${p}.post_attention_layernorm.weight`, [d]);
      lin(`${p}.mlp.gate_proj`, f, d, config.mlpBias);
      lin(`${p}.mlp.up_proj`, f, d, config.mlpBias);
      lin(`${p}.mlp.down_proj`, d, f, config.mlpBias);
    }
    s.set("model.norm.weight", [d]);
    if (!config.tieWordEmbeddings) s.set("lm_head.weight", [V, d]);
  }
  return s;
}

/**
 * Random weights for `config`: norm weights 1 + 0.1·N, biases 0.1·N, matrices N(0, 1/in)
 * (embeddings N(0, 1)), deterministic in `seed`.
 *
 * @example Usage
 * ```ts
 * const w = randomWeights(tinyOptConfig(), 1);
 * ```
 */
export function randomWeights(config: ModelConfig, seed: number): Map<string, HostTensor> {
  const rng = new Rng(seed);
  const out = new Map<string, HostTensor>();
  for (const [name, shape] of parameterShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const isNorm = /norm\.weight$|layer_norm\.weight$/.test(name);
    const sd = name.endsWith(".bias")
      ? 0.1
      : isNorm
      ? 0.1
      : /embed|lm_head/.test(name)
      ? 1
      : 1 / Math.sqrt(shape[1]);
    for (let i = 0; i < n; i++) data[i] = (isNorm ? 1 : 0) + sd * rng.normal();
    out.set(name, { shape, data });
  }
  return out;
}

/**
 * Wraps a map of host tensors as a {@link WeightSource}.
 *
 * @example Usage
 * ```ts
 * const src = weightSource(randomWeights(tinyLlamaConfig(), 3));
 * ```
 */
export function weightSource(map: Map<string, HostTensor>): WeightSource {
  const get = (name: string) => {
    const t = map.get(name);
    if (!t) throw new Error(`weightSource: no tensor ${name}`);
    return t;
  };
  return {
    names: () => [...map.keys()],
    has: (name) => map.has(name),
    shape: (name) => [...get(name).shape],
    read: (name) => Promise.resolve(get(name).data.slice()),
  };
}

const CHARS = "abcdefghijklmnopqrstuvwxyz.,!?";

/** A character-level SentencePiece-style tokenizer.json (BPE without merges, byte fallback off). */
function tinyTokenizerJson(family: "opt" | "llama"): { json: unknown; config: unknown } {
  const specials = family === "opt" ? ["<s>", "<pad>", "</s>", "<unk>"] : ["<unk>", "<s>", "</s>"];
  const vocab: Record<string, number> = {};
  specials.forEach((s, i) => (vocab[s] = i));
  for (const c of "▁" + CHARS) vocab[c] = Object.keys(vocab).length;
  const bos = family === "opt" ? "</s>" : "<s>";
  const bosId = vocab[bos];
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: {
      type: "Sequence",
      normalizers: [{ type: "Prepend", prepend: "▁" }, {
        type: "Replace",
        pattern: { String: " " },
        content: "▁",
      }],
    },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: bos, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: family === "opt" ? "<unk>" : "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: false,
      vocab,
      merges: [],
    },
  };
  const config = {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: bos,
    eos_token: "</s>",
    unk_token: "<unk>",
    pad_token: family === "opt" ? "<pad>" : null,
    clean_up_tokenization_spaces: false,
    model_max_length: 64,
    tokenizer_class: family === "opt" ? "GPT2Tokenizer" : "LlamaTokenizer",
  };
  return { json, config };
}

/**
 * Writes a tiny random model as a Hugging Face folder: config.json, model.safetensors (F32) and a
 * character-level tokenizer.json + tokenizer_config.json (34 tokens; the config's vocabulary is
 * 40). Returns the config and the weights written.
 *
 * @param dir destination folder (created)
 * @param family "opt" or "llama"
 * @param seed weight seed
 * @param overrides raw config.json keys
 * @example Usage
 * ```ts ignore
 * const dir = await Deno.makeTempDir();
 * await makeTinyModelDir(dir, "llama", 1);
 * ```
 */
export async function makeTinyModelDir(
  dir: string,
  family: "opt" | "llama",
  seed: number,
  overrides: Record<string, unknown> = {},
): Promise<{ config: ModelConfig; weights: Map<string, HostTensor> }> {
  const raw = family === "opt" ? tinyOptRaw(overrides) : tinyLlamaRaw(overrides);
  const config = parseConfig(raw, `${dir}/config.json`);
  const weights = randomWeights(config, seed);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({ ...raw, torch_dtype: "float32" }, null, 2),
  );
  await writeSafetensors(
    `${dir}/model.safetensors`,
    [...weights].map(([name, t]) => ({ name, shape: t.shape, data: t.data })),
  );
  const tok = tinyTokenizerJson(family);
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(tok.json, null, 2));
  await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify(tok.config, null, 2));
  return { config, weights };
}
