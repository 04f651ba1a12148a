/**
 * Per-module preparation (ALGORITHM.md §3): dead rows/columns, the zeroed augmented weight, and
 * the damped inverses of §4.1. Batched over all modules so a shot needs only two small
 * read-backs for the dead masks.
 *
 * @module
 */
import { Tensor } from "../kernels/tensor.ts";
import type { PrunableLinear } from "../model/types.ts";
import { augment, nonZeroCounts, readAll, rowColMap, splitAugmented } from "../curvature/_ops.ts";
import { type CurvatureKind, type LayerCurvature, layerKind } from "../curvature/types.ts";
import { spdInverse } from "../kernels/linalg.ts";
import { disposeBasis, type TwoTermBasis, twoTermBasis } from "./krank2.ts";
import { diag, eye, scatterSubmatrix, submatrix } from "../kernels/matrix.ts";

/** A module prepared for costs and updates: everything in the full augmented space. */
export interface Prepared {
  /** The module. */
  lin: PrunableLinear;
  /** Its curvature. */
  curv: LayerCurvature;
  /** Curvature kind (decides the cost formulas). */
  kind: CurvatureKind;
  /** R, C (augmented), C₀. */
  R: number;
  C: number;
  C0: number;
  /** Augmented weight `[R, C]` with dead rows/columns zeroed (already written back). */
  W: Tensor;
  /** 1 = live row / column (sub-space member). */
  keepR: Uint8Array;
  keepC: Uint8Array;
  /** The same masks as f32 0/1 tensors. */
  keepRT: Tensor;
  keepCT: Tensor;
  /** Damped inverses Ĝ `[R, R]`, Â `[C, C]` (OBS only); dead indices hold identity rows/columns. */
  Ghat: Tensor | null;
  Ahat: Tensor | null;
  /** krank ≥ 2 with OBS: the two-term generalised eigenbasis (ranks 0 and 1), else null. */
  basis: TwoTermBasis | null;
}

/** Frees the GPU tensors of prepared modules. */
export function disposePrepared(ps: Prepared[]): void {
  for (const p of ps) {
    p.W.dispose();
    p.keepRT.dispose();
    p.keepCT.dispose();
    p.Ghat?.dispose();
    p.Ahat?.dispose();
    disposeBasis(p.basis);
  }
}

function deadMasks(
  rowNnz: Uint32Array,
  colNnz: Uint32Array,
  gDiag: Float32Array | null,
  aDiag: Float32Array | null,
): { keepR: Uint8Array; keepC: Uint8Array } {
  const keepR = new Uint8Array(rowNnz.length);
  const keepC = new Uint8Array(colNnz.length);
  for (let r = 0; r < keepR.length; r++) {
    keepR[r] = rowNnz[r] !== 0 && (!gDiag || gDiag[r] !== 0) ? 1 : 0;
  }
  for (let c = 0; c < keepC.length; c++) {
    keepC[c] = colNnz[c] !== 0 && (!aDiag || aDiag[c] !== 0) ? 1 : 0;
  }
  return { keepR, keepC };
}

/** How {@link prepareModules} prepares: OBD (no inverses) or OBS with the dampings of §4.1. */
export interface PrepareOptions {
  /** OBD costs only: no inverses. */
  obd: boolean;
  /** Relative damping of G. */
  dampG: number;
  /** Relative damping of A. */
  dampA: number;
  /** krank ≥ 2: shift a non-positive s of the two-term basis to positive. */
  eigenfix?: boolean;
}

/**
 * PREPARE for every module: finds dead rows (all-zero, or G₀[r,r] = 0) and dead columns
 * (all-zero, or A₀[c,c] = 0), zeroes them in the weights (written back to weight and bias),
 * recomputes the masks once on the zeroed weights, and — unless `obd` — computes the damped
 * inverses Ĝ = inv(G₀, λg), Â = inv(A₀, λa) of the live sub-factors.
 */
