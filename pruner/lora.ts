/**
 * First-order LoRA steps between shots (ALGORITHM.md §9, quirk Q4 fixed): rank-8 adapters on
 * OPT's attention projections, trained with Adam on the gradients the model's calibration taps
 * provide (`x` and `∂L/∂y` of each adapted module are all an adapter's gradients need), then
 * absorbed into the weights. Structure is preserved: adapter rows/columns of removed weight
 * rows/columns are kept at zero, and after absorption every entry that was zero before stays zero
 * (so unstructured and N:M sparsity survive exactly).
 *
 * @module
 */
import { map } from "../kernels/elementwise.ts";
import { matmul } from "../kernels/gemm.ts";
import { Tensor } from "../kernels/tensor.ts";
import type { CausalLM, PrunableLinear } from "../model/types.ts";
import { nonZeroCounts, readAll, rowColMap } from "../curvature/_ops.ts";

/**
 * LoRA options (`--lora_lr`, `--lora_subset`, `--lora_epochs`).
 *
 * @example Usage
 * ```ts
 * import type { LoraOptions } from "@llm-surgeon/toolkit";
 * // One epoch over a tenth of the calibration sequences, rank-8 adapters.
 * const opts: LoraOptions = { lr: 1e-4, subset: 0.1, epochs: 1, rank: 8 };
 * console.log(opts.subset * 128); // 12.8 → 12 of 128 sequences
 * ```
 */
export interface LoraOptions {
  /** Adam learning rate (default 1e-4). */
  lr: number;
  /** Fraction of the calibration sequences used (shuffled by the seed, kept in original order). */
  subset: number;
  /** Epochs; the lr decays linearly from 1 to 0 over them, stepped per epoch. */
  epochs: number;
  /** Adapter rank (default 8). */
  rank?: number;
}

const LORA_KINDS = new Set(["q_proj", "k_proj", "v_proj", "out_proj"]);

/**
 * The modules that get adapters: OPT attention projections ([ref]); none for Llama.
 *
 * @param model the model
 *
 * @example Usage
 * ```ts ignore
 * import { loadModel, loraTargets } from "@llm-surgeon/toolkit";
 * const opt = await loadModel("facebook/opt-125m");
 * console.log(loraTargets(opt).length); // 48: q, k, v and out_proj of 12 layers
 * ```
 */
export function loraTargets(model: CausalLM): PrunableLinear[] {
  if (model.family !== "opt") return [];
  return model.linears().filter((l) => LORA_KINDS.has(l.kind));
}

