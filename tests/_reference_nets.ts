/**
 * Plain float64 TypeScript forward passes of OPT and Llama, written independently of the GPU
 * code from the Hugging Face definitions, for checking logits, losses and (by central finite
 * differences) gradients. A `perturb` hook adds ε to one entry of one prunable module's output,
 * so ∂L/∂y can be checked entry by entry.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { LlamaConfig, ModelConfig, OptConfig } from "../model/types.ts";
import type { HostTensor } from "./_tiny_models.ts";
import { assertClose, relFrob } from "./_util.ts";

/** Logits agree with the float64 reference within 1e-4 (relative to the largest logit). */
export function assertLogitsClose(got: Float32Array, want: Float64Array, what: string): void {
  const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  assert.ok(relFrob(got, want) <= 1e-4, `${what}: relative error ${relFrob(got, want)}`);
  assertClose(got, want, 0, 1e-4 * scale, what);
}

/** Adds `eps` to output entry `[t, r]` of the module named `module` (HF prefix). */
export interface Perturbation {
  module: string;
  t: number;
  r: number;
  eps: number;
}

type W = Map<string, HostTensor>;

function get(w: W, name: string): Float32Array {
  const t = w.get(name);
  if (!t) throw new Error(`reference: missing ${name}`);
  return t.data;
}

/** y = x·Wᵀ + b for x [T, C], W [R, C]. */
function linear(
  x: Float64Array,
  T: number,
  C: number,
  w: ArrayLike<number>,
  b: ArrayLike<number> | null,
  R: number,
) {
  const y = new Float64Array(T * R);
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < R; r++) {
      let s = b ? b[r] : 0;
      for (let c = 0; c < C; c++) s += x[t * C + c] * w[r * C + c];
      y[t * R + r] = s;
    }
  }
  return y;
}

function module(
  w: W,
  name: string,
  x: Float64Array,
  T: number,
  C: number,
  R: number,
  perturb: Perturbation | null,
): Float64Array {
  const b = w.has(`${name}.bias`) ? get(w, `${name}.bias`) : null;
  const y = linear(x, T, C, get(w, `${name}.weight`), b, R);
  if (perturb && perturb.module === name) y[perturb.t * R + perturb.r] += perturb.eps;
  return y;
}

function layerNorm(
  x: Float64Array,
  T: number,
  C: number,
  w: ArrayLike<number> | null,
  b: ArrayLike<number> | null,
  eps: number,
) {
  const y = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    let m = 0, v = 0;
    for (let c = 0; c < C; c++) m += x[t * C + c] / C;
    for (let c = 0; c < C; c++) v += (x[t * C + c] - m) ** 2 / C;
    const r = 1 / Math.sqrt(v + eps);
    for (let c = 0; c < C; c++) {
      y[t * C + c] = (x[t * C + c] - m) * r * (w ? w[c] : 1) + (b ? b[c] : 0);
    }
  }
  return y;
}

function rmsNorm(x: Float64Array, T: number, C: number, w: ArrayLike<number>, eps: number) {
  const y = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += x[t * C + c] ** 2 / C;
    const r = 1 / Math.sqrt(s + eps);
    for (let c = 0; c < C; c++) y[t * C + c] = w[c] * x[t * C + c] * r;
  }
  return y;
}

/**
 * softmax(q·kᵀ·scale + mask)·v in float64: query t sits at position `qOffset + t` and sees keys
 * `pos − window < j ≤ pos` (window 0 = all), head h uses kv head ⌊h/g⌋.
 * q [T, H·D], k and v [L, KH·D].
 */
