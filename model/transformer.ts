/**
 * Shared CausalLM machinery for the decoder families (`opt.ts`, `llama.ts`): prunable linear
 * modules, taps, the chunked LM head + cross-entropy, and the {@link DecoderLM} class that runs
 * `logits`, `nll`, `calibrate` (forward, loss, backward with taps) and generation on top of a
 * family's per-layer forward and backward.
 *
 * Memory: the residual stream entering every layer is kept for one sequence; the per-layer
 * activations needed by the backward are either kept from the first pass (when they fit
 * {@link DecoderLM.activationBudget}) or recomputed layer by layer during the backward.
 *
 * @module
 */
import type { Runtime } from "../kernels/device.ts";
import { chunkElems } from "../kernels/elementwise.ts";
import { matmul } from "../kernels/gemm.ts";
import {
  appendOnes,
  attentionForward,
  type AttentionShape,
  copyColumns,
  crossentropyForward,
  embeddingForward,
  linearBackward,
  linearForward,
  sampleLabels,
  sanitizeGrad,
} from "../kernels/nn.ts";
import { keep, Tensor } from "../kernels/tensor.ts";
import { saveHfFolder } from "./save.ts";
import type { TensorToWrite } from "./safetensors.ts";
import type {
  CalibrationOptions,
  CausalLM,
  GenerateOptions,
  LoraAdapter,
  ModelConfig,
  ModuleKind,
  PrunableLinear,
  TapHandler,
  TextTokenizer,
  WeightSource,
} from "./types.ts";
import { generateText, Uniform } from "./generate.ts";

/**
 * An error about a model: bad weights, bad token ids, unsupported options. Names the tensor/flag.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { ModelError } from "@llm-surgeon/toolkit";
 * const err = new ModelError("token id 50272 at position 3 is outside the vocabulary (50272)");
 * assert.equal(err.name, "ModelError");
 * ```
 */
export class ModelError extends Error {
  /**
   * Creates the error.
   *
   * @param message what went wrong (naming the tensor, layer or flag)
   */
  constructor(message: string) {
    super(message);
    this.name = "ModelError";
  }
}

/**
 * Chunking limits (elements per piece of embedding/head tables, per logits chunk, per attention
 * score chunk). Default: one storage binding. Tests lower them to exercise the chunked paths.
 */
export const chunkLimits: { elems: number } = { elems: Number.POSITIVE_INFINITY };

/** Elements allowed in one chunk on `rt`. */
export function chunkSize(rt: Runtime): number {
  return Math.min(chunkElems(rt), chunkLimits.elems);
}

