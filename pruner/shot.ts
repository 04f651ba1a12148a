/**
 * One pruning shot over the whole model (ALGORITHM.md §8 `PRUNE_SHOT`): prepare every module,
 * compute local costs, find the global threshold τ, build masks and apply the OBD masking or the
 * OBS updates. Plus `sparsityStats`, the exact zero counts of the prunable weights.
 *
 * @module
 */
import { Tensor } from "../kernels/tensor.ts";
import type { CausalLM, PrunableLinear } from "../model/types.ts";
import { kthSmallestCounts } from "../kernels/select.ts";
import { nmGroupCosts, nmMask, nonZeroCounts, readAll, rowColMap } from "../curvature/_ops.ts";
import { type Curvature, disposeCurvature } from "../curvature/types.ts";
import { HostCurvature, toDevice } from "../curvature/host.ts";
import { elementCosts, rowColCosts } from "./costs.ts";
import { disposePrepared, type Prepared, prepareModules, type PrepareOptions } from "./prepare.ts";
import {
  PruneOptionError,
  type Structure,
  structuredThreshold,
  structureName,
} from "./structure.ts";
import {
  applyMask,
  applyRowColMask,
  elementUpdate,
  structuredUpdate,
  type UpdateOptions,
} from "./update.ts";

/**
 * Options of one pruning shot (names follow the reference's flags).
 *
 * @example Usage
 * ```ts
 * import type { PruneOptions } from "@llm-surgeon/toolkit";
 * // 2:4 semi-structured, OBS updates in correlated chunks of 1000 entries.
 * const opts: PruneOptions = { structure: { n: 2, m: 4 }, maxCorrelate: 1000, addupdate: true };
 * console.log(opts.obd ?? false); // false: OBS costs and updates
 * ```
 */
export interface PruneOptions {
  /** Removable unit (`--structures`). */
  structure: Structure;
  /** OBD costs and no weight update (`--obd`). */
  obd?: boolean;
  /** Relative damping λg of G (`--damp_g`, default 0.01). */
  dampG?: number;
  /** Relative damping λa of A (`--damp_a`, default 0.01). */
  dampA?: number;
  /** Correlated-update chunk size (`--max_correlate`, default 0 = all). */
  maxCorrelate?: number;
  /** Chunks see earlier chunks' compensation (`--addupdate`). */
  addupdate?: boolean;
  /** Cut over-long rows into chunks (`--strictmax`). */
  strictmax?: boolean;
  /** η in W ← W + η·E (`--update_scale`, default 1). */
  updateScale?: number;
  /** KFAC OBD element costs from the exact diagonal (`--use_diagonal`). */
  useDiagonal?: boolean;
  /** krank ≥ 2: costs from rank 0 only (`--rank1cost`). */
  rank1cost?: boolean;
  /** krank ≥ 2: shift a non-positive s of the two-term basis to positive (`--eigenfix`). */
  eigenfix?: boolean;
  /**
   * Prepare one module at a time (`--low_memory`): the costs of every module are computed first,
   * each module's damped inverses and augmented weight freed as soon as its costs are known, and
   * prepared again for its update. GPU memory then holds the costs of all modules but the inverses
   * of one; the inverses are computed twice. Same results as the default, which prepares every
   * module at once.
   */
  lowMemory?: boolean;
}

/**
 * Kept fraction and surviving rows/columns of one module.
 *
 * @example Usage
 * ```ts
 * import type { ModuleSparsity } from "@llm-surgeon/toolkit";
 * // fc1 of layer 0 of a 768-wide OPT ([3072, 768 + 1] with the bias column) after row pruning.
 * const m: ModuleSparsity = {
 *   name: "model.decoder.layers.0.fc1",
 *   kind: "fc1",
 *   layer: 0,
 *   kept: 2048 / 3072,
 *   rowsKept: 2048,
 *   colsKept: 769,
 * };
 * console.log(m.rowsKept * m.colsKept); // 1574912 entries left
 * ```
 */
export interface ModuleSparsity {
  /** Module name. */
  name: string;
  /** Module kind (q_proj, fc1, …). */
  kind: string;
  /** Decoder layer. */
  layer: number;
  /** Fraction of non-zero entries of [W | b]. */
  kept: number;
  /** Rows of [W | b] with a non-zero entry. */
  rowsKept: number;
  /** Columns of [W | b] (bias column included) with a non-zero entry. */
  colsKept: number;
}

