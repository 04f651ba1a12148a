/**
 * Hugging Face `config.json` → normalised {@link ModelConfig} (OPT, Llama, Mistral-style).
 * Missing keys take the defaults of the transformers config classes, so a minimal config means
 * what it means to Hugging Face.
 *
 * @module
 */
import type { LlamaConfig, ModelConfig, OptConfig, RopeScaling } from "./types.ts";

/**
 * The `model_type` values {@link parseConfig} understands.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { SUPPORTED_MODEL_TYPES } from "@llm-surgeon/toolkit";
 * assert.ok(SUPPORTED_MODEL_TYPES.includes("llama"));
 * assert.ok(!SUPPORTED_MODEL_TYPES.includes("gpt2"));
 * ```
 */
export const SUPPORTED_MODEL_TYPES: readonly string[] = ["opt", "llama", "mistral"];

/**
 * An unsupported or invalid configuration; the message names the source and the key.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConfigError, parseConfig } from "@llm-surgeon/toolkit";
 * assert.throws(() => parseConfig({ model_type: "gpt2" }, "gpt2/config.json"), ConfigError);
 * ```
 */
export class ConfigError extends Error {
  /**
   * Creates the error; the message is prefixed with the source.
   * @param source file (or label) the configuration came from
   * @param message what is wrong
   */
  constructor(source: string, message: string) {
    super(`${source}: ${message}`);
    this.name = "ConfigError";
  }
}

/** Typed accessors with defaults and validation for one raw config object. */
class Reader {
  constructor(readonly raw: Record<string, unknown>, readonly source: string) {}

  #fail(key: string, what: string): never {
    throw new ConfigError(this.source, `"${key}" ${what} (got ${JSON.stringify(this.raw[key])})`);
  }

  /** Positive integer (or ≥ 0 when `min` is 0). */
  int(key: string, dflt: number | null, min = 1): number {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (dflt === null) this.#fail(key, "is required");
      return dflt;
    }
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
      this.#fail(key, `must be an integer ≥ ${min}`);
    }
    return v;
  }

  /** Positive finite number. */
  num(key: string, dflt: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      this.#fail(key, "must be a positive number");
    }
    return v;
  }

  bool(key: string, dflt: boolean): boolean {
    const v = this.raw[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "boolean") this.#fail(key, "must be true or false");
    return v;
  }

  str(key: string, dflt: string): string {
    const v = this.raw[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "string") this.#fail(key, "must be a string");
    return v;
  }

  /** A token id: integer, null, or a list whose first entry is used (e.g. Llama 3 EOS). */
  tokenId(key: string, dflt: number | null): number | null {
    let v = this.raw[key];
    if (v === undefined) return dflt;
    if (Array.isArray(v)) v = v.length > 0 ? v[0] : null;
    if (v === null) return null;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      this.#fail(key, "must be a token id (integer ≥ 0), a list of them, or null");
    }
    return v;
  }
}

function parseOpt(r: Reader): OptConfig {
  const hiddenSize = r.int("hidden_size", 768);
  const numHeads = r.int("num_attention_heads", 12);
  if (hiddenSize % numHeads !== 0) {
    throw new ConfigError(
      r.source,
      `hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads}`,
    );
  }
  const activation = r.str("activation_function", "relu");
  if (activation !== "relu" && activation !== "gelu") {
    throw new ConfigError(
      r.source,
      `OPT activation_function "${activation}" is not supported (supported: relu, gelu)`,
    );
  }
  if (r.bool("_remove_final_layer_norm", false)) {
    throw new ConfigError(r.source, `OPT with "_remove_final_layer_norm": true is not supported`);
  }
  return {
    modelType: "opt",
    vocabSize: r.int("vocab_size", 50272),
    hiddenSize,
    numLayers: r.int("num_hidden_layers", 12),
    numHeads,
    ffnDim: r.int("ffn_dim", 3072),
    maxPositions: r.int("max_position_embeddings", 2048),
    wordEmbedProjDim: r.int("word_embed_proj_dim", hiddenSize),
    doLayerNormBefore: r.bool("do_layer_norm_before", true),
    activation,
    layerNormEps: 1e-5,
    layerNormAffine: r.bool("layer_norm_elementwise_affine", true),
    enableBias: r.bool("enable_bias", true),
    tieWordEmbeddings: r.bool("tie_word_embeddings", true),
    bosTokenId: r.tokenId("bos_token_id", 2),
    eosTokenId: r.tokenId("eos_token_id", 2),
    padTokenId: r.tokenId("pad_token_id", 1),
    raw: r.raw,
  };
}