/** A set of temporaries freed together (a layer's saved activations, a call's scratch). */
export class Arena {
  #tensors: Tensor[] = [];
  /**
   * An empty arena.
   *
   * @param rt the runtime to allocate on
   */
  constructor(readonly rt: Runtime) {}
  /** A new zero f32 tensor owned by the arena. */
  f32(shape: readonly number[], name: string): Tensor {
    const t = new Tensor(this.rt, shape, "f32", name);
    this.#tensors.push(t);
    return t;
  }
  /** Takes ownership of `t`. */
  own(t: Tensor): Tensor {
    this.#tensors.push(t);
    return t;
  }
  /** Frees every tensor of the arena. */
  dispose(): void {
    for (const t of this.#tensors) t.dispose();
    this.#tensors = [];
  }
}

/** A prunable linear layer `y = W·x + b (+ B·(A·x))`, implementing {@link PrunableLinear}. */
export class Linear implements PrunableLinear {
  /** LoRA adapter, or null. */
  adapter: LoraAdapter | null = null;
  /**
   * Wraps uploaded weights as a prunable module.
   *
   * @param name HF prefix (`…q_proj`)
   * @param layer decoder layer index
   * @param kind module kind
   * @param weight `[R, C₀]`
   * @param bias `[R]` or null
   */
  constructor(
    readonly name: string,
    readonly layer: number,
    readonly kind: ModuleKind,
    readonly weight: Tensor,
    readonly bias: Tensor | null,
  ) {}
  /** R. */
  get outFeatures(): number {
    return this.weight.shape[0];
  }
  /** C₀. */
  get inFeatures(): number {
    return this.weight.shape[1];
  }
}

/** Forward of a {@link Linear} into a new arena tensor `[T, R]`. */
export function runLinear(ar: Arena, lin: Linear, x: Tensor): Tensor {
  const y = ar.f32([x.rows, lin.outFeatures], `${lin.name}.out`);
  linearForward(y, x, lin.weight, lin.bias, lin.adapter);
  return y;
}

/** Backward of a {@link Linear} to its input: `dx (+)= dy·W (+ LoRA)`. */
export function linearGrad(lin: Linear, dy: Tensor, dx: Tensor, accumulate: boolean): void {
  linearBackward(dx, dy, lin.weight, lin.adapter, accumulate);
}

/** A matrix stored in row pieces that each fit one binding (embeddings, LM heads). */
export interface RowPieces {
  /** The pieces `[rows_i, cols]`. */
  pieces: Tensor[];
  /** First row of every piece. */
  starts: number[];
  /** Total rows. */
  rows: number;
  /** Columns. */
  cols: number;
}

/** Uploads a `[rows, cols]` matrix as {@link RowPieces}. */
export function uploadPieces(
  rt: Runtime,
  data: Float32Array,
  rows: number,
  cols: number,
  name: string,
): RowPieces {
  const per = Math.max(1, Math.floor(chunkSize(rt) / Math.max(cols, 1)));
  const pieces: Tensor[] = [];
  const starts: number[] = [];
  for (let r = 0; r < rows; r += per) {
    const n = Math.min(per, rows - r);
    starts.push(r);
    pieces.push(
      keep(Tensor.fromSync(rt, data.subarray(r * cols, (r + n) * cols), [n, cols], "f32", name)),
    );
  }
  return { pieces, starts, rows, cols };
}

/** Reads {@link RowPieces} back into one array. */
export async function readPieces(p: RowPieces): Promise<Float32Array> {
  const out = new Float32Array(p.rows * p.cols);
  for (let i = 0; i < p.pieces.length; i++) out.set(await p.pieces[i].read(), p.starts[i] * p.cols);
  return out;
}

/** Gathers rows of a pieced embedding table: `out[t] (+)= table[ids[t]]`. */
export function embedRows(out: Tensor, ids: Tensor, table: RowPieces, accumulate = false): void {
  table.pieces.forEach((p, i) => embeddingForward(out, ids, p, table.starts[i], accumulate));
}

/** Reads a weight with a shape check that names the tensor. */
export async function readWeight(
  w: WeightSource,
  name: string,
  shape: number[],
): Promise<Float32Array> {
  if (!w.has(name)) {
    throw new ModelError(`missing tensor ${name} (expected shape [${shape.join(", ")}])`);
  }
  const got = w.shape(name);
  if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
    throw new ModelError(
      `tensor ${name} has shape [${got.join(", ")}], the config implies [${shape.join(", ")}]`,
    );
  }
  const data = await w.read(name);
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      throw new ModelError(`tensor ${name} holds a non-finite value at index ${i}`);
    }
  }
  return data;
}

/** Uploads a weight (kept out of any enclosing scope). */
export async function loadTensor(
  rt: Runtime,
  w: WeightSource,
  name: string,
  shape: number[],
): Promise<Tensor> {
  return keep(Tensor.fromSync(rt, await readWeight(w, name, shape), shape, "f32", name));
}

