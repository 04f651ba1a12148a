/**
 * The contracts between the layers: what a loaded model offers to curvature estimation,
 * pruning, evaluation and the command line. `model/` implements them; the layers above use
 * only these types.
 *
 * @module
 */
import type { Tensor } from "../kernels/tensor.ts";

/**
 * Kinds of prunable linear modules (ALGORITHM.md §1.1).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import type { ModuleKind } from "@llm-surgeon/toolkit";
 * const optMlp: ModuleKind[] = ["fc1", "fc2"];
 * const llamaMlp: ModuleKind[] = ["gate_proj", "up_proj", "down_proj"];
 * assert.equal(optMlp.length + llamaMlp.length, 5)
 * ```
 */
export type ModuleKind =
  | "q_proj"
  | "k_proj"
  | "v_proj"
  | "out_proj"
  | "o_proj"
  | "fc1"
  | "fc2"
  | "gate_proj"
  | "up_proj"
  | "down_proj";

/**
 * A low-rank adapter `y += B·(A·x)` attached to a linear module (ALGORITHM.md §9).
 *
 * @example Usage
 * ```ts ignore
 * import { type LoraAdapter, Tensor } from "@llm-surgeon/toolkit";
 * const lin = model.linears()[0];
 * // rank 8; B starts at zero, so the adapter changes nothing until it is trained
 * const adapter: LoraAdapter = {
 *   A: await Tensor.from(new Float32Array(8 * lin.inFeatures).map(() => 0.01 * Math.random()), [8, lin.inFeatures]),
 *   B: await Tensor.zeros([lin.outFeatures, 8]),
 * };
 * lin.adapter = adapter;
 * ```
 */
export interface LoraAdapter {
  /** `[r, inFeatures]`. */
  A: Tensor;
  /** `[outFeatures, r]`. */
  B: Tensor;
}

/**
 * One prunable linear layer `y = W·x + b` of a decoder block. Its tensors live on the GPU and
 * are modified in place by pruning.
 *
 * @example Usage
 * ```ts ignore
 * import { countZeros, loadModel } from "@llm-surgeon/toolkit";
 * const model = await loadModel("facebook/opt-125m");
 * for (const lin of model.linears()) {
 *   const zeros = await countZeros(lin.weight).item();
 *   console.log(lin.name, lin.kind, `[${lin.outFeatures}, ${lin.inFeatures}]`, zeros);
 * }
 * ```
 */
export interface PrunableLinear {
  /** Hugging Face parameter prefix, e.g. `model.decoder.layers.3.self_attn.q_proj`. */
  readonly name: string;
  /** Decoder layer index. */
  readonly layer: number;
  /** Module kind. */
  readonly kind: ModuleKind;
  /** R = out_features. */
  readonly outFeatures: number;
  /** C₀ = in_features (without the bias column). */
  readonly inFeatures: number;
  /** `[R, C₀]` weight. */
  readonly weight: Tensor;
  /** `[R]` bias, or null. */
  readonly bias: Tensor | null;
  /**
   * Optional LoRA adapter. When set, the model's forward computes `W·x + b + B·(A·x)` and its
   * backward propagates through the adapter too (the taps still report `x` and `∂L/∂y`).
   */
  adapter: LoraAdapter | null;
}

/**
 * Receives the taps of one prunable module for one calibration sequence:
 * `a` is `[T, C]`, the layer input augmented with a ones column when the layer has a bias
 * (C = C₀ + 1), `g` is `[T, R]`, the gradient of the loss w.r.t. the layer output (null in a
 * forward-only pass). Both are valid only during the call: copy what you need (e.g. accumulate
 * `aᵀa` with a GEMM) before returning.
 *
 * @example Usage
 * ```ts ignore
 * import { matmul, type TapHandler, Tensor } from "@llm-surgeon/toolkit";
 * // Accumulate Σ aᵀa per module over the calibration sequences (the Activations curvature).
 * const acc = new Map<string, Tensor>();
 * const onTap: TapHandler = (lin, a) => {
 *   const prev = acc.get(lin.name);
 *   if (prev) matmul(a, a, { transA: true, beta: 1, out: prev });
 *   else acc.set(lin.name, matmul(a, a, { transA: true }));
 * };
 * for (const seq of calib) await model.calibrate(seq, onTap, { forwardOnly: true });
 * ```
 */
