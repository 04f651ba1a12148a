/**
 * Llama (and Mistral-style) decoders on the GPU, matching Hugging Face `LlamaForCausalLM` in
 * fp32: RMSNorm, rotate_half RoPE with `rope_theta` and `rope_scaling` (linear / llama3),
 * grouped-query attention (repeat_kv), optional sliding window, SiLU-gated MLP
 * `down(silu(gate(x)) ⊙ up(x))`, tied or untied LM head. Reads top to bottom: weights,
 * embedding, layer forward, layer backward, final norm.
 *
 * @module
 */
import type { Runtime } from "../kernels/device.ts";
import {
  attentionBackward,
  type AttentionShape,
  residualForward,
  rmsnormBackward,
  rmsnormForward,
  ropeBackward,
  ropeForward,
  ropeInvFreq,
  ropeTables,
  swigluBackward,
  swigluForward,
} from "../kernels/nn.ts";
import { keep, Tensor } from "../kernels/tensor.ts";
import {
  Arena,
  attend,
  chunkLimits,
  type DecoderNet,
  embedRows,
  type LayerContext,
  type LayerResult,
  type Linear,
  linearGrad,
  loadLinear,
  loadTensor,
  readPieces,
  readWeight,
  type RowPieces,
  runLinear,
  type Taps,
  uploadPieces,
} from "./transformer.ts";
import type { LlamaConfig, WeightSource } from "./types.ts";

/** Parameters of one Llama decoder layer. */
interface LlamaLayer {
  inputNorm: Tensor; // input_layernorm.weight [d]
  q: Linear; // [H·D, d]
  k: Linear; // [KH·D, d]
  v: Linear; // [KH·D, d]
  o: Linear; // [d, H·D]
  postNorm: Tensor; // post_attention_layernorm.weight [d]
  gate: Linear; // [f, d]
  up: Linear; // [f, d]
  down: Linear; // [d, f]
}

/** Activations one layer keeps for its backward. */
interface LlamaSaved {
  h: Tensor; // layer input [T, d]
  n1: Tensor; // RMSNorm(h) [T, d]
  r1: Tensor; // its rstd [T]
  q: Tensor; // after RoPE [T, H·D]
  k: Tensor; // after RoPE [T, KH·D]
  v: Tensor; // [T, KH·D]
  att: Tensor; // attention output [T, H·D]
  h2: Tensor; // h + o_proj(att) [T, d]
  n2: Tensor; // RMSNorm(h2) [T, d]
  r2: Tensor; // its rstd [T]
  g: Tensor; // gate_proj output [T, f]
  u: Tensor; // up_proj output [T, f]
  m: Tensor; // silu(g) ⊙ u [T, f]
}

const savedActs = new WeakMap<Arena, LlamaSaved>();
const finalSaved = new WeakMap<Arena, { h: Tensor; r: Tensor }>();

/** Llama decoder stack (implements {@link DecoderNet}). */
export class LlamaNet implements DecoderNet {
  /** Model family. */
  readonly family = "llama" as const;
  /** Residual width d. */
  readonly hidden: number;
  /** Width of the LM head input. */
  readonly headDim: number;
  /** Number of decoder layers. */
  readonly numLayers: number;
  /** Key/value width KH·D. */
  readonly kvWidth: number;
  readonly maxPositions = Number.POSITIVE_INFINITY;
  readonly linears: Linear[];
  #shape: AttentionShape;
  #cos: Tensor | null = null; // [P, D/2]
  #sin: Tensor | null = null; // [P, D/2]