/** Loads a prunable linear `prefix.weight` (+ `prefix.bias`). */
export async function loadLinear(
  rt: Runtime,
  w: WeightSource,
  prefix: string,
  layer: number,
  kind: ModuleKind,
  outF: number,
  inF: number,
  bias: boolean,
): Promise<Linear> {
  const weight = await loadTensor(rt, w, `${prefix}.weight`, [outF, inF]);
  const b = bias ? await loadTensor(rt, w, `${prefix}.bias`, [outF]) : null;
  return new Linear(prefix, layer, kind, weight, b);
}

/**
 * Key/value cache of one layer for generation: rows `[0, len)` are filled.
 *
 * @example Usage
 * ```ts ignore
 * import type { GenerationModel, KvCache } from "@llm-surgeon/toolkit";
 * declare const lm: GenerationModel; // a loaded OPT or Llama model
 * const kv: KvCache[] = lm.newKvCache(64); // one per decoder layer, 64 positions each
 * let logits = await lm.lastLogits([2, 31414], 0, kv); // fills rows 0 and 1
 * logits = await lm.lastLogits([232], 2, kv); // one more token, attends over the cache
 * for (const c of kv) (c.k.dispose(), c.v.dispose());
 * ```
 */
export interface KvCache {
  /** `[capacity, KH·D]`. */
  k: Tensor;
  /** `[capacity, KH·D]`. */
  v: Tensor;
}

/**
 * Attention of a layer: directly on `k`, `v` without a cache; with a cache, appends `k`, `v` at
 * rows `pos0…` and attends over the cached prefix.
 *
 * - `out`, `q` [T, H·D]; `k`, `v` [T, KH·D].
 */
export function attend(
  out: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  shape: AttentionShape,
  ctx: LayerContext,
): void {
  shape = { ...shape, maxScoreElems: chunkLimits.elems };
  if (!ctx.kv) {
    attentionForward(out, q, k, v, shape);
    return;
  }
  const [T, w] = [k.rows, k.cols];
  ctx.kv.k.copyFrom(k, 0, ctx.pos0 * w, T * w);
  ctx.kv.v.copyFrom(v, 0, ctx.pos0 * w, T * w);
  attentionForward(out, q, ctx.kv.k, ctx.kv.v, {
    ...shape,
    keyLen: ctx.pos0 + T,
    qOffset: ctx.pos0,
  });
}

/** Per-call context of a layer forward. */
export interface LayerContext {
  /** Absolute position of row 0. */
  pos0: number;
  /** Cache of this layer (generation), or null. */
  kv: KvCache | null;
  /** Keep the activations the backward needs (returned as the arena). */
  save: boolean;
  /** Forward-only taps (g = null), or null. */
  taps: Taps | null;
}

/** What a layer forward returns. */
export interface LayerResult {
  /** The new residual stream `[T, d]` (owned by the caller). */
  out: Tensor;
  /** Saved activations (when `save`), freed by the caller after the backward. */
  saved: Arena | null;
}

/**
 * What a decoder family implements: embedding, one function per layer and direction, the final
 * norm, the LM head. `opt.ts` and `llama.ts` each provide one.
 */