export type TapHandler = (
  lin: PrunableLinear,
  a: Tensor,
  g: Tensor | null,
) => void | Promise<void>;

/**
 * Options of {@link CausalLM.calibrate}.
 *
 * @example Usage
 * ```ts
 * import type { CalibrationOptions } from "@llm-surgeon/toolkit";
 * // One label sampled from the model per position (the true Fisher), reproducibly.
 * const opts: CalibrationOptions = { fisherSamples: 1, seed: 100 };
 * console.log(opts.fisherSamples); // 1
 * ```
 */
export interface CalibrationOptions {
  /** 0 = empirical Fisher (real next tokens); S > 0 = S labels sampled from the model per position. */
  fisherSamples?: number;
  /** Sample labels with replacement and average outer products (the proper estimator) — only for S > 1. */
  properSampledFisher?: boolean;
  /** Clamp every entry of g to [−m, m] (0 = off). */
  maxOutgrad?: number;
  /** Seed for sampled labels. */
  seed?: number;
  /** Only run the forward pass (taps get `g = null`). */
  forwardOnly?: boolean;
  /**
   * Stop the backward pass at this decoder layer: layers below it get no taps and no gradient
   * (their taps are not wanted, e.g. when the curvature is estimated over groups of layers).
   * Default 0: every layer.
   */
  lowestLayer?: number;
}

/**
 * A tokenizer that behaves exactly like the Hugging Face one of the model.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import type { TextTokenizer } from "@llm-surgeon/toolkit";
 * // A stand-in with one token per UTF-8 byte, e.g. for tests of the data pipeline.
 * const bytes: TextTokenizer = {
 *   encode: (text) => Int32Array.from(new TextEncoder().encode(text)),
 *   decode: (ids) => new TextDecoder().decode(Uint8Array.from(ids)),
 *   bosId: null,
 *   eosId: null,
 *   vocabSize: 256,
 *   chatTemplate: null,
 * };
 * assert.equal(bytes.decode(bytes.encode("héllo")), "héllo");
 * ```
 */
export interface TextTokenizer {
  /** Token ids of `text`, with the special tokens HF adds (OPT: `</s>` first; Llama: `<s>`). */
  encode(text: string, opts?: { addSpecialTokens?: boolean }): Int32Array;
  /** Text of `ids` (special tokens skipped by default). */
  decode(ids: ArrayLike<number>, opts?: { skipSpecialTokens?: boolean }): string;
  /** BOS id, if any. */
  readonly bosId: number | null;
  /** EOS id, if any. */
  readonly eosId: number | null;
  /** Vocabulary size (including added tokens). */
  readonly vocabSize: number;
  /** Chat template from tokenizer_config.json, if any. */
  readonly chatTemplate: string | null;
}

/**
 * OPT configuration, normalised from config.json.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type OptConfig, parseConfig } from "@llm-surgeon/toolkit";
 * const cfg = parseConfig({ model_type: "opt", hidden_size: 64, num_attention_heads: 4 }) as OptConfig;
 * assert.equal(cfg.ffnDim, 3072); // transformers' OPTConfig default
 * assert.equal(cfg.activation, "relu");
 * ```
 */
export interface OptConfig {
  /** Always "opt". */
  modelType: "opt";
  /** Vocabulary size (rows of the embedding). */
  vocabSize: number;
  /** Width of the residual stream. */
  hiddenSize: number;
  /** Number of decoder layers. */
  numLayers: number;
  /** Attention heads. */
  numHeads: number;
  /** Width of the MLP (fc1 outputs). */
  ffnDim: number;
  /** max_position_embeddings: the default context length. */
  maxPositions: number;
  /** Embedding width; ≠ hiddenSize means project_in/project_out exist (opt-350m). */
  wordEmbedProjDim: number;
  /** Pre-LN (true for all OPT except 350m). */
  doLayerNormBefore: boolean;
  /** MLP activation. */
  activation: "relu" | "gelu";
  /** LayerNorm epsilon. */
  layerNormEps: number;
  /** Elementwise affine in layer norms. */
  layerNormAffine: boolean;
  /** Whether linear layers have biases. */
  enableBias: boolean;
  /** LM head shares the token embedding. */
  tieWordEmbeddings: boolean;
  /** Beginning-of-sequence token id. */
  bosTokenId: number | null;
  /** End-of-sequence token id. */
  eosTokenId: number | null;
  /** Padding token id. */
  padTokenId: number | null;
  /** The original config.json object (written back on save). */
  raw: Record<string, unknown>;
}