export async function prepareModules(
  lins: PrunableLinear[],
  curv: Map<string, LayerCurvature>,
  opts: PrepareOptions,
): Promise<Prepared[]> {
  const layers = lins.map((lin) => {
    const c = curv.get(lin.name);
    if (!c) throw new Error(`pruner: no curvature for module ${lin.name}`);
    return c;
  });
  const Ws = lins.map((lin) => augment(lin.weight, lin.bias, `${lin.name}[W|b]`));
  const diagG = layers.map((l) => (l.G.length ? diag(l.G[0]) : null));
  const diagA = layers.map((l) => (l.A.length ? diag(l.A[0]) : null));
  const first = lins.map((lin) => nonZeroCounts(lin.weight, lin.bias));
  const toRead: Tensor[] = [];
  lins.forEach((_, k) => {
    toRead.push(first[k].rows, first[k].cols);
    if (diagG[k]) toRead.push(diagG[k]!);
    if (diagA[k]) toRead.push(diagA[k]!);
  });
  const raw = await readAll(toRead);
  let at = 0;
  const masks1 = lins.map((_, k) => {
    const rn = new Uint32Array(raw[at++]), cn = new Uint32Array(raw[at++]);
    const gd = diagG[k] ? new Float32Array(raw[at++]) : null;
    const ad = diagA[k] ? new Float32Array(raw[at++]) : null;
    return { rn, cn, gd, ad, ...deadMasks(rn, cn, gd, ad) };
  });
  for (const f of first) f.rows.dispose(), f.cols.dispose();
  // Zero dead rows and columns, write back, recount.
  const second = lins.map((lin, k) => {
    const m = masks1[k];
    const kr = Tensor.fromSync(
      Ws[k].rt,
      Float32Array.from(m.keepR),
      [m.keepR.length],
      "f32",
      "keepR",
    );
    const kc = Tensor.fromSync(
      Ws[k].rt,
      Float32Array.from(m.keepC),
      [m.keepC.length],
      "f32",
      "keepC",
    );
    rowColMap("select(0.0, a, u != 0.0 && v != 0.0)", Ws[k], { u: kr, v: kc, out: Ws[k] });
    kr.dispose(), kc.dispose();
    splitAugmented(Ws[k], lin.weight, lin.bias);
    return nonZeroCounts(lin.weight, lin.bias);
  });
  const raw2 = await readAll(second.flatMap((s) => [s.rows, s.cols]));
  for (const s of second) s.rows.dispose(), s.cols.dispose();
  diagG.forEach((t) => t?.dispose());
  diagA.forEach((t) => t?.dispose());
  const out: Prepared[] = [];
  for (const [k, lin] of lins.entries()) {
    const { keepR, keepC } = deadMasks(
      new Uint32Array(raw2[2 * k]),
      new Uint32Array(raw2[2 * k + 1]),
      masks1[k].gd,
      masks1[k].ad,
    );
    const R = lin.outFeatures, C = lin.inFeatures + (lin.bias ? 1 : 0);
    const rt = Ws[k].rt;
    out.push({
      lin,
      curv: layers[k],
      kind: layerKind(layers[k]),
      R,
      C,
      C0: lin.inFeatures,
      W: Ws[k],
      keepR,
      keepC,
      keepRT: Tensor.fromSync(rt, Float32Array.from(keepR), [R], "f32", "keepR"),
      keepCT: Tensor.fromSync(rt, Float32Array.from(keepC), [C], "f32", "keepC"),
      Ghat: null,
      Ahat: null,
      basis: null,
    });
  }
  if (!opts.obd) {
    await computeInverses(out, opts.dampG, opts.dampA);
    for (const p of out) {
      if (p.curv.G.length >= 2 && p.curv.A.length >= 2) p.basis = await twoTermBasis(p, opts);
    }
  }
  return out;
}

/**
 * `inv(M, λ)` of the live sub-factor (ALGORITHM.md §4.1) on the GPU with `spdInverse`
 * (float64-like accuracy), embedded in an `n×n` identity so that dead indices are decoupled.
 * `M` null means the identity factor (Activations' G).
 */
async function dampedInverseGpu(
  M: Tensor | null,
  n: number,
  keep: Uint8Array,
  damp: number,
  name: string,
  rt: Tensor["rt"],
): Promise<Tensor> {
  const live: number[] = [];
  for (let i = 0; i < n; i++) if (keep[i]) live.push(i);
  const full = eye(rt, n);
  if (live.length === 0) return full;
  const idx = Tensor.fromSync(rt, Uint32Array.from(live), [live.length], "u32", "live");
  const sub = M ? submatrix(M, idx, idx) : eye(rt, live.length);
  try {
    const inv = await spdInverse(sub, { damp, name });
    scatterSubmatrix(full, inv, idx, idx);
    inv.dispose();
    return full;
  } catch (e) {
    full.dispose();
    throw e;
  } finally {
    sub.dispose();
    idx.dispose();
  }
}

/** Fills `Ghat`/`Ahat` of OBS modules: damped inverses of the live sub-factors, on the GPU. */
async function computeInverses(ps: Prepared[], dampG: number, dampA: number): Promise<void> {
  for (const p of ps) {
    if (p.kind === "identity") {
      throw new Error(
        `pruner: OBS with identity curvature is not defined (module ${p.lin.name}); use --obd (magnitude pruning)`,
      );
    }
  }
  for (const p of ps) {
    const rt = p.W.rt;
    p.Ghat = await dampedInverseGpu(
      p.curv.G[0] ?? null,
      p.R,
      p.keepR,
      dampG,
      `inv(G0 + λg·I) of ${p.lin.name}`,
      rt,
    );
    p.Ahat = await dampedInverseGpu(
      p.curv.A[0],
      p.C,
      p.keepC,
      dampA,
      `inv(A0 + λa·I) of ${p.lin.name}`,
      rt,
    );
  }
}