export function attentionRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  T: number,
  L: number,
  H: number,
  KH: number,
  D: number,
  scale: number,
  qOffset: number,
  window: number,
): Float64Array {
  const out = new Float64Array(T * H * D);
  const g = H / KH;
  for (let h = 0; h < H; h++) {
    const kh = Math.floor(h / g);
    for (let t = 0; t < T; t++) {
      const pos = qOffset + t;
      const hi = Math.min(pos, L - 1);
      const lo = window > 0 ? Math.max(0, pos - window + 1) : 0;
      const s = new Float64Array(Math.max(hi + 1 - lo, 0));
      let m = -Infinity;
      for (let j = lo; j <= hi; j++) {
        let d = 0;
        for (let e = 0; e < D; e++) d += q[(t * H + h) * D + e] * k[(j * KH + kh) * D + e];
        s[j - lo] = d * scale;
        m = Math.max(m, s[j - lo]);
      }
      let z = 0;
      for (let j = 0; j < s.length; j++) z += s[j] = Math.exp(s[j] - m);
      for (let j = lo; j <= hi; j++) {
        const p = s[j - lo] / z;
        for (let e = 0; e < D; e++) out[(t * H + h) * D + e] += p * v[(j * KH + kh) * D + e];
      }
    }
  }
  return out;
}

/**
 * Analytic float64 gradients of {@link attentionRef} for full causal blocks (T = L, qOffset 0):
 * P = softmax(scale·q·kᵀ + mask), dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP − Σ P⊙dP),
 * dQ = scale·dS·K, dK = scale·dSᵀ·Q, summed over the query heads of each key/value head.
 */
export function attentionGradRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dout: ArrayLike<number>,
  T: number,
  H: number,
  KH: number,
  D: number,
  scale: number,
  window: number,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const dq = new Float64Array(T * H * D), dk = new Float64Array(T * KH * D);
  const dv = new Float64Array(T * KH * D);
  const g = H / KH;
  const qi = (t: number, h: number) => (t * H + h) * D;
  const ki = (j: number, h: number) => (j * KH + h) * D;
  for (let h = 0; h < H; h++) {
    const kh = Math.floor(h / g);
    for (let t = 0; t < T; t++) {
      const lo = window > 0 ? Math.max(0, t - window + 1) : 0;
      const p = new Float64Array(t + 1 - lo);
      let m = -Infinity;
      for (let j = lo; j <= t; j++) {
        let d = 0;
        for (let e = 0; e < D; e++) d += q[qi(t, h) + e] * k[ki(j, kh) + e];
        p[j - lo] = d * scale;
        m = Math.max(m, p[j - lo]);
      }
      let z = 0;
      for (let j = 0; j < p.length; j++) z += p[j] = Math.exp(p[j] - m);
      for (let j = 0; j < p.length; j++) p[j] /= z;
      const dp = new Float64Array(p.length);
      let sum = 0;
      for (let j = lo; j <= t; j++) {
        for (let e = 0; e < D; e++) {
          dv[ki(j, kh) + e] += p[j - lo] * dout[qi(t, h) + e];
          dp[j - lo] += dout[qi(t, h) + e] * v[ki(j, kh) + e];
        }
        sum += p[j - lo] * dp[j - lo];
      }
      for (let j = lo; j <= t; j++) {
        const ds = scale * p[j - lo] * (dp[j - lo] - sum);
        for (let e = 0; e < D; e++) {
          dq[qi(t, h) + e] += ds * k[ki(j, kh) + e];
          dk[ki(j, kh) + e] += ds * q[qi(t, h) + e];
        }
      }
    }
  }
  return { dq, dk, dv };
}

function logitsOf(x: Float64Array, T: number, E: number, head: ArrayLike<number>, V: number) {
  return linear(x, T, E, head, null, V);
}

