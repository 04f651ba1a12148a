/**
 * The multi-shot surgeon (ALGORITHM.md §8): a linear sparsity schedule, curvature re-estimated on
 * the partially pruned model at every shot, optional fresh data per shot (`newdata`, quirk Q3
 * fixed) and LoRA steps between shots (§9). Plus the method presets of §11.2.
 *
 * @module
 */
import type { CausalLM } from "../model/types.ts";
import { estimateCurvature } from "../curvature/estimate.ts";
import { estimateCurvatureInGroups } from "../curvature/host.ts";
import { type Curvature, type CurvatureOptions, disposeCurvature } from "../curvature/types.ts";
import { loraFinetune, loraSubset } from "./lora.ts";
import { type PruneOptions, pruneShot, type ShotReport } from "./shot.ts";
import { PruneOptionError, type Structure } from "./structure.ts";

/**
 * Options of {@link runSchedule}: curvature options, prune options and the schedule itself.
 *
 * @example Usage
 * ```ts
 * import { presetFor, type ScheduleOptions } from "@llm-surgeon/toolkit";
 * // LLM Surgeon, structured, to 30% in 40 shots with fresh calibration data per shot.
 * const opts: ScheduleOptions = {
 *   ...presetFor("surgeon-structured", "rowcol"),
 *   sparsity: 0.3,
 *   shots: 40,
 *   newdata: true,
 *   seed: 100,
 * };
 * console.log(opts.kind, opts.structure); // "kfac" "rowcol"
 * ```
 */
export type ScheduleOptions =
  & Omit<CurvatureOptions, "reuse" | "onProgress" | "seed">
  & PruneOptions
  & {
    /** Final target sparsity s (`--sparsity`). */
    sparsity: number;
    /** Number of shots S (`--shots`); shot k targets k·s/S. */
    shots: number;
    /** Resume: skip shots ≤ startShot (the model already holds their result). */
    startShot?: number;
    /** Fresh calibration sequences per shot (`--newdata`): shot k uses `[(k−1)·n, k·n)`. */
    newdata?: boolean;
    /** n, sequences per shot (default: all, or all / S with newdata). */
    nsamples?: number;
    /** Seed the power iteration with the previous shot's factors (`--reuse`). */
    reuse?: boolean;
    /** LoRA steps between shots and after the last one (`--lora`), or null. */
    lora?: { lr: number; subset: number; epochs: number } | null;
    /** Seed of all randomness (sampled Fisher labels, LoRA init and subsets), combined with the shot. */
    seed: number;
    /**
     * Estimate the curvature in this many rounds over groups of decoder layers, keeping the factors
     * in host memory between rounds (`--curvature_groups`, default 1: one round, factors on the
     * GPU). The same factors; the forward passes are repeated per group. Not with `reuse`.
     */
    curvatureGroups?: number;
  };

/**
 * Callbacks of {@link runSchedule}.
 *
 * @example Usage
 * ```ts
 * import type { ScheduleHooks } from "@llm-surgeon/toolkit";
 * const hooks: ScheduleHooks = {
 *   onShot: (shot, report) => {
 *     console.log(`shot ${shot}: ${(100 * report.sparsity).toFixed(2)}% pruned`);
 *     return Promise.resolve();
 *   },
 *   onProgress: (line) => console.error(line),
 * };
 * hooks.onProgress?.("ready");
 * ```
 */
export interface ScheduleHooks {
  /** After every shot (and its LoRA step), e.g. to evaluate perplexity or save a checkpoint. */
  onShot?(shot: number, report: ShotReport): Promise<void>;
  /** Progress lines (curvature passes, shots, LoRA epochs). */
  onProgress?(msg: string): void;
}

/**
 * The sparsity target of shot k (1-based) of a linear schedule.
 *
 * @param k the shot, 1…shots
 * @param shots the number of shots S
 * @param sparsity the final target s
 * @returns k·s/S
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { linearTarget } from "@llm-surgeon/toolkit";
 * assert.equal(linearTarget(10, 40, 0.3), 0.075);
 * assert.equal(linearTarget(40, 40, 0.5), 0.5); // the last shot reaches s
 * ```
 */
export function linearTarget(k: number, shots: number, sparsity: number): number {
  return k * sparsity / shots;
}

/**
 * The seed used for shot k: every random choice of a shot depends only on (seed, shot).
 *
 * @param seed the run's seed (`--seed`)
 * @param shot the shot
 * @returns an unsigned 32-bit seed
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { shotSeed } from "@llm-surgeon/toolkit";
 * assert.equal(shotSeed(100, 1), shotSeed(100, 1)); // a resumed run draws the same labels
 * assert.notEqual(shotSeed(100, 1), shotSeed(100, 2));
 * assert.ok(Number.isInteger(shotSeed(100, 1)) && shotSeed(100, 1) < 2 ** 32);
 * ```
 */
export function shotSeed(seed: number, shot: number): number {
  return (Math.imul(seed >>> 0, 2654435761) ^ Math.imul(shot + 1, 40503)) >>> 0;
}

