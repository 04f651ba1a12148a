/**
 * Types shared by the curvature estimates (ALGORITHM.md §2) and the pruner that consumes them.
 *
 * @module
 */
import type { Tensor } from "../kernels/tensor.ts";

/**
 * Which curvature model of the loss (ALGORITHM.md §2.2–§2.5).
 *
 * @example Usage
 * ```ts
 * import type { CurvatureKind } from "@llm-surgeon/toolkit";
 * const kinds: CurvatureKind[] = ["identity", "activations", "kfac"];
 * console.log(kinds.length); // 3
 * ```
 */
export type CurvatureKind = "identity" | "activations" | "kfac";

/**
 * The curvature of one prunable module: `F ≈ Σ_i G[i] ⊗ A[i]` (row-major vectorisation of the
 * augmented weight `[W | b]`), plus the optional exact diagonal `D` (`[R, C]`).
 *
 * Identity is represented lazily: empty `G` and `A` lists mean `G = I_R`, `A = I_C`; an empty
 * `G` with a non-empty `A` (Activations) means `G = I_R`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type LayerCurvature, layerKind } from "@llm-surgeon/toolkit";
 * // The lazy identity: no factors, no diagonal.
 * const ident: LayerCurvature = { G: [], A: [], D: null };
 * assert.equal(layerKind(ident), "identity");
 * ```
 */
export interface LayerCurvature {
  /** Output-side factors `[R, R]`, one per Kronecker rank (empty = identity). */
  G: Tensor[];
  /** Input-side factors `[C, C]` (C includes the bias column), one per rank (empty = identity). */
  A: Tensor[];
  /** The exact diagonal `[R, C]` of the per-token Fisher divided by N, or null. */
  D: Tensor | null;
  /** The estimate that produced the factors (decides the cost formulas of §5). */
  kind?: CurvatureKind;
}

/**
 * Curvature of every prunable module, keyed by `PrunableLinear.name`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import type { Curvature } from "@llm-surgeon/toolkit";
 * const curv: Curvature = new Map();
 * curv.set("model.decoder.layers.0.fc1", { G: [], A: [], D: null, kind: "identity" });
 * assert.equal(curv.size, 1);
 * ```
 */
export type Curvature = Map<string, LayerCurvature>;

/**
 * Options of `estimateCurvature` (names follow the reference's flags).
 *
 * @example Usage
 * ```ts
 * import type { CurvatureOptions } from "@llm-surgeon/toolkit";
 * // KFAC with rank 1 from 4 power-iteration half-steps and one sampled label per position.
 * const opts: CurvatureOptions = { kind: "kfac", kpcaIter: 4, krank: 1, fisherSamples: 1 };
 * console.log(opts.kind); // "kfac"
 * ```
 */
export interface CurvatureOptions {
  /** The estimate (`--curvature`). */
  kind: CurvatureKind;
  /** KFAC rank 0 under the IAD assumption (`--use_iad`); otherwise Kronecker power iteration. */
  useIad?: boolean;
  /** Power-iteration half-steps (`--kpca_iter`, must be even when power iteration is used). */
  kpcaIter?: number;
  /** Number of Kronecker terms (`--krank`, default 1). */
  krank?: number;
  /** 0 = empirical Fisher; S > 0 sampled labels per position (`--fisher_samples`). */
  fisherSamples?: number;
  /**
   * With S > 1: sample labels with replacement and average outer products (the proper estimator)
   * instead of [ref]'s gradient of the mean of S losses (quirk Q13). Default false ([ref]).
   */
  properSampledFisher?: boolean;
  /** Clamp output gradients to [−m, m] (`--max_outgrad`, 0 = off). */
  maxOutgrad?: number;
  /** Also compute the exact diagonal D (`--diagonal`). */
  diagonal?: boolean;
  /** Seed for sampled Fisher labels. */
  seed?: number;
  /** Previous shot's curvature: seeds the power iteration with 6 half-steps (`--reuse`). */
  reuse?: Curvature | null;
  /** Receives one line per calibration pass. */
  onProgress?: (msg: string) => void;
  /**
   * Accumulate straight into the factors (`--low_memory`), without the second buffer per factor
   * that otherwise bounds f32 drift (a two-level sum): half the factor memory during a pass, plain
   * f32 sums over the calibration sequences as in the reference without `--double`.
   */
  lowMemory?: boolean;
  /**
   * Estimate only these modules (names of `PrunableLinear`); the others are neither tapped nor in
   * the result. Default: every prunable module. Used for passes over groups of layers.
   */
  modules?: ReadonlySet<string>;
}

/**
 * An error of curvature estimation; the message names the module and the sequence.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { CurvatureError } from "@llm-surgeon/toolkit";
 * const err = new CurvatureError("fc1: --kpca_iter must be even, got 3");
 * assert.equal(err.name, "CurvatureError");
 * assert.ok(err instanceof Error);
 * ```
 */
export class CurvatureError extends Error {
  /**
   * Creates the error.
   * @param message what went wrong, naming the layer/flag
   */
  constructor(message: string) {
    super(message);
    this.name = "CurvatureError";
  }
}

/**
 * Frees every factor of a curvature estimate.
 *
 * @example Usage
 * ```ts ignore
 * const curv = await estimateCurvature(model, seqs, { kind: "kfac", useIad: true });
 * disposeCurvature(curv);
 * ```
 *
 * @example Identity entries hold no tensors
 * ```ts
 * import assert from "node:assert/strict";
 * import { type Curvature, disposeCurvature } from "@llm-surgeon/toolkit";
 * const curv: Curvature = new Map([["fc1", { G: [], A: [], D: null }]]);
 * disposeCurvature(curv);
 * assert.equal(curv.size, 0); // the map is emptied
 * ```
 */
export function disposeCurvature(c: Curvature | null | undefined): void {
  if (!c) return;
  for (const l of c.values()) {
    for (const t of l.G) t.dispose();
    for (const t of l.A) t.dispose();
    l.D?.dispose();
  }
  c.clear();
}

/**
 * The curvature kind of a layer entry (explicit, or inferred from its factor lists).
 *
 * @param l the layer's curvature entry
 * @returns `l.kind` when set; otherwise "identity" without `A` factors, "activations" with `A`
 *   but no `G`, and "kfac" with both
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { layerKind } from "@llm-surgeon/toolkit";
 * assert.equal(layerKind({ G: [], A: [], D: null }), "identity");
 * assert.equal(layerKind({ G: [], A: [], D: null, kind: "kfac" }), "kfac");
 * ```
 */
export function layerKind(l: LayerCurvature): CurvatureKind {
  if (l.kind) return l.kind;
  if (l.A.length === 0) return "identity";
  return l.G.length === 0 ? "activations" : "kfac";
}
