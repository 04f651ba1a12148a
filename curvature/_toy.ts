/**
 * A tiny causal "language model" for tests of the curvature and pruner layers: fixed token
 * embeddings, a stack of prunable linear layers (with or without bias, ReLU or identity
 * activations, optional LoRA adapters) and a fixed output head, with a plain float64 forward and
 * backward on the host. Each position only sees its own token, so the gradient at the last
 * position is exactly zero, as in a real causal model (ALGORITHM.md §2.1).
 *
 * Private: used by tests (tests/curvature_*, tests/pruner_*); not exported from mod.ts.
 *
 * @module
 */
import { gpu } from "../kernels/device.ts";
import { Tensor } from "../kernels/tensor.ts";
import type {
  CalibrationOptions,
  CausalLM,
  ModelConfig,
  ModuleKind,
  PrunableLinear,
  TapHandler,
} from "../model/types.ts";

/** One layer of the toy model. */
export interface ToyLayerSpec {
  /** Module kind reported to the pruner. */
  kind: ModuleKind;
  /** Input and output widths. */
  inF: number;
  outF: number;
  /** Has a bias. */
  bias: boolean;
  /** Activation after the layer. */
  act: "relu" | "none";
}

class ToyLinear implements PrunableLinear {
  readonly name: string;
  readonly layer: number;
  readonly kind: ModuleKind;
  readonly outFeatures: number;
  readonly inFeatures: number;
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  adapter: PrunableLinear["adapter"] = null;
  readonly act: "relu" | "none";
  constructor(name: string, layer: number, spec: ToyLayerSpec, w: Tensor, b: Tensor | null) {
    this.name = name;
    this.layer = layer;
    this.kind = spec.kind;
    this.outFeatures = spec.outF;
    this.inFeatures = spec.inF;
    this.weight = w;
    this.bias = b;
    this.act = spec.act;
  }
}

/** Host snapshot of one layer's parameters. */
interface HostLayer {
  W: Float64Array;
  b: Float64Array | null;
  loraA: Float64Array | null;
  loraB: Float64Array | null;
  r: number;
}

/** The toy model (implements the parts of {@link CausalLM} the pruner uses). */
export class ToyModel implements CausalLM {
  readonly family = "opt" as const;
  readonly config = { modelType: "opt" } as unknown as ModelConfig;
  readonly tokenizer = null;
  readonly maxSeqLen = 64;
  readonly sourceDir = null;
  readonly vocab: number;
  readonly embed: Float64Array;
  readonly head: Float64Array;
  readonly lins: ToyLinear[];

  constructor(vocab: number, embed: Float64Array, head: Float64Array, lins: ToyLinear[]) {
    this.vocab = vocab;
    this.embed = embed;
    this.head = head;
    this.lins = lins;
  }

  /** Builds a random toy model: `dims[0]` = embedding width, then each layer's spec. */
  static async create(
    vocab: number,
    d0: number,
    specs: ToyLayerSpec[],
    seed = 1,
  ): Promise<ToyModel> {
    const rt = await gpu();
    let s = seed >>> 0;
    const rand = () => {
      s = (s + 0x6d2b79f5) >>> 0;
      let t = Math.imul(s ^ (s >>> 15), s | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
    };
    const embed = Float64Array.from({ length: vocab * d0 }, () => 2 * rand());
    const dl = specs.length ? specs[specs.length - 1].outF : d0;
    const head = Float64Array.from({ length: vocab * dl }, () => 2 * rand());
    const lins = specs.map((sp, i) => {
      const w = Float32Array.from(
        { length: sp.outF * sp.inF },
        () => 2 * rand() / Math.sqrt(sp.inF) * 1.7,
      );
      const W = Tensor.fromSync(rt, w, [sp.outF, sp.inF], "f32", `toy.${i}.weight`);
      const B = sp.bias
        ? Tensor.fromSync(
          rt,
          Float32Array.from({ length: sp.outF }, () => 0.2 * rand()),
          [sp.outF],
          "f32",
          `toy.${i}.bias`,
        )
        : null;
      return new ToyLinear(`toy.layers.${i}.${sp.kind}`, i, sp, W, B);
    });
    return new ToyModel(vocab, embed, head, lins);
  }

  linears(): PrunableLinear[] {
    return this.lins;
  }

  async #host(): Promise<HostLayer[]> {
    const out: HostLayer[] = [];
    for (const l of this.lins) {
      const W = Float64Array.from(await l.weight.read());
      const b = l.bias ? Float64Array.from(await l.bias.read()) : null;
      const ad = l.adapter;
      out.push({
        W,
        b,
        loraA: ad ? Float64Array.from(await ad.A.read()) : null,
        loraB: ad ? Float64Array.from(await ad.B.read()) : null,
        r: ad ? ad.A.shape[0] : 0,
      });
    }
    return out;
  }