/** OPT forward (HF OPTForCausalLM semantics): logits [T, V]. */
export function optReference(
  cfg: OptConfig,
  w: W,
  ids: ArrayLike<number>,
  perturb: Perturbation | null = null,
) {
  const T = ids.length;
  const { hiddenSize: d, wordEmbedProjDim: E, vocabSize: V, numHeads: H, ffnDim: f } = cfg;
  const D = d / H;
  const eps = cfg.layerNormEps;
  const p = "model.decoder";
  const tok = get(w, `${p}.embed_tokens.weight`);
  let x = new Float64Array(T * E);
  for (let t = 0; t < T; t++) for (let c = 0; c < E; c++) x[t * E + c] = tok[ids[t] * E + c];
  let h = E !== d ? linear(x, T, E, get(w, `${p}.project_in.weight`), null, d) : x;
  const pos = get(w, `${p}.embed_positions.weight`);
  for (let t = 0; t < T; t++) for (let c = 0; c < d; c++) h[t * d + c] += pos[(t + 2) * d + c];
  const ln = (name: string, y: Float64Array) =>
    layerNorm(
      y,
      T,
      d,
      w.get(`${name}.weight`)?.data ?? null,
      w.get(`${name}.bias`)?.data ?? null,
      eps,
    );
  for (let l = 0; l < cfg.numLayers; l++) {
    const q = `${p}.layers.${l}`;
    const xa = cfg.doLayerNormBefore ? ln(`${q}.self_attn_layer_norm`, h) : h;
    const qq = module(w, `${q}.self_attn.q_proj`, xa, T, d, d, perturb).map((v) => v * D ** -0.5);
    const kk = module(w, `${q}.self_attn.k_proj`, xa, T, d, d, perturb);
    const vv = module(w, `${q}.self_attn.v_proj`, xa, T, d, d, perturb);
    const att = attentionRef(qq, kk, vv, T, T, H, H, D, 1, 0, 0);
    const o = module(w, `${q}.self_attn.out_proj`, att, T, d, d, perturb);
    h = h.map((v, i) => v + o[i]);
    if (!cfg.doLayerNormBefore) h = ln(`${q}.self_attn_layer_norm`, h);
    const x2 = cfg.doLayerNormBefore ? ln(`${q}.final_layer_norm`, h) : h;
    const f1 = module(w, `${q}.fc1`, x2, T, d, f, perturb);
    const a1 = f1.map((v) =>
      cfg.activation === "relu" ? Math.max(v, 0) : 0.5 * v * (1 + erf(v / Math.SQRT2))
    );
    const f2 = module(w, `${q}.fc2`, a1, T, f, d, perturb);
    h = h.map((v, i) => v + f2[i]);
    if (!cfg.doLayerNormBefore) h = ln(`${q}.final_layer_norm`, h);
  }
  if (cfg.doLayerNormBefore) h = ln(`${p}.final_layer_norm`, h);
  x = E !== d ? linear(h, T, d, get(w, `${p}.project_out.weight`), null, E) : h;
  const head = w.has("lm_head.weight") && !cfg.tieWordEmbeddings ? get(w, "lm_head.weight") : tok;
  return logitsOf(x, T, E, head, V);
}

function erf(x: number): number {
  // Abramowitz–Stegun 7.1.26 is too coarse for 1e-4 checks; use the series / continued fraction.
  const y = Math.abs(x);
  let r: number;
  if (y < 2) {
    let s = 0, term = y;
    for (let n = 0; n < 80; n++) {
      s += term / (2 * n + 1);
      term *= -y * y / (n + 1);
    }
    r = (2 / Math.sqrt(Math.PI)) * s;
  } else {
    let f = y;
    for (let k = 80; k >= 1; k--) f = y + (k / 2) / f;
    r = 1 - Math.exp(-y * y) / Math.sqrt(Math.PI) / f;
  }
  return x < 0 ? -r : r;
}

/** HF inverse frequencies with rope_scaling, in float64. */
function invFreq(cfg: LlamaConfig): Float64Array {
  const D = cfg.headDim;
  const inv = Float64Array.from({ length: D / 2 }, (_, i) => 1 / cfg.ropeTheta ** ((2 * i) / D));
  const sc = cfg.ropeScaling;
  if (sc?.type === "linear") return inv.map((v) => v / sc.factor);
  if (sc?.type === "llama3") {
    return inv.map((f) => {
      const wl = (2 * Math.PI) / f;
      const lowWl = sc.originalMaxPositions / sc.lowFreqFactor;
      const highWl = sc.originalMaxPositions / sc.highFreqFactor;
      if (wl < highWl) return f;
      if (wl > lowWl) return f / sc.factor;
      const s = (sc.originalMaxPositions / wl - sc.lowFreqFactor) /
        (sc.highFreqFactor - sc.lowFreqFactor);
      return (1 - s) * f / sc.factor + s * f;
    });
  }
  return inv;
}