/**
 * The calibration sequences of shot k (1-based): the first n of them, or with `newdata` the
 * k-th block of n.
 *
 * @param calibration all calibration sequences
 * @param k the shot
 * @param opts `shots`, `newdata` and `nsamples` are read
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type ScheduleOptions, shotData } from "@llm-surgeon/toolkit";
 * const calib = [0, 1, 2, 3, 4, 5].map((i) => Int32Array.of(i));
 * const opts: ScheduleOptions = {
 *   kind: "kfac",
 *   structure: "element",
 *   sparsity: 0.5,
 *   shots: 3,
 *   seed: 0,
 *   newdata: true,
 * };
 * // 6 sequences over 3 shots: shot 2 gets sequences 2 and 3.
 * assert.deepEqual(shotData(calib, 2, opts).map((s) => s[0]), [2, 3]);
 * assert.equal(shotData(calib, 2, { ...opts, newdata: false }).length, 6);
 * ```
 */
export function shotData(
  calibration: Int32Array[],
  k: number,
  opts: ScheduleOptions,
): Int32Array[] {
  const S = opts.shots;
  if (!opts.newdata) return calibration.slice(0, opts.nsamples ?? calibration.length);
  const n = opts.nsamples ?? Math.floor(calibration.length / S);
  if (n < 1 || calibration.length < n * S) {
    throw new PruneOptionError(
      `--newdata: ${S} shots × ${n} sequences need ${
        n * S
      } calibration sequences, got ${calibration.length}`,
    );
  }
  return calibration.slice((k - 1) * n, k * n);
}

/**
 * Runs the multi-shot pruning schedule on `model` in place.
 *
 * @param model the model to prune
 * @param calibration calibration sequences (all shots' when `newdata`)
 * @param opts curvature, pruning and schedule options
 * @param hooks per-shot callback and progress lines
 * @example Usage
 * ```ts ignore
 * await runSchedule(model, calib, { ...methodPresets["surgeon-unstructured"], sparsity: 0.5, shots: 5, seed: 100 }, {
 *   onShot: async (k, r) => console.log(k, r.sparsity, await perplexity(model, test)),
 * });
 * ```
 */
export async function runSchedule(
  model: CausalLM,
  calibration: Int32Array[],
  opts: ScheduleOptions,
  hooks: ScheduleHooks = {},
): Promise<void> {
  const S = opts.shots;
  if (!Number.isInteger(S) || S < 1) {
    throw new PruneOptionError(`--shots must be a positive integer, got ${S}`);
  }
  if (!(opts.sparsity >= 0 && opts.sparsity <= 1)) {
    throw new PruneOptionError(`--sparsity must be in [0, 1], got ${opts.sparsity}`);
  }
  const groups = opts.curvatureGroups ?? 1;
  if (!Number.isInteger(groups) || groups < 1) {
    throw new PruneOptionError(`--curvature_groups must be a positive integer, got ${groups}`);
  }
  if (groups > 1 && opts.reuse) {
    throw new PruneOptionError(
      "--reuse keeps the previous shot's factors on the GPU; it cannot be combined with --curvature_groups > 1",
    );
  }
  const start = opts.startShot ?? 0;
  const log = hooks.onProgress ?? (() => {});
  let prev: Curvature | null = null;
  try {
    const rt = model.linears()[0]?.weight.rt;
    for (let k = start + 1; k <= S; k++) {
      const X = shotData(calibration, k, opts);
      const seed = shotSeed(opts.seed, k);
      rt?.resetPeak();
      const target = linearTarget(k, S, opts.sparsity);
      let report: ShotReport;
      const curvOpts: CurvatureOptions = {
        kind: opts.kind,
        useIad: opts.useIad,
        kpcaIter: opts.kpcaIter,
        krank: opts.krank,
        fisherSamples: opts.fisherSamples,
        properSampledFisher: opts.properSampledFisher,
        maxOutgrad: opts.maxOutgrad,
        diagonal: opts.diagonal,
        lowMemory: opts.lowMemory,
        seed,
        reuse: opts.reuse ? prev : null,
        onProgress: log,
      };
      if (groups > 1) {
        const host = await estimateCurvatureInGroups(model, X, curvOpts, groups);
        try {
          report = await pruneShot(model, host, target, opts);
        } finally {
          host.clear();
        }
      } else {
        const curv = await estimateCurvature(model, X, curvOpts);
        disposeCurvature(prev);
        prev = null;
        try {
          report = await pruneShot(model, curv, target, opts);
        } finally {
          if (opts.reuse) prev = curv;
          else disposeCurvature(curv);
        }
      }
      // Peak GPU buffer memory of the shot (curvature and pruning), to size runs with.
      const peak = rt ? `, peak GPU memory ${(rt.peakBytes / 2 ** 30).toFixed(2)} GiB` : "";
      log(
        `shot ${k}/${S}: target ${target.toFixed(4)}, τ ${report.threshold.toExponential(4)}, ` +
          `sparsity ${report.sparsity.toFixed(4)} (${report.seconds.toFixed(1)} s${peak})`,
      );
      if (opts.lora) {
        const last = k === S;
        const subset = loraSubset(X.length, last ? 1 : opts.lora.subset, seed);
        const losses = await loraFinetune(
          model,
          subset.map((i) => X[i]),
          { lr: opts.lora.lr, subset: 1, epochs: last ? opts.lora.epochs : 1 },
          seed,
        );
        log(
          `shot ${k}: LoRA on ${subset.length} sequences, epoch losses ${
            losses.map((l) => l.toFixed(4)).join(", ")
          }`,
        );
      }
      await hooks.onShot?.(k, report);
    }
  } finally {
    disposeCurvature(prev);
  }
}