/**
 * RoPE scaling variants.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type RopeScaling, ropeInvFreq } from "@llm-surgeon/toolkit";
 * const linear: RopeScaling = { type: "linear", factor: 2 };
 * const plain = ropeInvFreq(8, 10000, null);
 * const stretched = ropeInvFreq(8, 10000, linear);
 * assert.equal(stretched[1], Math.fround(plain[1] / 2)); // every frequency halved
 * ```
 */
export type RopeScaling =
  | null
  | { type: "linear"; factor: number }
  | {
    /** Llama 3 per-frequency smoothing. */
    type: "llama3";
    /** Scaling factor. */
    factor: number;
    /** Llama 3 low-frequency factor. */
    lowFreqFactor: number;
    /** Llama 3 high-frequency factor. */
    highFreqFactor: number;
    /** Context length the model was trained with. */
    originalMaxPositions: number;
  };

/**
 * Llama (and Mistral-style) configuration, normalised from config.json.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type LlamaConfig, parseConfig } from "@llm-surgeon/toolkit";
 * const cfg = parseConfig({
 *   model_type: "llama",
 *   hidden_size: 64,
 *   num_attention_heads: 4,
 *   num_key_value_heads: 2,
 * }) as LlamaConfig;
 * assert.equal(cfg.headDim, 16); // hidden_size / num_attention_heads
 * assert.equal(cfg.numKvHeads, 2); // grouped-query attention
 * ```
 */
export interface LlamaConfig {
  /** "llama", or "mistral" for Llama with a sliding window. */
  modelType: "llama" | "mistral";
  /** Vocabulary size (rows of the embedding). */
  vocabSize: number;
  /** Width of the residual stream. */
  hiddenSize: number;
  /** Number of decoder layers. */
  numLayers: number;
  /** Attention heads. */
  numHeads: number;
  /** Key/value heads (grouped-query attention when < numHeads). */
  numKvHeads: number;
  /** Width of one attention head. */
  headDim: number;
  /** Width of the gated MLP. */
  intermediateSize: number;
  /** max_position_embeddings: the default context length. */
  maxPositions: number;
  /** RMSNorm epsilon. */
  rmsNormEps: number;
  /** RoPE base frequency. */
  ropeTheta: number;
  /** RoPE scaling, or null. */
  ropeScaling: RopeScaling;
  /** Attention projections have biases. */
  attentionBias: boolean;
  /** MLP projections have biases. */
  mlpBias: boolean;
  /** LM head shares the token embedding. */
  tieWordEmbeddings: boolean;
  /** MLP activation (SiLU-gated). */
  hiddenAct: "silu";
  /** Sliding-window attention span (Mistral), or null. */
  slidingWindow: number | null;
  /** Beginning-of-sequence token id. */
  bosTokenId: number | null;
  /** End-of-sequence token id. */
  eosTokenId: number | null;
  /** Padding token id. */
  padTokenId: number | null;
  /** The original config.json object (written back on save). */
  raw: Record<string, unknown>;
}

/**
 * Any supported configuration.
 *
 * @example Usage
 * ```ts
 * import { type ModelConfig, parseConfig } from "@llm-surgeon/toolkit";
 * const cfg: ModelConfig = parseConfig({ model_type: "opt", hidden_size: 64, num_attention_heads: 4 });
 * // The modelType field tells the two apart.
 * const mlpWidth = cfg.modelType === "opt" ? cfg.ffnDim : cfg.intermediateSize;
 * console.log(mlpWidth); // 3072
 * ```
 */
