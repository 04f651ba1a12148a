/**
 * OPT (facebook/opt-*) on the GPU, matching Hugging Face `OPTForCausalLM` in fp32: learned
 * positions with offset 2, optional project_in/project_out (opt-350m), pre-LN blocks or post-LN
 * blocks (`do_layer_norm_before: false`), q scaled by `head_dim^-1/2`, ReLU (or GELU) MLP and
 * an LM head tied to the token embedding. Reads top to bottom: weights, embedding, layer
 * forward, layer backward, final norm.
 *
 * @module
 */
import type { Runtime } from "../kernels/device.ts";
import {
  attentionBackward,
  type AttentionShape,
  geluBackward,
  geluForward,
  layernormBackward,
  layernormForward,
  linearBackward,
  linearForward,
  reluBackward,
  reluForward,
  residualForward,
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
import type { OptConfig, WeightSource } from "./types.ts";

/** A LayerNorm's affine parameters (both null without `layer_norm_elementwise_affine`). */
interface Norm {
  weight: Tensor | null;
  bias: Tensor | null;
}

/** Parameters of one OPT decoder layer. */
interface OptLayer {
  attnNorm: Norm; // self_attn_layer_norm [d]
  q: Linear; // [d, d]
  k: Linear; // [d, d]
  v: Linear; // [d, d]
  out: Linear; // out_proj [d, d]
  mlpNorm: Norm; // final_layer_norm [d]
  fc1: Linear; // [f, d]
  fc2: Linear; // [d, f]
}

/** Activations one layer keeps for its backward (named as in the forward). */
interface OptSaved {
  h: Tensor; // layer input [T, d]
  xa: Tensor; // attention input: LN1(h) (pre-LN) or h (post-LN) [T, d]
  m1: Tensor; // LN1 mean [T]
  r1: Tensor; // LN1 rstd [T]
  q: Tensor; // [T, d]
  k: Tensor; // [T, d]
  v: Tensor; // [T, d]
  att: Tensor; // attention output [T, d]
  s1: Tensor; // h + out_proj(att) [T, d]
  h2: Tensor; // MLP residual input [T, d]
  x2: Tensor; // MLP input: LN2(h2) (pre-LN) or h2 (post-LN) [T, d]
  m2: Tensor; // LN2 mean [T]
  r2: Tensor; // LN2 rstd [T]
  f1: Tensor; // fc1 output [T, f]
  a1: Tensor; // activation [T, f]
  s2: Tensor; // h2 + fc2(a1) [T, d] (post-LN only; pre-LN it is the layer output)
}

const savedActs = new WeakMap<Arena, OptSaved>();

/** OPT decoder stack (implements {@link DecoderNet}). */
export class OptNet implements DecoderNet {
  /** Model family. */
  readonly family = "opt" as const;
  /** Residual width d. */
  readonly hidden: number;
  /** Width of the LM head input. */
  readonly headDim: number;
  /** Number of decoder layers. */
  readonly numLayers: number;
  /** Key/value width KH·D. */
  readonly kvWidth: number;
  readonly maxPositions: number;
  readonly linears: Linear[];
  #shape: AttentionShape;

  private constructor(
    readonly config: OptConfig,
    readonly rt: Runtime,
    readonly embedTokens: RowPieces, // [V, E]
    readonly embedPositions: Tensor, // [maxPositions + 2, d]
    readonly projectIn: Tensor | null, // [d, E]
    readonly projectOut: Tensor | null, // [E, d]
    readonly layers: OptLayer[],
    readonly finalNorm: Norm | null, // decoder.final_layer_norm (pre-LN only)
    readonly head: RowPieces, // [V, E], tied to embedTokens unless lm_head.weight is separate
  ) {
    this.hidden = config.hiddenSize;
    this.headDim = config.wordEmbedProjDim;
    this.numLayers = config.numLayers;
    this.kvWidth = config.hiddenSize;
    this.maxPositions = config.maxPositions;
    this.linears = layers.flatMap((L) => [L.q, L.k, L.v, L.out, L.fc1, L.fc2]);
    this.#shape = {
      numHeads: config.numHeads,
      numKvHeads: config.numHeads,
      headDim: config.hiddenSize / config.numHeads,
    };
  }

  /**
   * Uploads an OPT checkpoint (HF tensor names) to the GPU.
   *
   * @param config normalised OPT config
   * @param w the checkpoint
   * @param rt GPU runtime
   */
  static async load(config: OptConfig, w: WeightSource, rt: Runtime): Promise<OptNet> {
    const { hiddenSize: d, ffnDim: f, vocabSize: V, wordEmbedProjDim: E, numHeads } = config;
    if (d % numHeads !== 0) {
      throw new Error(`OPT config: hidden_size ${d} is not a multiple of ${numHeads} heads`);
    }
    const p = "model.decoder";
    const tok = await readWeight(w, `${p}.embed_tokens.weight`, [V, E]);
    const embedTokens = uploadPieces(rt, tok, V, E, `${p}.embed_tokens.weight`);
    const embedPositions = await loadTensor(rt, w, `${p}.embed_positions.weight`, [
      config.maxPositions + 2,
      d,
    ]);
    const proj = E !== d;
    const projectIn = proj ? await loadTensor(rt, w, `${p}.project_in.weight`, [d, E]) : null;
    const projectOut = proj ? await loadTensor(rt, w, `${p}.project_out.weight`, [E, d]) : null;
    const norm = async (name: string): Promise<Norm> =>
      config.layerNormAffine
        ? {
          weight: await loadTensor(rt, w, `${name}.weight`, [d]),
          bias: await loadTensor(rt, w, `${name}.bias`, [d]),
        }
        : { weight: null, bias: null };
    const b = config.enableBias;
    const layers: OptLayer[] = [];
    for (let l = 0; l < config.numLayers; l++) {
      const q = `${p}.layers.${l}`;
      layers.push({
        attnNorm: await norm(`${q}.self_attn_layer_norm`),
        q: await loadLinear(rt, w, `${q}.self_attn.q_proj`, l, "q_proj", d, d, b),
        k: await loadLinear(rt, w, `${q}.self_attn.k_proj`, l, "k_proj", d, d, b),
        v: await loadLinear(rt, w, `${q}.self_attn.v_proj`, l, "v_proj", d, d, b),
        out: await loadLinear(rt, w, `${q}.self_attn.out_proj`, l, "out_proj", d, d, b),
        mlpNorm: await norm(`${q}.final_layer_norm`),
        fc1: await loadLinear(rt, w, `${q}.fc1`, l, "fc1", f, d, b),
        fc2: await loadLinear(rt, w, `${q}.fc2`, l, "fc2", d, f, b),
      });
    }
    const finalNorm = config.doLayerNormBefore ? await norm(`${p}.final_layer_norm`) : null;
    let head = embedTokens;
    if (!config.tieWordEmbeddings && w.has("lm_head.weight")) {
      head = uploadPieces(
        rt,
        await readWeight(w, "lm_head.weight", [V, E]),
        V,
        E,
        "lm_head.weight",
      );
    }
    return new OptNet(
      config,
      rt,
      embedTokens,
      embedPositions,
      projectIn,
      projectOut,
      layers,
      finalNorm,
      head,
    );
  }

  /** Token embedding (+ project_in) plus learned positions `pos0 + t + 2`: `[T, d]`. */
  embed(ids: Tensor, pos0: number): Tensor {
    const T = ids.size;
    const { hiddenSize: d, wordEmbedProjDim: E } = this.config;
    const tok = new Tensor(this.rt, [T, E], "f32", "opt.embed_tokens");
    embedRows(tok, ids, this.embedTokens);
    let h = tok;
    if (this.projectIn) {
      h = new Tensor(this.rt, [T, d], "f32", "opt.project_in");
      runProjection(h, tok, this.projectIn);
      tok.dispose();
    }
    const pos = Tensor.fromSync(
      this.rt,
      Int32Array.from({ length: T }, (_, t) => pos0 + t + 2),
      [T],
      "i32",
      "positions",
    );
    embedRows(h, pos, {
      pieces: [this.embedPositions],
      starts: [0],
      rows: this.embedPositions.rows,
      cols: d,
    }, true);
    pos.dispose();
    return h;
  }

  /** One decoder layer: pre-LN `h + attn(LN1(h))`, `+ fc2(act(fc1(LN2(·))))`, or the post-LN variant. */
  async layerForward(l: number, h: Tensor, ctx: LayerContext): Promise<LayerResult> {
    const L = this.layers[l];
    const cfg = this.config;
    const [T, d] = [h.rows, h.cols];
    const ar = new Arena(this.rt);
    const pre = cfg.doLayerNormBefore;
    // attention block
    const m1 = ar.f32([T], "m1"), r1 = ar.f32([T], "r1");
    let xa = h;
    if (pre) {
      xa = ar.f32([T, d], "ln1");
      layernormForward(xa, m1, r1, h, L.attnNorm.weight, L.attnNorm.bias, cfg.layerNormEps);
    }
    const q = runLinear(ar, L.q, xa);
    const k = runLinear(ar, L.k, xa);
    const v = runLinear(ar, L.v, xa);
    if (ctx.taps) { for (const lin of [L.q, L.k, L.v]) await ctx.taps.tap(lin, xa, null); }
    const att = ar.f32([T, d], "att");
    attend(att, q, k, v, this.#shape, ctx);
    const o = runLinear(ar, L.out, att);
    if (ctx.taps) await ctx.taps.tap(L.out, att, null);
    const s1 = ar.f32([T, d], "s1");
    residualForward(s1, h, o);
    // MLP block
    const m2 = ar.f32([T], "m2"), r2 = ar.f32([T], "r2");
    let h2 = s1, x2 = s1;
    if (pre) {
      x2 = ar.f32([T, d], "ln2");
      layernormForward(x2, m2, r2, h2, L.mlpNorm.weight, L.mlpNorm.bias, cfg.layerNormEps);
    } else {
      h2 = x2 = ar.f32([T, d], "ln1");
      layernormForward(h2, m1, r1, s1, L.attnNorm.weight, L.attnNorm.bias, cfg.layerNormEps);
    }
    const f1 = runLinear(ar, L.fc1, x2);
    if (ctx.taps) await ctx.taps.tap(L.fc1, x2, null);
    const a1 = ar.f32([T, cfg.ffnDim], "act");
    if (cfg.activation === "relu") reluForward(a1, f1);
    else geluForward(a1, f1);
    const f2 = runLinear(ar, L.fc2, a1);
    if (ctx.taps) await ctx.taps.tap(L.fc2, a1, null);
    const out = new Tensor(this.rt, [T, d], "f32", "opt.h");
    let s2 = out;
    if (pre) residualForward(out, h2, f2);
    else {
      s2 = ar.f32([T, d], "s2");
      residualForward(s2, h2, f2);
      layernormForward(out, m2, r2, s2, L.mlpNorm.weight, L.mlpNorm.bias, cfg.layerNormEps);
    }
    if (!ctx.save) {
      ar.dispose();
      return { out, saved: null };
    }
    savedActs.set(ar, { h, xa, m1, r1, q, k, v, att, s1, h2, x2, m2, r2, f1, a1, s2 });
    return { out, saved: ar };
  }

  /** Backward of {@link layerForward} in reverse order; taps fc2, fc1, out_proj, q, k, v. */
  async layerBackward(l: number, dout: Tensor, saved: Arena, taps: Taps | null): Promise<Tensor> {
    const L = this.layers[l];
    const S = savedActs.get(saved)!;
    const cfg = this.config;
    const pre = cfg.doLayerNormBefore;
    const [T, d] = [dout.rows, dout.cols];
    const ar = new Arena(this.rt);
    try {
      // out = s2 (pre-LN) or LN2(s2) (post-LN); s2 = h2 + fc2(a1)
      let ds2 = dout;
      if (!pre) {
        ds2 = ar.f32([T, d], "ds2");
        layernormBackward(ds2, dout, S.s2, L.mlpNorm.weight, S.m2, S.r2);
      }
      if (taps) await taps.tap(L.fc2, S.a1, ds2);
      const da1 = ar.f32([T, cfg.ffnDim], "da1");
      linearGrad(L.fc2, ds2, da1, false);
      const df1 = ar.f32([T, cfg.ffnDim], "df1");
      if (cfg.activation === "relu") reluBackward(df1, da1, S.f1);
      else geluBackward(df1, da1, S.f1);
      if (taps) await taps.tap(L.fc1, S.x2, df1);
      // dh2 = ds2 + (through LN2 when pre-LN) fc1ᵀ·df1
      const dh2 = ar.own(ds2.clone("dh2"));
      if (pre) {
        const dx2 = ar.f32([T, d], "dx2");
        linearGrad(L.fc1, df1, dx2, false);
        layernormBackward(dh2, dx2, S.h2, L.mlpNorm.weight, S.m2, S.r2, true);
      } else linearGrad(L.fc1, df1, dh2, true);
      // s1 = h + out_proj(att); h2 = s1 (pre-LN) or LN1(s1) (post-LN)
      let ds1 = dh2;
      if (!pre) {
        ds1 = ar.f32([T, d], "ds1");
        layernormBackward(ds1, dh2, S.s1, L.attnNorm.weight, S.m1, S.r1);
      }
      if (taps) await taps.tap(L.out, S.att, ds1);
      const datt = ar.f32([T, d], "datt");
      linearGrad(L.out, ds1, datt, false);
      const dq = ar.f32([T, d], "dq"), dk = ar.f32([T, d], "dk"), dv = ar.f32([T, d], "dv");
      attentionBackward(dq, dk, dv, datt, S.q, S.k, S.v, {
        ...this.#shape,
        maxScoreElems: chunkLimits.elems,
      });
      if (taps) {
        await taps.tap(L.q, S.xa, dq);
        await taps.tap(L.k, S.xa, dk);
        await taps.tap(L.v, S.xa, dv);
      }
      // dh = ds1 + (through LN1 when pre-LN) Σ Wᵀ·d{q,k,v}
      const dh = ds1.clone("opt.dh");
      if (pre) {
        const dxa = ar.f32([T, d], "dxa");
        linearGrad(L.q, dq, dxa, false);
        linearGrad(L.k, dk, dxa, true);
        linearGrad(L.v, dv, dxa, true);
        layernormBackward(dh, dxa, S.h, L.attnNorm.weight, S.m1, S.r1, true);
      } else {
        linearGrad(L.q, dq, dh, true);
        linearGrad(L.k, dk, dh, true);
        linearGrad(L.v, dv, dh, true);
      }
      return keep(dh);
    } finally {
      ar.dispose();
    }
  }

  /** decoder.final_layer_norm (pre-LN only) then project_out: `[T, d]` → `[T, E]`. */
  finalForward(h: Tensor, save: boolean): LayerResult {
    const [T, d] = [h.rows, h.cols];
    const ar = new Arena(this.rt);
    let x = h;
    const m = ar.f32([T], "mf"), r = ar.f32([T], "rf");
    if (this.finalNorm) {
      x = ar.f32([T, d], "lnf");
      layernormForward(
        x,
        m,
        r,
        h,
        this.finalNorm.weight,
        this.finalNorm.bias,
        this.config.layerNormEps,
      );
    }
    let out: Tensor;
    if (this.projectOut) {
      out = new Tensor(this.rt, [T, this.headDim], "f32", "opt.project_out");
      runProjection(out, x, this.projectOut);
    } else out = x.clone("opt.final");
    if (!save) {
      ar.dispose();
      return { out, saved: null };
    }
    finalSaved.set(ar, { h: ar.own(h.clone("hf")), m, r });
    return { out, saved: ar };
  }

  /** Backward of {@link finalForward}. */
  finalBackward(dx: Tensor, saved: Arena): Tensor {
    const S = finalSaved.get(saved)!;
    const T = dx.rows;
    const d = this.hidden;
    let dn = dx;
    const ar = new Arena(this.rt);
    try {
      if (this.projectOut) {
        dn = ar.f32([T, d], "dlnf");
        linearBackward(dn, dx, this.projectOut); // project_out W [E, d]: dx = dy·W
      }
      const dh = new Tensor(this.rt, [T, d], "f32", "opt.dh_final");
      if (this.finalNorm) layernormBackward(dh, dn, S.h, this.finalNorm.weight, S.m, S.r);
      else dh.copyFrom(dn);
      return dh;
    } finally {
      ar.dispose();
    }
  }

  /** Bytes of activations a layer keeps for its backward. */
  savedBytesPerLayer(T: number): number {
    return T * (10 * this.hidden + 2 * this.config.ffnDim + 4) * 4;
  }

  /** Every parameter under its HF name (for saving). */
  parameters(): { name: string; shape: number[]; read: () => Promise<Float32Array> }[] {
    const out: { name: string; shape: number[]; read: () => Promise<Float32Array> }[] = [];
    const add = (name: string, t: Tensor | null) => {
      if (t) out.push({ name, shape: [...t.shape], read: () => t.read() });
    };
    const p = "model.decoder";
    out.push({
      name: `${p}.embed_tokens.weight`,
      shape: [this.embedTokens.rows, this.embedTokens.cols],
      read: () => readPieces(this.embedTokens),
    });
    add(`${p}.embed_positions.weight`, this.embedPositions);
    add(`${p}.project_in.weight`, this.projectIn);
    add(`${p}.project_out.weight`, this.projectOut);
    this.layers.forEach((L, l) => {
      const q = `${p}.layers.${l}`;
      add(`${q}.self_attn_layer_norm.weight`, L.attnNorm.weight);
      add(`${q}.self_attn_layer_norm.bias`, L.attnNorm.bias);
      add(`${q}.final_layer_norm.weight`, L.mlpNorm.weight);
      add(`${q}.final_layer_norm.bias`, L.mlpNorm.bias);
      for (const lin of [L.q, L.k, L.v, L.out, L.fc1, L.fc2]) {
        add(`${lin.name}.weight`, lin.weight);
        add(`${lin.name}.bias`, lin.bias);
      }
    });
    if (this.finalNorm) {
      add(`${p}.final_layer_norm.weight`, this.finalNorm.weight);
      add(`${p}.final_layer_norm.bias`, this.finalNorm.bias);
    }
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
    const all: (Tensor | null)[] = [this.embedPositions, this.projectIn, this.projectOut];
    all.push(...this.embedTokens.pieces, ...this.head.pieces);
    for (const L of this.layers) {
      all.push(L.attnNorm.weight, L.attnNorm.bias, L.mlpNorm.weight, L.mlpNorm.bias);
      for (const lin of [L.q, L.k, L.v, L.out, L.fc1, L.fc2]) all.push(lin.weight, lin.bias);
    }
    if (this.finalNorm) all.push(this.finalNorm.weight, this.finalNorm.bias);
    for (const t of all) t?.dispose();
  }
}

const finalSaved = new WeakMap<Arena, { h: Tensor; m: Tensor; r: Tensor }>();

/** `out = x·Wᵀ` for a bias-free projection (project_in/project_out). */
function runProjection(out: Tensor, x: Tensor, w: Tensor): void {
  linearForward(out, x, w, null);
}