function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Indices of the LoRA subset: shuffle with the seed, keep ⌊n·subset⌋, restore the original order.
 *
 * @param n number of calibration sequences
 * @param subset fraction to keep, in [0, 1]
 * @param seed shuffle seed
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { loraSubset } from "@llm-surgeon/toolkit";
 * const idx = loraSubset(128, 0.1, 100);
 * assert.equal(idx.length, 12); // ⌊128 · 0.1⌋
 * assert.ok(idx.every((v, i) => i === 0 || idx[i - 1] < v)); // distinct, in order
 * assert.deepEqual(loraSubset(128, 0.1, 100), idx); // the seed fixes the subset
 * ```
 */
export function loraSubset(n: number, subset: number, seed: number): number[] {
  const rnd = seeded(seed);
  const idx = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx.slice(0, Math.floor(n * subset)).sort((a, b) => a - b);
}

interface AdapterState {
  lin: PrunableLinear;
  A: Tensor;
  B: Tensor;
  dA: Tensor;
  dB: Tensor;
  mA: Tensor;
  vA: Tensor;
  mB: Tensor;
  vB: Tensor;
  colKeep: Tensor;
  rowKeep: Tensor;
  sel: Tensor | null;
}

/**
 * Inserts adapters on the LoRA targets, trains them with Adam on `seqs` (batch size 1, the
 * calibration loss), and absorbs them (`W ← W + B·A`, zeros of W kept). Returns the mean loss of
 * each epoch. A model without targets (Llama) is left unchanged.
 *
 * @example Usage
 * ```ts ignore
 * await loraFinetune(model, calib, { lr: 1e-4, subset: 0.025, epochs: 1 }, 100);
 * ```
 */
export async function loraFinetune(
  model: CausalLM,
  seqs: Int32Array[],
  opts: LoraOptions,
  seed: number,
): Promise<number[]> {
  const targets = loraTargets(model);
  if (targets.length === 0 || seqs.length === 0) return [];
  const rank = opts.rank ?? 8;
  const rnd = seeded(seed ^ 0x5bd1e995);
  const normal = () => {
    const u = Math.max(rnd(), 1e-12), v = rnd();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
  const counts = targets.map((l) => nonZeroCounts(l.weight, null));
  const raw = await readAll(counts.flatMap((c) => [c.rows, c.cols]));
  counts.forEach((c) => (c.rows.dispose(), c.cols.dispose()));
  const states: AdapterState[] = targets.map((lin, k) => {
    const rt = lin.weight.rt;
    const R = lin.outFeatures, C0 = lin.inFeatures;
    const rows = new Uint32Array(raw[2 * k]), cols = new Uint32Array(raw[2 * k + 1]);
    const A = Tensor.fromSync(
      rt,
      Float32Array.from({ length: rank * C0 }, normal),
      [rank, C0],
      "f32",
      `${lin.name}.lora_A`,
    );
    const B = Tensor.emptySync(rt, [R, rank], "f32", `${lin.name}.lora_B`);
    const z = (shape: number[], n: string) => Tensor.emptySync(rt, shape, "f32", n);
    let sel: Tensor | null = null;
    if (lin.bias) {
      const s = new Float32Array((C0 + 1) * C0);
      for (let c = 0; c < C0; c++) s[c * C0 + c] = 1;
      sel = Tensor.fromSync(rt, s, [C0 + 1, C0], "f32", "drop bias column");
    }
    const st: AdapterState = {
      lin,
      A,
      B,
      dA: z([rank, C0], "dA"),
      dB: z([R, rank], "dB"),
      mA: z([rank, C0], "mA"),
      vA: z([rank, C0], "vA"),
      mB: z([R, rank], "mB"),
      vB: z([R, rank], "vB"),
      colKeep: Tensor.fromSync(
        rt,
        Float32Array.from(cols, (x) => (x ? 1 : 0)),
        [C0],
        "f32",
        "cols kept",
      ),
      rowKeep: Tensor.fromSync(
        rt,
        Float32Array.from(rows, (x) => (x ? 1 : 0)),
        [R],
        "f32",
        "rows kept",
      ),
      sel,
    };
    protect(st);
    lin.adapter = { A, B };
    return st;
  });
  const byName = new Map(states.map((s) => [s.lin.name, s]));
  const b1 = 0.9, b2 = 0.999, eps = 1e-8;
  let step = 0;
  const losses: number[] = [];
  try {
    for (let e = 0; e < opts.epochs; e++) {
      const lr = opts.lr * (1 - e / opts.epochs);
      let total = 0;
      for (const ids of seqs) {
        total += await model.calibrate(ids, (lin, a, g) => {
          const st = byName.get(lin.name);
          if (!st || !g) return;
          const x = st.sel ? matmul(a, st.sel, { name: "x" }) : a;
          const xA = matmul(x, st.A, { transB: true, name: "x·Aᵀ" }); // [T, r]
          matmul(g, xA, { transA: true, out: st.dB }); // dB = gᵀ(x Aᵀ)
          const gB = matmul(g, st.B, { name: "g·B" }); // [T, r]
          matmul(gB, x, { transA: true, out: st.dA }); // dA = (g B)ᵀ x
          xA.dispose(), gB.dispose();
          if (x !== a) x.dispose();
        }, { forwardOnly: false });
        step++;
        const c1 = 1 - b1 ** step, c2 = 1 - b2 ** step;
        for (const st of states) {
          adam(st.A, st.dA, st.mA, st.vA, lr, b1, b2, eps, c1, c2);
          adam(st.B, st.dB, st.mB, st.vB, lr, b1, b2, eps, c1, c2);
          protect(st);
        }
      }
      losses.push(total / seqs.length);
    }
    for (const st of states) absorb(st);
  } finally {
    for (const st of states) {
      st.lin.adapter = null;
      for (
        const t of [st.A, st.B, st.dA, st.dB, st.mA, st.vA, st.mB, st.vB, st.colKeep, st.rowKeep]
      ) t.dispose();
      st.sel?.dispose();
    }
  }
  return losses;
}

/** Keeps adapter columns of removed weight columns and rows of removed weight rows at zero. */
function protect(st: AdapterState): void {
  rowColMap("a * v", st.A, { v: st.colKeep, out: st.A });
  rowColMap("a * u", st.B, { u: st.rowKeep, out: st.B });
}

function adam(
  p: Tensor,
  g: Tensor,
  m: Tensor,
  v: Tensor,
  lr: number,
  b1: number,
  b2: number,
  eps: number,
  c1: number,
  c2: number,
): void {
  map("s0 * o + (1.0 - s0) * b", [m, g], [b1], { out: m });
  map("s0 * o + (1.0 - s0) * b * b", [v, g], [b2], { out: v });
  map("o - s0 * (b / s1) / (sqrt(c / s2) + s3)", [p, m, v], [lr, c1, c2, eps], { out: p });
}

/** W ← W + B·A on the entries that are non-zero (zeros of W stay exactly zero). */
function absorb(st: AdapterState): void {
  const W = st.lin.weight;
  const BA = matmul(st.B, st.A, { name: "B·A" });
  map("select(o + b, 0.0, o == 0.0)", [W, BA], [], { out: W });
  BA.dispose();
}