export type ModelConfig = OptConfig | LlamaConfig;

/**
 * Read access to a checkpoint's tensors (safetensors, possibly sharded), converted to f32.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import type { WeightSource } from "@llm-surgeon/toolkit";
 * // An in-memory source, e.g. for building a tiny model in a test.
 * const tensors = new Map([["lm_head.weight", { shape: [2, 3], data: new Float32Array(6) }]]);
 * const source: WeightSource = {
 *   names: () => [...tensors.keys()],
 *   has: (name) => tensors.has(name),
 *   shape: (name) => {
 *     const t = tensors.get(name);
 *     if (!t) throw new Error(`no tensor ${name}`);
 *     return t.shape;
 *   },
 *   read: (name) => Promise.resolve(tensors.get(name)!.data),
 * };
 * assert.deepEqual(source.shape("lm_head.weight"), [2, 3]);
 * ```
 */
export interface WeightSource {
  /** All tensor names. */
  names(): string[];
  /** Whether `name` exists. */
  has(name: string): boolean;
  /** Shape of `name` (throws naming the tensor if missing). */
  shape(name: string): number[];
  /** Reads `name` as f32 (F16/BF16 converted). */
  read(name: string): Promise<Float32Array>;
}

/**
 * Options of {@link CausalLM.generate}.
 *
 * @example Usage
 * ```ts
 * import type { GenerateOptions } from "@llm-surgeon/toolkit";
 * // 40 tokens of nucleus sampling, reproducible through the seed.
 * const opts: GenerateOptions = { maxTokens: 40, temperature: 0.7, topP: 0.9, seed: 1 };
 * console.log(opts.maxTokens); // 40
 * ```
 */
export interface GenerateOptions {
  /** New tokens to generate. */
  maxTokens?: number;
  /** Sampling temperature; 0 = greedy. */
  temperature?: number;
  /** Nucleus sampling mass. */
  topP?: number;
  /** Seed of the sampler. */
  seed?: number;
}

/**
 * A causal language model on the GPU (OPT or Llama family).
 *
 * @example Usage
 * ```ts ignore
 * import { type CausalLM, loadModel } from "@llm-surgeon/toolkit";
 * const model: CausalLM = await loadModel("facebook/opt-125m");
 * const ids = model.tokenizer!.encode("The capital of France is");
 * console.log(Math.exp(await model.nll(ids))); // perplexity of this one window
 * console.log(await model.generate("The capital of France is", { maxTokens: 8 }));
 * await model.save("out/opt-125m-copy");
 * model.dispose();
 * ```
 */
export interface CausalLM {
  /** Architecture family. */
  readonly family: "opt" | "llama";
  /** The normalised configuration. */
  readonly config: ModelConfig;
  /** The tokenizer, when the model folder had one. */
  readonly tokenizer: TextTokenizer | null;
  /** Default context length (max_position_embeddings). */
  readonly maxSeqLen: number;
  /** Folder the model was loaded from (config, tokenizer files). */
  readonly sourceDir: string | null;
  /** The prunable linear modules, in forward order. */
  linears(): PrunableLinear[];
  /** Logits `[T, V]` of one sequence (for tests and generation; large). */
  logits(ids: Int32Array): Promise<Float32Array>;
  /**
   * Mean next-token negative log-likelihood over positions 0..T−2 of one window (ALGORITHM.md
   * §10.2), computed on the GPU without materialising all logits at once.
   */
  nll(ids: Int32Array): Promise<number>;
  /**
   * One calibration pass on one sequence (ALGORITHM.md §2.1): forward, mean next-token CE over the
   * T−1 predicted positions, backward, and `onTap` for every prunable module. Returns the loss.
   */
  calibrate(ids: Int32Array, onTap: TapHandler, opts?: CalibrationOptions): Promise<number>;
  /** Text generation with a KV cache. */
  generate(prompt: string, opts?: GenerateOptions): Promise<string>;
  /** Writes a Hugging Face folder (config.json, model.safetensors, tokenizer files) atomically. */
  save(dir: string): Promise<void>;
  /** Frees all GPU memory of the model. */
  dispose(): void;
}
