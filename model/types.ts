/**
 * The contracts between the layers: what a loaded model offers to curvature estimation,
 * pruning, evaluation and the command line. `model/` implements them; the layers above use
 * only these types.
 *
 * @module
 */
import type { Tensor } from "../kernels/tensor.ts";

/** Kinds of prunable linear modules (ALGORITHM.md §1.1). */
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

/** A low-rank adapter `y += B·(A·x)` attached to a linear module (ALGORITHM.md §9). */
export interface LoraAdapter {
  /** `[r, inFeatures]`. */
  A: Tensor;
  /** `[outFeatures, r]`. */
  B: Tensor;
}

/**
 * One prunable linear layer `y = W·x + b` of a decoder block. Its tensors live on the GPU and
 * are modified in place by pruning.
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
 */
export type TapHandler = (
  lin: PrunableLinear,
  a: Tensor,
  g: Tensor | null,
) => void | Promise<void>;

/** Options of {@link CausalLM.calibrate}. */
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
}

/** A tokenizer that behaves exactly like the Hugging Face one of the model. */
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

/** OPT configuration, normalised from config.json. */
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

/** RoPE scaling variants. */
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

/** Llama (and Mistral-style) configuration, normalised from config.json. */
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

/** Any supported configuration. */
export type ModelConfig = OptConfig | LlamaConfig;

/** Read access to a checkpoint's tensors (safetensors, possibly sharded), converted to f32. */
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

/** Options of {@link CausalLM.generate}. */
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

/** A causal language model on the GPU (OPT or Llama family). */
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