  private constructor(
    readonly config: LlamaConfig,
    readonly rt: Runtime,
    readonly embedTokens: RowPieces, // [V, d]
    readonly layers: LlamaLayer[],
    readonly norm: Tensor, // model.norm.weight [d]
    readonly head: RowPieces, // lm_head [V, d] (the embedding when tied)
  ) {
    this.hidden = config.hiddenSize;
    this.headDim = config.hiddenSize;
    this.numLayers = config.numLayers;
    this.kvWidth = config.numKvHeads * config.headDim;
    this.linears = layers.flatMap((L) => [L.q, L.k, L.v, L.o, L.gate, L.up, L.down]);
    this.#shape = {
      numHeads: config.numHeads,
      numKvHeads: config.numKvHeads,
      headDim: config.headDim,
      window: config.slidingWindow ?? 0,
    };
  }

  /**
   * Uploads a Llama checkpoint (HF tensor names) to the GPU.
   *
   * @param config normalised Llama config
   * @param w the checkpoint
   * @param rt GPU runtime
   */
  static async load(config: LlamaConfig, w: WeightSource, rt: Runtime): Promise<LlamaNet> {
    const {
      hiddenSize: d,
      intermediateSize: f,
      vocabSize: V,
      numHeads: H,
      numKvHeads: KH,
      headDim: D,
    } = config;
    if (H % KH !== 0) {
      throw new Error(`Llama config: ${H} heads are not a multiple of ${KH} key/value heads`);
    }
    if (D % 2 !== 0) throw new Error(`Llama config: head_dim ${D} must be even for RoPE`);
    const embedTokens = uploadPieces(
      rt,
      await readWeight(w, "model.embed_tokens.weight", [V, d]),
      V,
      d,
      "model.embed_tokens.weight",
    );
    const layers: LlamaLayer[] = [];
    const [ab, mb] = [config.attentionBias, config.mlpBias];
    for (let l = 0; l < config.numLayers; l++) {
      const p = `model.layers.${l}`;
      layers.push({
        inputNorm: await loadTensor(rt, w, `${p}.input_layernorm.weight`, [d]),
        q: await loadLinear(rt, w, `${p}.self_attn.q_proj`, l, "q_proj", H * D, d, ab),
        k: await loadLinear(rt, w, `${p}.self_attn.k_proj`, l, "k_proj", KH * D, d, ab),
        v: await loadLinear(rt, w, `${p}.self_attn.v_proj`, l, "v_proj", KH * D, d, ab),
        o: await loadLinear(rt, w, `${p}.self_attn.o_proj`, l, "o_proj", d, H * D, ab),
        postNorm: await loadTensor(rt, w, `${p}.post_attention_layernorm.weight`, [d]),
        gate: await loadLinear(rt, w, `${p}.mlp.gate_proj`, l, "gate_proj", f, d, mb),
        up: await loadLinear(rt, w, `${p}.mlp.up_proj`, l, "up_proj", f, d, mb),
        down: await loadLinear(rt, w, `${p}.mlp.down_proj`, l, "down_proj", d, f, mb),
      });
    }
    const norm = await loadTensor(rt, w, "model.norm.weight", [d]);
    let head = embedTokens;
    if (!config.tieWordEmbeddings) {
      head = uploadPieces(
        rt,
        await readWeight(w, "lm_head.weight", [V, d]),
        V,
        d,
        "lm_head.weight",
      );
    }
    return new LlamaNet(config, rt, embedTokens, layers, norm, head);
  }

  /** Cos/sin tables covering positions `0 … n − 1` (grown on demand, kept across calls). */
  #rope(n: number): { cos: Tensor; sin: Tensor } {
    if (!this.#cos || this.#cos.rows < n) {
      this.#cos?.dispose();
      this.#sin?.dispose();
      const P = Math.max(n, this.config.maxPositions);
      const inv = ropeInvFreq(this.config.headDim, this.config.ropeTheta, this.config.ropeScaling);
      const { cos, sin } = ropeTables(inv, P);
      this.#cos = keep(Tensor.fromSync(this.rt, cos, [P, inv.length], "f32", "rope.cos"));
      this.#sin = keep(Tensor.fromSync(this.rt, sin, [P, inv.length], "f32", "rope.sin"));
    }
    return { cos: this.#cos, sin: this.#sin! };
  }

  /** Token embedding `[T, d]`. */
  embed(ids: Tensor, _pos0: number): Tensor {
    const h = new Tensor(this.rt, [ids.size, this.hidden], "f32", "llama.embed_tokens");
    embedRows(h, ids, this.embedTokens);
    return h;
  }

  /** One decoder layer: `h + o(attn(rope(q), rope(k), v))` on RMSNorm(h), then `+ down(silu(gate)·up)`. */
  async layerForward(l: number, h: Tensor, ctx: LayerContext): Promise<LayerResult> {
    const L = this.layers[l];
    const cfg = this.config;
    const [T, d] = [h.rows, h.cols];
    const ar = new Arena(this.rt);
    // attention block
    const n1 = ar.f32([T, d], "n1"), r1 = ar.f32([T], "r1");
    rmsnormForward(n1, r1, h, L.inputNorm, cfg.rmsNormEps);
    const q = runLinear(ar, L.q, n1);
    const k = runLinear(ar, L.k, n1);
    const v = runLinear(ar, L.v, n1);
    if (ctx.taps) { for (const lin of [L.q, L.k, L.v]) await ctx.taps.tap(lin, n1, null); }
    const { cos, sin } = this.#rope(ctx.pos0 + T);
    ropeForward(q, cos, sin, cfg.numHeads, ctx.pos0);
    ropeForward(k, cos, sin, cfg.numKvHeads, ctx.pos0);
    const att = ar.f32([T, cfg.numHeads * cfg.headDim], "att");
    attend(att, q, k, v, this.#shape, ctx);
    const o = runLinear(ar, L.o, att);
    if (ctx.taps) await ctx.taps.tap(L.o, att, null);
    const h2 = ar.f32([T, d], "h2");
    residualForward(h2, h, o);
    // MLP block
    const n2 = ar.f32([T, d], "n2"), r2 = ar.f32([T], "r2");
    rmsnormForward(n2, r2, h2, L.postNorm, cfg.rmsNormEps);
    const g = runLinear(ar, L.gate, n2);
    const u = runLinear(ar, L.up, n2);
    if (ctx.taps) { for (const lin of [L.gate, L.up]) await ctx.taps.tap(lin, n2, null); }
    const m = ar.f32([T, cfg.intermediateSize], "m");
    swigluForward(m, g, u);
    const dn = runLinear(ar, L.down, m);
    if (ctx.taps) await ctx.taps.tap(L.down, m, null);
    const out = new Tensor(this.rt, [T, d], "f32", "llama.h");
    residualForward(out, h2, dn);
    if (!ctx.save) {
      ar.dispose();
      return { out, saved: null };
    }
    savedActs.set(ar, { h, n1, r1, q, k, v, att, h2, n2, r2, g, u, m });
    return { out, saved: ar };
  }

  /** Backward of {@link layerForward} in reverse order; taps down, gate, up, o, q, k, v. */
  async layerBackward(l: number, dout: Tensor, saved: Arena, taps: Taps | null): Promise<Tensor> {
    const L = this.layers[l];
    const S = savedActs.get(saved)!;
    const cfg = this.config;
    const [T, d, f] = [dout.rows, dout.cols, cfg.intermediateSize];
    const ar = new Arena(this.rt);
    try {
      // out = h2 + down(m), m = silu(g) ⊙ u
      if (taps) await taps.tap(L.down, S.m, dout);
      const dm = ar.f32([T, f], "dm");
      linearGrad(L.down, dout, dm, false);
      const dg = ar.f32([T, f], "dg"), du = ar.f32([T, f], "du");
      swigluBackward(dg, du, dm, S.g, S.u);
      if (taps) {
        await taps.tap(L.gate, S.n2, dg);
        await taps.tap(L.up, S.n2, du);
      }
      const dn2 = ar.f32([T, d], "dn2");
      linearGrad(L.gate, dg, dn2, false);
      linearGrad(L.up, du, dn2, true);
      const dh2 = ar.own(dout.clone("dh2"));
      rmsnormBackward(dh2, dn2, S.h2, L.postNorm, S.r2, true);
      // h2 = h + o(att)
      if (taps) await taps.tap(L.o, S.att, dh2);
      const datt = ar.f32([T, cfg.numHeads * cfg.headDim], "datt");
      linearGrad(L.o, dh2, datt, false);
      const dq = ar.f32([T, cfg.numHeads * cfg.headDim], "dq");
      const dk = ar.f32([T, this.kvWidth], "dk"), dv = ar.f32([T, this.kvWidth], "dv");
      attentionBackward(dq, dk, dv, datt, S.q, S.k, S.v, {
        ...this.#shape,
        maxScoreElems: chunkLimits.elems,
      });
      const { cos, sin } = this.#rope(T);
      ropeBackward(dq, cos, sin, cfg.numHeads, 0);
      ropeBackward(dk, cos, sin, cfg.numKvHeads, 0);
      if (taps) {
        await taps.tap(L.q, S.n1, dq);
        await taps.tap(L.k, S.n1, dk);
        await taps.tap(L.v, S.n1, dv);
      }
      const dn1 = ar.f32([T, d], "dn1");
      linearGrad(L.q, dq, dn1, false);
      linearGrad(L.k, dk, dn1, true);
      linearGrad(L.v, dv, dn1, true);
      const dh = dh2.clone("llama.dh");
      rmsnormBackward(dh, dn1, S.h, L.inputNorm, S.r1, true);
      return dh;
    } finally {
      ar.dispose();
    }
  }

  /** Final RMSNorm `[T, d]` → `[T, d]`. */
  finalForward(h: Tensor, save: boolean): LayerResult {
    const [T, d] = [h.rows, h.cols];
    const out = new Tensor(this.rt, [T, d], "f32", "llama.norm");
    const ar = new Arena(this.rt);
    const r = ar.f32([T], "rf");
    rmsnormForward(out, r, h, this.norm, this.config.rmsNormEps);
    if (!save) {
      ar.dispose();
      return { out, saved: null };
    }
    finalSaved.set(ar, { h: ar.own(h.clone("hf")), r });
    return { out, saved: ar };
  }

  /** Backward of {@link finalForward}. */
  finalBackward(dx: Tensor, saved: Arena): Tensor {
    const S = finalSaved.get(saved)!;
    const dh = new Tensor(this.rt, [dx.rows, this.hidden], "f32", "llama.dh_final");
    rmsnormBackward(dh, dx, S.h, this.norm, S.r);
    return dh;
  }

  /** Bytes of activations a layer keeps for its backward. */
  savedBytesPerLayer(T: number): number {
    const c = this.config;
    return T *
      (5 * this.hidden + 2 * c.numHeads * c.headDim + 2 * this.kvWidth + 3 * c.intermediateSize +
        2) *
      4;
  }

  /** Every parameter under its HF name (for saving). */
  parameters(): { name: string; shape: number[]; read: () => Promise<Float32Array> }[] {
    const out: { name: string; shape: number[]; read: () => Promise<Float32Array> }[] = [];
    const add = (name: string, t: Tensor | null) => {
      if (t) out.push({ name, shape: [...t.shape], read: () => t.read() });
    };
    const e = this.embedTokens;
    out.push({
      name: "model.embed_tokens.weight",
      shape: [e.rows, e.cols],
      read: () => readPieces(e),
    });
    this.layers.forEach((L, l) => {
      add(`model.layers.${l}.input_layernorm.weight`, L.inputNorm);
      add(`model.layers.${l}.post_attention_layernorm.weight`, L.postNorm);
      for (const lin of [L.q, L.k, L.v, L.o, L.gate, L.up, L.down]) {
        add(`${lin.name}.weight`, lin.weight);
        add(`${lin.name}.bias`, lin.bias);
      }
    });
    add("model.norm.weight", this.norm);
    if (this.head !== this.embedTokens) {
      out.push({
        name: "lm_head.weight",
        shape: [this.head.rows, this.head.cols],
        read: () => readPieces(this.head),
      });
    }
    return out;
  }

  /** Frees every weight. */
  dispose(): void {
    const all: (Tensor | null)[] = [
      this.norm,
      this.#cos,
      this.#sin,
      ...this.embedTokens.pieces,
      ...this.head.pieces,
    ];
    for (const L of this.layers) {
      all.push(L.inputNorm, L.postNorm);
      for (const lin of [L.q, L.k, L.v, L.o, L.gate, L.up, L.down]) all.push(lin.weight, lin.bias);
    }
    for (const t of all) t?.dispose();
  }
}