/**
 * Sparsity of the prunable weights (biases included), overall and per module kind.
 *
 * @example Usage
 * ```ts ignore
 * import { sparsityStats, type SparsityStats } from "@llm-surgeon/toolkit";
 * const st: SparsityStats = await sparsityStats(model);
 * for (const m of st.perModule) console.log(m.name, (1 - m.kept).toFixed(3));
 * ```
 */
export interface SparsityStats {
  /** Fraction of zero entries over all prunable [W | b]. */
  overall: number;
  /** Fraction of zeros per module kind. */
  perKind: Record<string, number>;
  /** Per module. */
  perModule: ModuleSparsity[];
}

/**
 * What one shot did.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type ShotReport } from "@llm-surgeon/toolkit";
 * const report: ShotReport = {
 *   target: 0.25,
 *   threshold: 0.0123,
 *   removedUnits: 1024,
 *   unit: "entries",
 *   sparsity: 0.25,
 *   perKind: { fc1: 0.3, fc2: 0.2 },
 *   perModule: [],
 *   seconds: 2.5,
 * };
 * assert.equal(report.removedUnits, 1024);
 * ```
 */
export interface ShotReport {
  /** Target cumulative sparsity of this shot. */
  target: number;
  /** Global threshold τ (−∞ when nothing was selected). */
  threshold: number;
  /** Units at or below τ: entries (element), groups (N:M), rows + columns (structured). */
  removedUnits: number;
  /** What `removedUnits` counts. */
  unit: "entries" | "groups" | "rows+columns";
  /** Achieved sparsity of the prunable weights after the shot. */
  sparsity: number;
  /** Achieved sparsity per module kind. */
  perKind: Record<string, number>;
  /** Per-module kept fractions. */
  perModule: ModuleSparsity[];
  /** Wall time of the shot in seconds. */
  seconds: number;
}

/**
 * Exact sparsity of the model's prunable weights (one read-back).
 *
 * @example Usage
 * ```ts ignore
 * const st = await sparsityStats(model);
 * console.log(st.overall, st.perKind.fc1);
 * ```
 */
export async function sparsityStats(model: CausalLM): Promise<SparsityStats> {
  const lins = model.linears();
  const counts = lins.map((l) => nonZeroCounts(l.weight, l.bias));
  const raw = await readAll(counts.flatMap((c) => [c.rows, c.cols]));
  for (const c of counts) c.rows.dispose(), c.cols.dispose();
  let zeros = 0, total = 0;
  const kz: Record<string, number> = {}, kt: Record<string, number> = {};
  const perModule = lins.map((lin, k) => {
    const rows = new Uint32Array(raw[2 * k]), cols = new Uint32Array(raw[2 * k + 1]);
    const R = rows.length, C = cols.length;
    let nnz = 0, rk = 0, ck = 0;
    for (const x of rows) {
      nnz += x;
      if (x) rk++;
    }
    for (const x of cols) if (x) ck++;
    zeros += R * C - nnz;
    total += R * C;
    kz[lin.kind] = (kz[lin.kind] ?? 0) + R * C - nnz;
    kt[lin.kind] = (kt[lin.kind] ?? 0) + R * C;
    return {
      name: lin.name,
      kind: lin.kind,
      layer: lin.layer,
      kept: nnz / (R * C),
      rowsKept: rk,
      colsKept: ck,
    };
  });
  const perKind: Record<string, number> = {};
  for (const k in kt) perKind[k] = kz[k] / kt[k];
  return { overall: total ? zeros / total : 0, perKind, perModule };
}

/**
 * The prepared modules of a shot: all prepared at once, or (low memory) one at a time, prepared
 * again for each pass over them. Preparation is deterministic and a module's update touches only
 * its own weights, so both give the same results.
 */
class ModuleSource {
  private constructor(
    private readonly lins: PrunableLinear[],
    private readonly curv: Curvature | HostCurvature,
    private readonly popts: PrepareOptions,
    private all: Prepared[] | null,
  ) {}

  /**
   * Prepares every module now, or none yet when `lowMemory` (always with host curvature, which
   * is uploaded one module at a time).
   */
  static async open(
    lins: PrunableLinear[],
    curv: Curvature | HostCurvature,
    popts: PrepareOptions,
    lowMemory: boolean,
  ): Promise<ModuleSource> {
    const all = lowMemory || curv instanceof HostCurvature
      ? null
      : await prepareModules(lins, curv, popts);
    return new ModuleSource(lins, curv, popts, all);
  }