export interface DecoderNet {
  /** Model family. */
  readonly family: "opt" | "llama";
  /** The normalised config. */
  readonly config: ModelConfig;
  /** The GPU runtime holding the weights. */
  readonly rt: Runtime;
  /** Residual width d. */
  readonly hidden: number;
  /** Width E of the LM head input. */
  readonly headDim: number;
  /** Layers. */
  readonly numLayers: number;
  /** Key/value width KH·D (for caches). */
  readonly kvWidth: number;
  /** Largest sequence position supported (OPT: the position table), or Infinity. */
  readonly maxPositions: number;
  /** LM head `[V, E]`. */
  readonly head: RowPieces;
  /** Prunable modules in forward order. */
  readonly linears: Linear[];
  /** Residual stream entering layer 0, `[T, d]`, for token ids at positions `pos0…`. */
  embed(ids: Tensor, pos0: number): Tensor;
  /** One decoder layer forward. */
  layerForward(l: number, h: Tensor, ctx: LayerContext): Promise<LayerResult>;
  /** One decoder layer backward: returns ∂L/∂h (new tensor); calls the taps. */
  layerBackward(l: number, dout: Tensor, saved: Arena, taps: Taps | null): Promise<Tensor>;
  /** Final norm (+ projection): `[T, d]` → `[T, E]`, with saved activations when `save`. */
  finalForward(h: Tensor, save: boolean): LayerResult;
  /** Backward of {@link finalForward}: ∂L/∂x `[T, E]` → ∂L/∂h `[T, d]` (new tensor). */
  finalBackward(dx: Tensor, saved: Arena): Tensor;
  /** Bytes of activations one layer keeps for its backward at T tokens. */
  savedBytesPerLayer(T: number): number;
  /** Every parameter as (HF name, reader) for saving, in any order. */
  parameters(): { name: string; shape: number[]; read: () => Promise<Float32Array> }[];
  /** Frees every weight. */
  dispose(): void;
}

/**
 * Delivers taps to a {@link TapHandler}: augments the input with a ones column when the module
 * has a bias (shared between q/k/v, which have the same input), sanitises g (NaN → 0, optional
 * clamp), and frees the temporaries after the handler returns.
 */
export class Taps {
  #aug = new Map<Tensor, Tensor>();
  /**
   * Wraps a tap handler.
   *
   * @param handler the user's tap handler
   * @param maxOutgrad clamp for g (0 = off)
   */
  constructor(readonly handler: TapHandler, readonly maxOutgrad: number) {}

  /** Calls the handler for `lin` with input `x` `[T, C₀]` and output gradient `g` `[T, R]` or null. */
  async tap(lin: Linear, x: Tensor, g: Tensor | null): Promise<void> {
    let a = x;
    if (lin.bias) {
      const hit = this.#aug.get(x);
      if (hit) a = hit;
      else {
        a = new Tensor(x.rt, [x.rows, x.cols + 1], "f32", `${lin.name}.tap_a`);
        appendOnes(a, x);
        this.#aug.set(x, a);
      }
    }
    let gt = g;
    if (g && this.maxOutgrad > 0) {
      gt = g.clone(`${lin.name}.tap_g`);
      sanitizeGrad(gt, this.maxOutgrad);
    } else if (g) sanitizeGrad(g, 0);
    try {
      await this.handler(lin, a, gt);
    } finally {
      if (gt && gt !== g) gt.dispose();
    }
  }

  /** Frees the augmented inputs (call after each layer). */
  release(): void {
    for (const t of this.#aug.values()) t.dispose();
    this.#aug.clear();
  }
}

/** A causal LM on the GPU built from a {@link DecoderNet}; implements {@link CausalLM}. */
export class DecoderLM implements CausalLM {
  /**
   * Bytes of per-layer activations `calibrate` may keep from the forward pass for the backward;
   * above it, layers are recomputed during the backward (one extra forward).
   */
  static activationBudget = 2 * 1024 ** 3;
  /**
   * Bytes of temporaries that may be recorded before waiting for the GPU: freed buffers are only
   * released once the work using them has run, so a long unsynchronised pass would hold every
   * temporary of every layer at once.
   */
  static syncBytes = 1024 ** 3;
  #pending = 0;
  #fisherStream = new Uniform(0x5eed);
  #disposed = false;

  /**
   * Wraps a family implementation as a {@link CausalLM}.
   *
   * @param net the family implementation
   * @param tokenizer tokenizer, if any
   * @param sourceDir folder the model came from, if any
   */
  constructor(
    readonly net: DecoderNet,
    readonly tokenizer: TextTokenizer | null = null,
    readonly sourceDir: string | null = null,
  ) {}