  /** Forward pass; returns per-layer inputs x, pre-activations y, and the logits. */
  #forward(ids: Int32Array, P: HostLayer[]) {
    const T = ids.length;
    const d0 = this.embed.length / this.vocab;
    let x = new Float64Array(T * d0);
    for (let t = 0; t < T; t++) x.set(this.embed.subarray(ids[t] * d0, (ids[t] + 1) * d0), t * d0);
    const xs: Float64Array[] = [], ys: Float64Array[] = [];
    for (const [k, l] of this.lins.entries()) {
      const { W, b, loraA, loraB, r } = P[k];
      const R = l.outFeatures, C0 = l.inFeatures;
      const y = new Float64Array(T * R);
      for (let t = 0; t < T; t++) {
        const ax = new Float64Array(r);
        for (let j = 0; j < r; j++) {
          let s = 0;
          for (let c = 0; c < C0; c++) s += loraA![j * C0 + c] * x[t * C0 + c];
          ax[j] = s;
        }
        for (let o = 0; o < R; o++) {
          let s = b ? b[o] : 0;
          for (let c = 0; c < C0; c++) s += W[o * C0 + c] * x[t * C0 + c];
          for (let j = 0; j < r; j++) s += loraB![o * r + j] * ax[j];
          y[t * R + o] = s;
        }
      }
      xs.push(x);
      ys.push(y);
      x = l.act === "relu" ? y.map((v) => Math.max(v, 0)) : y;
    }
    const D = x.length / T;
    const logits = new Float64Array(T * this.vocab);
    for (let t = 0; t < T; t++) {
      for (let v = 0; v < this.vocab; v++) {
        let s = 0;
        for (let c = 0; c < D; c++) s += this.head[v * D + c] * x[t * D + c];
        logits[t * this.vocab + v] = s;
      }
    }
    return { xs, ys, logits, D };
  }

  #loss(ids: Int32Array, logits: Float64Array): { loss: number; dlogits: Float64Array } {
    const T = ids.length, V = this.vocab;
    const dl = new Float64Array(T * V);
    let loss = 0;
    for (let t = 0; t < T - 1; t++) {
      let m = -Infinity;
      for (let v = 0; v < V; v++) m = Math.max(m, logits[t * V + v]);
      let z = 0;
      for (let v = 0; v < V; v++) z += Math.exp(logits[t * V + v] - m);
      loss += -(logits[t * V + ids[t + 1]] - m - Math.log(z));
      for (let v = 0; v < V; v++) {
        dl[t * V + v] = (Math.exp(logits[t * V + v] - m) / z - (v === ids[t + 1] ? 1 : 0)) /
          (T - 1);
      }
    }
    return { loss: loss / (T - 1), dlogits: dl };
  }

  async logits(ids: Int32Array): Promise<Float32Array> {
    return Float32Array.from(this.#forward(ids, await this.#host()).logits);
  }

  async nll(ids: Int32Array): Promise<number> {
    return this.#loss(ids, this.#forward(ids, await this.#host()).logits).loss;
  }

  /**
   * Host-side taps in float64: per module the augmented inputs `[T, C]` and output gradients
   * `[T, R]` (for independent references in tests), and the loss.
   */
  async hostTaps(ids: Int32Array): Promise<{ a: Float64Array[]; g: Float64Array[]; loss: number }> {
    const P = await this.#host();
    const f = this.#forward(ids, P);
    const { loss, dlogits } = this.#loss(ids, f.logits);
    const T = ids.length, V = this.vocab;
    let dx = new Float64Array(T * f.D);
    for (let t = 0; t < T; t++) {
      for (let v = 0; v < V; v++) {
        const d = dlogits[t * V + v];
        if (d === 0) continue;
        for (let c = 0; c < f.D; c++) dx[t * f.D + c] += d * this.head[v * f.D + c];
      }
    }
    const as: Float64Array[] = [], gs: Float64Array[] = [];
    for (let k = this.lins.length - 1; k >= 0; k--) {
      const l = this.lins[k], { W, loraA, loraB, r } = P[k];
      const R = l.outFeatures, C0 = l.inFeatures, C = C0 + (l.bias ? 1 : 0);
      const y = f.ys[k], x = f.xs[k];
      const g = new Float64Array(T * R);
      for (let i = 0; i < g.length; i++) g[i] = l.act === "relu" ? (y[i] > 0 ? dx[i] : 0) : dx[i];
      const a = new Float64Array(T * C);
      for (let t = 0; t < T; t++) {
        for (let c = 0; c < C0; c++) a[t * C + c] = x[t * C0 + c];
        if (l.bias) a[t * C + C0] = 1;
      }
      as[k] = a;
      gs[k] = g;
      const ndx = new Float64Array(T * C0);
      for (let t = 0; t < T; t++) {
        const gb = new Float64Array(r);
        for (let o = 0; o < R; o++) {
          const gv = g[t * R + o];
          if (gv === 0) continue;
          for (let c = 0; c < C0; c++) ndx[t * C0 + c] += gv * W[o * C0 + c];
          for (let j = 0; j < r; j++) gb[j] += gv * loraB![o * r + j];
        }
        for (let j = 0; j < r; j++) {
          for (let c = 0; c < C0; c++) ndx[t * C0 + c] += gb[j] * loraA![j * C0 + c];
        }
      }
      dx = ndx;
    }
    return { a: as, g: gs, loss };
  }

  async calibrate(
    ids: Int32Array,
    onTap: TapHandler,
    opts: CalibrationOptions = {},
  ): Promise<number> {
    if ((opts.fisherSamples ?? 0) > 0) throw new Error("toy model: sampled Fisher not supported");
    const { a, g, loss } = await this.hostTaps(ids);
    const rt = await gpu();
    const m = opts.maxOutgrad ?? 0;
    for (const [k, l] of this.lins.entries()) {
      const T = ids.length, C = l.inFeatures + (l.bias ? 1 : 0);
      const at = Tensor.fromSync(rt, Float32Array.from(a[k]), [T, C], "f32", "tap.a");
      let gt: Tensor | null = null;
      if (!opts.forwardOnly) {
        const gv = Float32Array.from(g[k], (x) => (m > 0 ? Math.min(Math.max(x, -m), m) : x));
        gt = Tensor.fromSync(rt, gv, [T, l.outFeatures], "f32", "tap.g");
      }
      await onTap(l, at, gt);
      at.dispose();
      gt?.dispose();
    }
    return loss;
  }

  generate(): Promise<string> {
    return Promise.reject(new Error("toy model: generate not supported"));
  }
  save(): Promise<void> {
    return Promise.reject(new Error("toy model: save not supported"));
  }
  dispose(): void {
    for (const l of this.lins) {
      l.weight.dispose();
      l.bias?.dispose();
      l.adapter?.A.dispose();
      l.adapter?.B.dispose();
    }
  }
}