  /** Calls `fn` on every prepared module in order; frees each one after it in low-memory mode. */
  async each(fn: (p: Prepared, i: number) => Promise<void>): Promise<void> {
    for (let i = 0; i < this.lins.length; i++) {
      if (this.all) {
        await fn(this.all[i], i);
        continue;
      }
      const lin = this.lins[i];
      let uploaded: Curvature | null = null;
      if (this.curv instanceof HostCurvature) {
        // A module without curvature is reported by prepareModules.
        const h = this.curv.get(lin.name);
        uploaded = new Map(h ? [[lin.name, toDevice(lin.weight.rt, h)]] : []);
      }
      try {
        const [p] = await prepareModules([lin], uploaded ?? (this.curv as Curvature), this.popts);
        try {
          await fn(p, i);
        } finally {
          disposePrepared([p]);
        }
      } finally {
        disposeCurvature(uploaded);
      }
    }
  }

  /** `fn` of every prepared module (results that must not refer to the module's tensors). */
  async map<T>(fn: (p: Prepared) => T): Promise<T[]> {
    const out: T[] = [];
    await this.each((p) => {
      out.push(fn(p));
      return Promise.resolve();
    });
    return out;
  }

  /** Frees the modules prepared at once. */
  dispose(): void {
    if (this.all) disposePrepared(this.all);
    this.all = null;
  }
}

function updateOptions(opts: PruneOptions): UpdateOptions {
  return {
    maxCorrelate: opts.maxCorrelate ?? 0,
    strictmax: opts.strictmax ?? false,
    addupdate: opts.addupdate ?? false,
    updateScale: opts.updateScale ?? 1,
  };
}

/**
 * Prunes `model` in place to the cumulative sparsity `target` with the given curvature.
 * The threshold selects at most ⌊s·V⌋ units (quirk Q8 fixed; ties at τ are all removed, so the
 * count can exceed it only by ties); already-zero entries and dead rows/columns count as removed
 * and stay exactly zero.
 *
 * @param model the model (its prunable weights are modified)
 * @param curv curvature of every module (from `estimateCurvature`), or in host memory (from
 *   `estimateCurvatureInGroups`: uploaded one module at a time, as with `lowMemory`)
 * @param target cumulative sparsity in [0, 1]
 * @param opts structure and method options
 * @example Usage
 * ```ts ignore
 * const curv = await estimateCurvature(model, calib, { kind: "kfac", useIad: true });
 * const rep = await pruneShot(model, curv, 0.3, { structure: "rowcol" });
 * console.log(rep.threshold, rep.sparsity);
 * ```
 */