function parseRopeScaling(r: Reader): RopeScaling {
  const v = r.raw["rope_scaling"];
  if (v === undefined || v === null) return null;
  if (typeof v !== "object" || Array.isArray(v)) {
    throw new ConfigError(r.source, `"rope_scaling" must be an object or null`);
  }
  const s = new Reader(v as Record<string, unknown>, `${r.source} rope_scaling`);
  const kind = s.str("rope_type", s.str("type", "default"));
  if (kind === "default") return null;
  if (kind === "linear") {
    const factor = s.num("factor", NaN);
    if (Number.isNaN(factor)) throw new ConfigError(s.source, `linear scaling needs "factor"`);
    return { type: "linear", factor };
  }
  if (kind === "llama3") {
    const cfg = {
      type: "llama3" as const,
      factor: s.num("factor", NaN),
      lowFreqFactor: s.num("low_freq_factor", NaN),
      highFreqFactor: s.num("high_freq_factor", NaN),
      originalMaxPositions: s.int("original_max_position_embeddings", null),
    };
    for (const [k, x] of Object.entries(cfg)) {
      if (typeof x === "number" && Number.isNaN(x)) {
        throw new ConfigError(s.source, `llama3 scaling needs "${k}"`);
      }
    }
    if (cfg.highFreqFactor <= cfg.lowFreqFactor) {
      throw new ConfigError(s.source, "high_freq_factor must exceed low_freq_factor");
    }
    return cfg;
  }
  throw new ConfigError(
    s.source,
    `rope scaling type "${kind}" is not supported (supported: none, linear, llama3)`,
  );
}

function parseLlama(r: Reader, modelType: "llama" | "mistral"): LlamaConfig {
  const mistral = modelType === "mistral";
  const hiddenSize = r.int("hidden_size", 4096);
  const numHeads = r.int("num_attention_heads", 32);
  const numKvHeads = r.int("num_key_value_heads", mistral ? 8 : numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(
      r.source,
      `num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`,
    );
  }
  if (r.raw["head_dim"] == null && hiddenSize % numHeads !== 0) {
    throw new ConfigError(
      r.source,
      `hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads} ` +
        `and there is no head_dim`,
    );
  }
  const headDim = r.int("head_dim", Math.floor(hiddenSize / numHeads));
  if (headDim % 2 !== 0) throw new ConfigError(r.source, `head_dim ${headDim} must be even (RoPE)`);
  const hiddenAct = r.str("hidden_act", "silu");
  if (hiddenAct !== "silu") {
    throw new ConfigError(r.source, `hidden_act "${hiddenAct}" is not supported (supported: silu)`);
  }
  const partial = r.raw["partial_rotary_factor"];
  if (partial !== undefined && partial !== null && partial !== 1 && partial !== 1.0) {
    throw new ConfigError(r.source, `partial_rotary_factor ${partial} is not supported`);
  }
  let slidingWindow: number | null = null;
  if (mistral) {
    const sw = r.raw["sliding_window"];
    slidingWindow = sw === null ? null : r.int("sliding_window", 4096);
  } else if (r.bool("use_sliding_window", false)) {
    slidingWindow = r.int("sliding_window", null);
  }
  return {
    modelType,
    vocabSize: r.int("vocab_size", 32000),
    hiddenSize,
    numLayers: r.int("num_hidden_layers", 32),
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: r.int("intermediate_size", mistral ? 14336 : 11008),
    maxPositions: r.int("max_position_embeddings", mistral ? 4096 * 32 : 2048),
    rmsNormEps: r.num("rms_norm_eps", 1e-6),
    ropeTheta: r.num("rope_theta", 10000),
    ropeScaling: parseRopeScaling(r),
    attentionBias: mistral ? false : r.bool("attention_bias", false),
    mlpBias: mistral ? false : r.bool("mlp_bias", false),
    tieWordEmbeddings: r.bool("tie_word_embeddings", false),
    hiddenAct: "silu",
    slidingWindow,
    bosTokenId: r.tokenId("bos_token_id", 1),
    eosTokenId: r.tokenId("eos_token_id", 2),
    padTokenId: r.tokenId("pad_token_id", null),
    raw: r.raw,
  };
}

/**
 * Normalises a parsed `config.json` object.
 *
 * @param raw the parsed JSON
 * @param source where it came from (for error messages)
 * @throws ConfigError for an unsupported `model_type` (listing the supported ones) or bad values
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseConfig } from "@llm-surgeon/toolkit";
 * const cfg = parseConfig({ model_type: "opt", hidden_size: 64, num_attention_heads: 4 });
 * assert.equal(cfg.modelType, "opt");
 * assert.equal(cfg.hiddenSize, 64);
 * assert.equal(cfg.numHeads, 4);
 * ```
 */
export function parseConfig(raw: Record<string, unknown>, source = "config.json"): ModelConfig {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(source, "is not a JSON object");
  }
  const modelType = raw["model_type"];
  const r = new Reader(raw, source);
  switch (modelType) {
    case "opt":
      return parseOpt(r);
    case "llama":
    case "mistral":
      return parseLlama(r, modelType);
    default:
      throw new ConfigError(
        source,
        `model_type ${JSON.stringify(modelType)} is not supported (supported: ` +
          `${SUPPORTED_MODEL_TYPES.join(", ")})`,
      );
  }
}

/**
 * Reads and normalises `<dir>/config.json`.
 *
 * @param dir model folder
 * @example Usage
 * ```ts ignore
 * import { loadConfig } from "@llm-surgeon/toolkit";
 * const cfg = await loadConfig("models/opt-125m");
 * ```
 */
export async function loadConfig(dir: string): Promise<ModelConfig> {
  const path = dir.endsWith("/") ? `${dir}config.json` : `${dir}/config.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new ConfigError(path, `cannot read: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(path, `invalid JSON: ${(e as Error).message}`);
  }
  return parseConfig(raw as Record<string, unknown>, path);
}