/** An OPT-like toy: fc1 (bias, ReLU) then fc2 (bias), plus a bias-free layer, on a small vocab. */
export function optLikeToy(seed = 1, d = 6, h = 10): Promise<ToyModel> {
  return ToyModel.create(11, d, [
    { kind: "fc1", inF: d, outF: h, bias: true, act: "relu" },
    { kind: "fc2", inF: h, outF: d, bias: true, act: "none" },
    { kind: "down_proj", inF: d, outF: 8, bias: false, act: "none" },
  ], seed);
}

/**
 * A model stub with one prunable linear layer that replays given taps: sequence b yields
 * `a[b]` (`[T, C]`, already augmented) and `g[b]` (`[T, R]`). For exact curvature tests.
 */
export class TapReplayModel extends ToyModel {
  readonly taps: { a: number[][]; g: number[][] }[];
  readonly R: number;
  readonly C: number;
  constructor(lin: PrunableLinear, taps: { a: number[][]; g: number[][] }[]) {
    super(1, new Float64Array(1), new Float64Array(1), [lin as ToyLinear]);
    this.taps = taps;
    this.R = lin.outFeatures;
    this.C = lin.inFeatures + (lin.bias ? 1 : 0);
  }
  /** Builds the stub; the layer has no bias unless `bias` (then `a` must include the ones column). */
  static async of(R: number, C: number, taps: { a: number[][]; g: number[][] }[], bias = false) {
    const rt = await gpu();
    const C0 = bias ? C - 1 : C;
    const w = Tensor.fromSync(
      rt,
      new Float32Array(R * C0).fill(1),
      [R, C0],
      "f32",
      "replay.weight",
    );
    const b = bias
      ? Tensor.fromSync(rt, new Float32Array(R).fill(1), [R], "f32", "replay.bias")
      : null;
    const lin = new ToyLinear(
      "replay.layers.0.q_proj",
      0,
      { kind: "q_proj", inF: C0, outF: R, bias, act: "none" },
      w,
      b,
    );
    return new TapReplayModel(lin, taps);
  }
  override async calibrate(
    ids: Int32Array,
    onTap: TapHandler,
    opts: CalibrationOptions = {},
  ): Promise<number> {
    const rt = await gpu();
    const tp = this.taps[ids[0]];
    const T = tp.a.length;
    const a = Tensor.fromSync(rt, Float32Array.from(tp.a.flat()), [T, this.C], "f32", "tap.a");
    const g = opts.forwardOnly
      ? null
      : Tensor.fromSync(rt, Float32Array.from(tp.g.flat()), [T, this.R], "f32", "tap.g");
    await onTap(this.lins[0], a, g);
    a.dispose();
    g?.dispose();
    return 0;
  }
  /** Sequences that select the replayed taps: `[b, b]` for every b. */
  seqs(): Int32Array[] {
    return this.taps.map((t, b) => Int32Array.from(t.a.map(() => b)));
  }
}

/** float64 inverse by Gauss–Jordan elimination with partial pivoting (independent test reference). */
export function inverseF64(m: ArrayLike<number>, n: number): Float64Array {
  const a = Float64Array.from(m), inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) inv[i * n + i] = 1;
  for (let c = 0; c < n; c++) {
    let piv = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r * n + c]) > Math.abs(a[piv * n + c])) piv = r;
    for (let k = 0; k < n; k++) {
      [a[c * n + k], a[piv * n + k]] = [a[piv * n + k], a[c * n + k]];
      [inv[c * n + k], inv[piv * n + k]] = [inv[piv * n + k], inv[c * n + k]];
    }
    const d = a[c * n + c];
    for (let k = 0; k < n; k++) {
      a[c * n + k] /= d;
      inv[c * n + k] /= d;
    }
    for (let r = 0; r < n; r++) {
      const f = a[r * n + c];
      if (r === c || f === 0) continue;
      for (let k = 0; k < n; k++) {
        a[r * n + k] -= f * a[c * n + k];
        inv[r * n + k] -= f * inv[c * n + k];
      }
    }
  }
  return inv;
}