  /** "opt" or "llama". */
  get family(): "opt" | "llama" {
    return this.net.family;
  }
  /** The normalised config. */
  get config(): ModelConfig {
    return this.net.config;
  }
  /** max_position_embeddings. */
  get maxSeqLen(): number {
    return this.net.config.maxPositions;
  }
  /** The prunable modules in forward order. */
  linears(): PrunableLinear[] {
    return this.net.linears;
  }

  /** Uploads and checks token ids (every id in `[0, V)`, positions within the model's range). */
  uploadIds(ids: Int32Array | ArrayLike<number>, pos0 = 0, what = "ids"): Tensor {
    this.#check();
    const V = this.net.head.rows;
    const arr = Int32Array.from(ids as ArrayLike<number>);
    if (arr.length === 0) throw new ModelError(`${what}: empty token sequence`);
    for (let i = 0; i < arr.length; i++) {
      if (!(arr[i] >= 0 && arr[i] < V)) {
        throw new ModelError(`${what}[${i}] = ${arr[i]} is outside the vocabulary [0, ${V})`);
      }
    }
    if (pos0 + arr.length > this.net.maxPositions) {
      throw new ModelError(
        `${what}: ${
          pos0 + arr.length
        } positions exceed max_position_embeddings ${this.net.maxPositions}`,
      );
    }
    return Tensor.fromSync(this.net.rt, arr, [arr.length], "i32", what);
  }

  /** Counts a layer's temporaries (`factor` × its estimate) and waits for the GPU past the limit. */
  async #pace(T: number, factor: number): Promise<void> {
    const scores = 4 * T * T * this.net.config.numHeads;
    this.#pending += factor * (this.net.savedBytesPerLayer(T) + scores);
    if (this.#pending >= DecoderLM.syncBytes) {
      this.#pending = 0;
      await this.net.rt.sync();
    }
  }