export async function pruneShot(
  model: CausalLM,
  curv: Curvature | HostCurvature,
  target: number,
  opts: PruneOptions,
): Promise<ShotReport> {
  const t0 = performance.now();
  if (!(target >= 0 && target <= 1)) {
    throw new PruneOptionError(`--sparsity: target ${target} is not in [0, 1]`);
  }
  const obd = opts.obd ?? false;
  const structure = opts.structure;
  const lins = model.linears();
  const costOpts = { obd, useDiagonal: opts.useDiagonal, rank1cost: opts.rank1cost };
  const upd = updateOptions(opts);
  if (structure === "rowcol" && upd.maxCorrelate < 0) {
    throw new PruneOptionError(
      `--max_correlate ${upd.maxCorrelate}: negative values are for element/N:M only`,
    );
  }
  const modules = await ModuleSource.open(lins, curv, {
    obd,
    dampG: opts.dampG ?? 0.01,
    dampA: opts.dampA ?? 0.01,
    eigenfix: opts.eigenfix ?? false,
  }, opts.lowMemory ?? false);
  let threshold = -Infinity, removedUnits = 0;
  let unit: ShotReport["unit"] = "entries";
  const temps: Tensor[] = [];
  try {
    if (structure === "element" || typeof structure === "object") {
      const costs = await modules.map((p) => elementCosts(p, costOpts));
      temps.push(...costs);
      let units: Tensor[] = costs;
      let nm: { sum: Tensor; nth: Tensor }[] = [];
      let k: number;
      if (structure === "element") {
        const V = costs.reduce((s, c) => s + c.size, 0);
        k = Math.floor(target * V + 1e-9);
      } else {
        unit = "groups";
        nm = lins.map((l, i) => nmGroupCosts(costs[i], l.inFeatures, structure.n, structure.m));
        for (const g of nm) temps.push(g.sum, g.nth);
        units = nm.map((g) => g.sum);
        const B = units.reduce((s, c) => s + c.size, 0);
        k = Math.min(Math.floor(target * structure.m / structure.n * B + 1e-9), B);
      }
      if (k > 0) {
        const sel = await kthSmallestCounts(units.filter((u) => u.size > 0), k - 1);
        threshold = sel.value;
        removedUnits = sel.atOrBelow;
      }
      await modules.each(async (p, i) => {
        const mask = typeof structure === "object"
          ? nmMask(costs[i], nm[i].sum, nm[i].nth, structure.m, threshold)
          : rowColMap("select(0.0, 1.0, a <= s0)", costs[i], { s: [threshold], name: "mask" });
        // Entries that are already zero stay constrained to zero (they are removed units).
        rowColMap("max(a, select(0.0, 1.0, b == 0.0))", mask, { b: p.W, out: mask });
        if (obd) applyMask(p, mask);
        else await elementUpdate(p, mask, upd);
        mask.dispose();
      });
    } else if (structure === "rowcol") {
      unit = "rows+columns";
      const rc = await modules.map((p) => rowColCosts(p, costOpts));
      for (const x of rc) temps.push(x.rows, x.cols);
      const raw = await readAll(rc.flatMap((x) => [x.rows, x.cols]));
      const host = lins.map((_, i) => ({
        rows: new Float32Array(raw[2 * i]),
        cols: new Float32Array(raw[2 * i + 1]),
      }));
      const th = structuredThreshold(host, target);
      threshold = th.tau;
      await modules.each(async (p, i) => {
        const rowsOut: number[] = [], colsOut: number[] = [];
        host[i].rows.forEach((c, r) => {
          if (c <= threshold) {
            removedUnits++;
            if (p.keepR[r]) rowsOut.push(r);
          }
        });
        host[i].cols.forEach((c, j) => {
          if (c <= threshold) {
            removedUnits++;
            if (p.keepC[j]) colsOut.push(j);
          }
        });
        if (obd) {
          const rm = new Float32Array(p.R), cm = new Float32Array(p.C);
          for (const r of rowsOut) rm[r] = 1;
          for (const c of colsOut) cm[c] = 1;
          const rmT = Tensor.fromSync(p.W.rt, rm, [p.R], "f32", "rows out");
          const cmT = Tensor.fromSync(p.W.rt, cm, [p.C], "f32", "cols out");
          applyRowColMask(p, rmT, cmT);
          rmT.dispose(), cmT.dispose();
        } else {
          await structuredUpdate(p, rowsOut, colsOut, upd);
        }
      });
    } else {
      throw new PruneOptionError(`--structures: unknown structure ${JSON.stringify(structure)}`);
    }
  } finally {
    for (const t of temps) t.dispose();
    modules.dispose();
  }
  const st = await sparsityStats(model);
  return {
    target,
    threshold,
    removedUnits,
    unit,
    sparsity: st.overall,
    perKind: st.perKind,
    perModule: st.perModule,
    seconds: (performance.now() - t0) / 1000,
  };
}

/**
 * One-line summary of a shot report for logs.
 *
 * @param shot the shot number
 * @param r the shot's report
 * @param structure the structure that was pruned
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatShot, type ShotReport } from "@llm-surgeon/toolkit";
 * const report: ShotReport = {
 *   target: 0.25,
 *   threshold: 0.0123,
 *   removedUnits: 1024,
 *   unit: "entries",
 *   sparsity: 0.25,
 *   perKind: { fc1: 0.3, fc2: 0.2 },
 *   perModule: [],
 *   seconds: 2.5,
 * };
 * assert.equal(
 *   formatShot(3, report, "element"),
 *   "shot 3: element target 0.2500 τ 1.2300e-2 removed 1024 entries, sparsity 0.2500 (2.5 s)",
 * );
 * ```
 */
export function formatShot(shot: number, r: ShotReport, structure: Structure): string {
  return `shot ${shot}: ${structureName(structure)} target ${r.target.toFixed(4)} τ ${
    r.threshold.toExponential(4)
  } ` +
    `removed ${r.removedUnits} ${r.unit}, sparsity ${r.sparsity.toFixed(4)} (${
      r.seconds.toFixed(1)
    } s)`;
}