/**
 * Names of the method presets.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type MethodName, methodPresets } from "@llm-surgeon/toolkit";
 * const name: MethodName = "kron-obd";
 * assert.equal(methodPresets[name].kind, "kfac");
 * ```
 */
export type MethodName =
  | "magnitude"
  | "l-obd"
  | "kron-obd"
  | "surgeon-structured"
  | "surgeon-semistructured"
  | "surgeon-unstructured";

/**
 * A preset: curvature and prune options of one published method (structure optional for baselines).
 *
 * @example Usage
 * ```ts
 * import type { MethodPreset } from "@llm-surgeon/toolkit";
 * // Magnitude pruning as a preset of our own: identity curvature, no weight updates.
 * const mine: MethodPreset = { kind: "identity", obd: true, structure: { n: 2, m: 4 }, shots: 1 };
 * console.log(mine.kind); // "identity"
 * ```
 */
export type MethodPreset = Partial<ScheduleOptions> & Pick<ScheduleOptions, "kind">;

/**
 * The option sets of ALGORITHM.md §11.2. Baselines leave the structure to the caller;
 * {@link presetFor} adds the per-structure shot count and damping of the published scripts.
 *
 * @example Usage
 * ```ts ignore
 * const opts = { ...methodPresets["surgeon-structured"], sparsity: 0.3, shots: 40, seed: 100 };
 * ```
 *
 * @example What the presets say
 * ```ts
 * import assert from "node:assert/strict";
 * import { methodPresets } from "@llm-surgeon/toolkit";
 * assert.equal(methodPresets["magnitude"].kind, "identity"); // magnitude = OBD with identity curvature
 * assert.equal(methodPresets["surgeon-structured"].shots, 40);
 * assert.equal(methodPresets["surgeon-structured"].obd, false); // OBS: weights are updated
 * ```
 */
export const methodPresets: Readonly<Record<MethodName, MethodPreset>> = {
  "magnitude": { kind: "identity", obd: true, useIad: true, shots: 1 },
  "l-obd": { kind: "activations", obd: true, useIad: true, shots: 1 },
  "kron-obd": { kind: "kfac", obd: true, useIad: true, krank: 1, kpcaIter: 10, shots: 1 },
  "surgeon-structured": {
    kind: "kfac",
    structure: "rowcol",
    useIad: true,
    obd: false,
    shots: 40,
    maxCorrelate: 0,
    addupdate: false,
    dampG: 0.01,
    dampA: 0.01,
  },
  "surgeon-semistructured": {
    kind: "kfac",
    structure: { n: 2, m: 4 },
    useIad: true,
    obd: false,
    shots: 5,
    maxCorrelate: 2000,
    addupdate: true,
    dampG: 0.1,
    dampA: 0.01,
  },
  "surgeon-unstructured": {
    kind: "kfac",
    structure: "element",
    useIad: true,
    obd: false,
    shots: 5,
    krank: 1,
    kpcaIter: 10,
    maxCorrelate: 2000,
    addupdate: true,
    dampG: 0.1,
    dampA: 0.01,
  },
};

/**
 * A preset completed for a structure as in the published scripts (§11.2): structured K-OBD and
 * L-OBD multi-shot use 40 / 24 shots there, but single-shot variants exist too, so the shot count
 * of the baselines is 1 unless `multiShot`; K-OBD uses λg = 0.1 for element and N:M.
 *
 * @param name the method
 * @param structure the structure to prune
 * @param multiShot the multi-shot variant of a baseline
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { presetFor } from "@llm-surgeon/toolkit";
 * const kobd = presetFor("kron-obd", "element", true);
 * assert.equal(kobd.shots, 40);
 * assert.equal(kobd.dampG, 0.1);
 * assert.equal(presetFor("l-obd", "rowcol").shots, 1);
 * ```
 */
export function presetFor(
  name: MethodName,
  structure: Structure,
  multiShot = false,
): MethodPreset & Pick<ScheduleOptions, "structure"> {
  const p = { structure, ...methodPresets[name] };
  if (name === "kron-obd") {
    if (structure !== "rowcol") p.dampG = 0.1;
    if (multiShot) p.shots = 40;
  }
  if (name === "l-obd" && multiShot) p.shots = 24;
  if (name === "magnitude" && structure === "element" && multiShot) p.shots = 5;
  return p;
}