function rope(x: Float64Array, T: number, heads: number, D: number, inv: Float64Array) {
  const y = Float64Array.from(x);
  const half = D / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        const a = t * inv[i], c = Math.cos(a), s = Math.sin(a);
        const j = (t * heads + h) * D + i;
        y[j] = x[j] * c - x[j + half] * s;
        y[j + half] = x[j + half] * c + x[j] * s;
      }
    }
  }
  return y;
}

/** Llama forward (HF LlamaForCausalLM semantics): logits [T, V]. */
export function llamaReference(
  cfg: LlamaConfig,
  w: W,
  ids: ArrayLike<number>,
  perturb: Perturbation | null = null,
) {
  const T = ids.length;
  const {
    hiddenSize: d,
    vocabSize: V,
    numHeads: H,
    numKvHeads: KH,
    headDim: D,
    intermediateSize: f,
  } = cfg;
  const eps = cfg.rmsNormEps;
  const emb = get(w, "model.embed_tokens.weight");
  let h = new Float64Array(T * d);
  for (let t = 0; t < T; t++) for (let c = 0; c < d; c++) h[t * d + c] = emb[ids[t] * d + c];
  const inv = invFreq(cfg);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const n1 = rmsNorm(h, T, d, get(w, `${p}.input_layernorm.weight`), eps);
    const q = rope(module(w, `${p}.self_attn.q_proj`, n1, T, d, H * D, perturb), T, H, D, inv);
    const k = rope(module(w, `${p}.self_attn.k_proj`, n1, T, d, KH * D, perturb), T, KH, D, inv);
    const v = module(w, `${p}.self_attn.v_proj`, n1, T, d, KH * D, perturb);
    const att = attentionRef(q, k, v, T, T, H, KH, D, 1 / Math.sqrt(D), 0, cfg.slidingWindow ?? 0);
    const o = module(w, `${p}.self_attn.o_proj`, att, T, H * D, d, perturb);
    h = h.map((x, i) => x + o[i]);
    const n2 = rmsNorm(h, T, d, get(w, `${p}.post_attention_layernorm.weight`), eps);
    const g = module(w, `${p}.mlp.gate_proj`, n2, T, d, f, perturb);
    const u = module(w, `${p}.mlp.up_proj`, n2, T, d, f, perturb);
    const m = g.map((x, i) => x / (1 + Math.exp(-x)) * u[i]);
    const dn = module(w, `${p}.mlp.down_proj`, m, T, f, d, perturb);
    h = h.map((x, i) => x + dn[i]);
  }
  h = rmsNorm(h, T, d, get(w, "model.norm.weight"), eps);
  const head = cfg.tieWordEmbeddings ? emb : get(w, "lm_head.weight");
  return logitsOf(h, T, d, head, V);
}

/** Logits [T, V] of either family. */
export function referenceLogits(
  cfg: ModelConfig,
  w: W,
  ids: ArrayLike<number>,
  perturb: Perturbation | null = null,
) {
  return cfg.modelType === "opt"
    ? optReference(cfg, w, ids, perturb)
    : llamaReference(cfg, w, ids, perturb);
}

/** Mean next-token cross-entropy over positions 0…T−2 (float64). */
export function referenceLoss(
  cfg: ModelConfig,
  w: W,
  ids: ArrayLike<number>,
  perturb: Perturbation | null = null,
) {
  const z = referenceLogits(cfg, w, ids, perturb);
  const T = ids.length, V = cfg.vocabSize;
  let loss = 0;
  for (let t = 0; t < T - 1; t++) {
    let m = -Infinity;
    for (let c = 0; c < V; c++) m = Math.max(m, z[t * V + c]);
    let s = 0;
    for (let c = 0; c < V; c++) s += Math.exp(z[t * V + c] - m);
    loss += m + Math.log(s) - z[t * V + ids[t + 1]];
  }
  return loss / (T - 1);
}