  /** Runs embedding + layers (no saving) and returns the residual stream after the last layer. */
  async #trunk(
    ids: Tensor,
    pos0: number,
    kv: KvCache[] | null,
    taps: Taps | null,
  ): Promise<Tensor> {
    let h = this.net.embed(ids, pos0);
    for (let l = 0; l < this.net.numLayers; l++) {
      const { out } = await this.net.layerForward(l, h, {
        pos0,
        kv: kv ? kv[l] : null,
        save: false,
        taps,
      });
      taps?.release();
      h.dispose();
      h = out;
      await this.#pace(ids.size, 1);
    }
    return h;
  }

  /**
   * LM head and cross-entropy over row chunks (never more than one binding of logits):
   * per-row losses into `losses`, and with `dx` the gradient `∂L/∂x` (rows weighted by `weight`).
   * With `uniforms`, the labels are first sampled from the model (sampled Fisher).
   */
  #headLoss(
    x: Tensor,
    targets: Tensor,
    samples: number,
    losses: Tensor,
    dx: Tensor | null,
    weight: number,
    uniforms: Tensor | null,
  ): void {
    const { head } = this.net;
    const [T, E, V] = [x.rows, x.cols, head.rows];
    const rows = Math.max(1, Math.min(T, Math.floor(chunkSize(this.net.rt) / V)));
    const ar = new Arena(this.net.rt);
    try {
      for (let t0 = 0; t0 < T; t0 += rows) {
        const n = Math.min(rows, T - t0);
        const xc = ar.f32([n, E], "head.x");
        xc.copyFrom(x, t0 * E, 0, n * E);
        const logits = this.#headLogits(ar, xc);
        if (uniforms) sampleLabels(targets, logits, uniforms, samples, t0, T - 1);
        crossentropyForward(logits, losses, targets, samples, t0, dx !== null, weight);
        if (dx) {
          const dxc = ar.f32([n, E], "head.dx");
          if (head.pieces.length === 1) matmul(logits, head.pieces[0], { out: dxc });
          else {
            head.pieces.forEach((p, i) => {
              const part = ar.f32([n, p.rows], "head.dlogits_part");
              copyColumns(part, 0, logits, head.starts[i], p.rows);
              matmul(part, p, { out: dxc, beta: i > 0 ? 1 : 0 });
            });
          }
          dx.copyFrom(dxc, 0, t0 * E, n * E);
        }
      }
    } finally {
      ar.dispose();
    }
  }

  /** Logits `[n, V]` of the head inputs `xc` `[n, E]` (an arena tensor). */
  #headLogits(ar: Arena, xc: Tensor): Tensor {
    const { head } = this.net;
    const logits = ar.f32([xc.rows, head.rows], "logits");
    if (head.pieces.length === 1) matmul(xc, head.pieces[0], { transB: true, out: logits });
    else {
      head.pieces.forEach((p, i) => {
        const part = matmul(xc, p, { transB: true, name: "logits_part" });
        copyColumns(logits, head.starts[i], part, 0, p.rows);
        part.dispose();
      });
    }
    return logits;
  }

  /** Reads logits `[x.rows, V]` of final hidden states, chunk by chunk. */
  async #readLogits(x: Tensor): Promise<Float32Array> {
    const V = this.net.head.rows;
    const [T, E] = [x.rows, x.cols];
    const rows = Math.max(1, Math.min(T, Math.floor(chunkSize(this.net.rt) / V)));
    const out = new Float32Array(T * V);
    for (let t0 = 0; t0 < T; t0 += rows) {
      const n = Math.min(rows, T - t0);
      const ar = new Arena(this.net.rt);
      try {
        const xc = ar.f32([n, E], "head.x");
        xc.copyFrom(x, t0 * E, 0, n * E);
        out.set(await this.#headLogits(ar, xc).read(), t0 * V);
      } finally {
        ar.dispose();
      }
    }
    return out;
  }

  /**
   * Logits `[T, V]` (row-major) of one sequence.
   *
   * @example Usage
   * ```ts ignore
   * const z = await model.logits(Int32Array.from([2, 100, 200]));
   * ```
   */
  async logits(ids: Int32Array): Promise<Float32Array> {
    const idsT = this.uploadIds(ids);
    const h = await this.#trunk(idsT, 0, null, null);
    idsT.dispose();
    const { out: x, saved } = this.net.finalForward(h, false);
    h.dispose();
    saved?.dispose();
    try {
      return await this.#readLogits(x);
    } finally {
      x.dispose();
    }
  }

  /** Next-token targets `ids[1…T−1]`, −1 at the last row. */
  #targets(ids: Int32Array): Tensor {
    const tg = new Int32Array(ids.length);
    tg.set(ids.subarray(1));
    tg[ids.length - 1] = -1;
    return Tensor.fromSync(this.net.rt, tg, [tg.length], "i32", "targets");
  }

  #meanLoss(losses: Float32Array, T: number): number {
    let s = 0;
    for (let t = 0; t < T - 1; t++) s += losses[t];
    const v = s / (T - 1);
    if (!Number.isFinite(v)) throw new ModelError(`the loss is ${v} (non-finite logits)`);
    return v;
  }

  /**
   * Mean next-token NLL over positions 0…T−2 of one window (one read-back).
   *
   * @example Usage
   * ```ts ignore
   * const ppl = Math.exp(await model.nll(window));
   * ```
   */
  async nll(ids: Int32Array): Promise<number> {
    if (ids.length < 2) {
      throw new ModelError(`nll: a window needs at least 2 tokens, got ${ids.length}`);
    }
    const ar = new Arena(this.net.rt);
    try {
      const idsT = ar.own(this.uploadIds(ids));
      const h = ar.own(await this.#trunk(idsT, 0, null, null));
      const { out: x, saved } = this.net.finalForward(h, false);
      ar.own(x);
      saved?.dispose();
      const losses = ar.f32([ids.length], "losses");
      this.#headLoss(x, ar.own(this.#targets(ids)), 1, losses, null, 1, null);
      return this.#meanLoss(await losses.read(), ids.length);
    } finally {
      ar.dispose();
    }
  }

  /**
   * One calibration pass (ALGORITHM.md §2.1): forward, mean next-token CE (real or sampled
   * labels), backward, and `onTap(lin, a, g)` for every prunable module (in backward order;
   * forward order with `forwardOnly`). Returns the loss.
   *
   * @example Usage
   * ```ts ignore
   * const loss = await model.calibrate(ids, (lin, a, g) => { matmul(a, a, { transA: true, beta: 1, out: A[lin.name] }); });
   * ```
   */
  async calibrate(
    ids: Int32Array,
    onTap: TapHandler,
    opts: CalibrationOptions = {},
  ): Promise<number> {
    const T = ids.length;
    if (T < 2) throw new ModelError(`calibrate: a sequence needs at least 2 tokens, got ${T}`);
    const S = opts.fisherSamples ?? 0;
    if (!Number.isInteger(S) || S < 0 || S > 16) {
      throw new ModelError(`fisherSamples must be an integer in 0…16, got ${S}`);
    }
    if (opts.properSampledFisher && S > 1) {
      throw new ModelError(
        "properSampledFisher (sampling with replacement and averaging outer products) is not implemented; " +
          "use the reference's estimator (properSampledFisher: false)",
      );
    }
    const taps = new Taps(onTap, opts.maxOutgrad ?? 0);
    const net = this.net;
    const ar = new Arena(net.rt);
    try {
      const idsT = ar.own(this.uploadIds(ids));
      if (opts.forwardOnly) {
        const h = ar.own(await this.#trunk(idsT, 0, null, taps));
        const { out: x, saved } = net.finalForward(h, false);
        ar.own(x);
        saved?.dispose();
        const losses = ar.f32([T], "losses");
        this.#headLoss(x, ar.own(this.#targets(ids)), 1, losses, null, 1, null);
        return this.#meanLoss(await losses.read(), T);
      }
      // Forward, keeping each layer's input (and its activations when they fit the budget) from
      // lowestLayer up: the backward stops there.
      const lowest = opts.lowestLayer ?? 0;
      if (!Number.isInteger(lowest) || lowest < 0) {
        throw new ModelError(`lowestLayer must be a non-negative integer, got ${lowest}`);
      }
      const keepAll =
        net.savedBytesPerLayer(T) * (net.numLayers - Math.min(lowest, net.numLayers)) <=
          DecoderLM.activationBudget;
      const inputs: Tensor[] = [];
      const saved: (Arena | null)[] = [];
      let h = ar.own(net.embed(idsT, 0));
      for (let l = 0; l < net.numLayers; l++) {
        inputs.push(h);
        const save = keepAll && l >= lowest;
        const r = await net.layerForward(l, h, { pos0: 0, kv: null, save, taps: null });
        saved.push(r.saved);
        h = ar.own(r.out);
        await this.#pace(T, save ? 0.5 : 1);
      }
      const fin = net.finalForward(h, true);
      ar.own(fin.out);
      // Loss and its gradient at the head.
      let targets: Tensor;
      let uniforms: Tensor | null = null;
      const samples = Math.max(S, 1);
      if (S > 0) {
        const rng = opts.seed !== undefined ? new Uniform(opts.seed) : this.#fisherStream;
        const u = new Float32Array(T * S);
        for (let i = 0; i < u.length; i++) u[i] = rng.next();
        uniforms = ar.own(Tensor.fromSync(net.rt, u, [u.length], "f32", "fisher.uniforms"));
        targets = ar.own(
          Tensor.fromSync(net.rt, new Int32Array(T * S), [T * S], "i32", "fisher.labels"),
        );
      } else targets = ar.own(this.#targets(ids));
      const losses = ar.f32([T], "losses");
      const dx = ar.f32([T, net.headDim], "dx");
      this.#headLoss(fin.out, targets, samples, losses, dx, 1 / (T - 1), uniforms);
      let dh = net.finalBackward(dx, fin.saved!);
      fin.saved!.dispose();
      // Backward, layer by layer in reverse, recomputing activations where they were not kept,
      // down to lowestLayer.
      for (let l = net.numLayers - 1; l >= lowest; l--) {
        let sv = saved[l];
        if (!sv) {
          const r = await net.layerForward(l, inputs[l], {
            pos0: 0,
            kv: null,
            save: true,
            taps: null,
          });
          r.out.dispose();
          sv = r.saved!;
        }
        try {
          const next = await net.layerBackward(l, dh, sv, taps);
          dh.dispose();
          dh = next;
        } finally {
          sv.dispose();
          taps.release();
        }
        await this.#pace(T, 2.5);
      }
      dh.dispose();
      return this.#meanLoss(await losses.read(), T);
    } finally {
      taps.release();
      ar.dispose();
    }
  }

  /** Fresh per-layer key/value caches for `capacity` positions (generation). */
  newKvCache(capacity: number): KvCache[] {
    const out: KvCache[] = [];
    for (let l = 0; l < this.net.numLayers; l++) {
      out.push({
        k: keep(new Tensor(this.net.rt, [capacity, this.net.kvWidth], "f32", `kv.k${l}`)),
        v: keep(new Tensor(this.net.rt, [capacity, this.net.kvWidth], "f32", `kv.v${l}`)),
      });
    }
    return out;
  }

  /**
   * Runs `ids` at positions `pos0…` through the model, filling the caches (when given), and
   * returns the logits of the last row `[V]` (one read-back).
   */
  async lastLogits(
    ids: ArrayLike<number>,
    pos0: number,
    kv: KvCache[] | null,
  ): Promise<Float32Array> {
    const idsT = this.uploadIds(ids as Int32Array, pos0);
    if (kv && pos0 + idsT.size > kv[0].k.rows) {
      idsT.dispose();
      throw new ModelError(`KV cache of ${kv[0].k.rows} positions is full`);
    }
    const h = await this.#trunk(idsT, pos0, kv, null);
    idsT.dispose();
    const E = this.net.hidden;
    const last = new Tensor(this.net.rt, [1, E], "f32", "last");
    last.copyFrom(h, (h.rows - 1) * E, 0, E);
    h.dispose();
    const { out: x, saved } = this.net.finalForward(last, false);
    last.dispose();
    saved?.dispose();
    try {
      return await this.#readLogits(x);
    } finally {
      x.dispose();
    }
  }

  /**
   * Generates text after `prompt` with a KV cache (greedy when temperature is 0) and returns the
   * continuation (without the prompt).
   *
   * @example Usage
   * ```ts ignore
   * console.log(await model.generate("Once upon a time", { maxTokens: 20, temperature: 0 }));
   * ```
   */
  generate(prompt: string, opts: GenerateOptions = {}): Promise<string> {
    return generateText(this, prompt, opts);
  }

  /**
   * Writes the model as a Hugging Face folder (config.json, model.safetensors, tokenizer files
   * copied from the source folder), atomically.
   *
   * @example Usage
   * ```ts ignore
   * await model.save("out/opt-125m-pruned");
   * ```
   */
  async save(dir: string): Promise<void> {
    this.#check();
    const params = this.net.parameters();
    const net = this.net;
    async function* tensors(): AsyncIterable<TensorToWrite> {
      for (const p of params) yield { name: p.name, shape: p.shape, data: await p.read() };
    }
    await saveHfFolder(dir, {
      config: { ...net.config.raw, torch_dtype: "float32" },
      tensors: tensors(),
      sourceDir: this.sourceDir,
    });
  }

  /** Frees all GPU memory of the model. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.net.dispose();
  }

  #check(): void {
    if (this.#disposed) throw new ModelError("the model was disposed");
  }
}
