/**
 * Pruning structures (ALGORITHM.md §1.3) and the pure host-side pieces of the global threshold
 * (§6.3) and of the element-update chunking (§7.3).
 *
 * @module
 */

/**
 * What one removable unit is: single entries, whole rows and columns together, or N:M groups.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type Structure, structureName } from "@llm-surgeon/toolkit";
 * const twoOfFour: Structure = { n: 2, m: 4 }; // 2 of every 4 consecutive entries of a row
 * assert.equal(structureName(twoOfFour), "2:4");
 * ```
 */
export type Structure = "element" | "rowcol" | { n: number; m: number };

/**
 * Raised for invalid pruning options; the message names the flag.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseStructures, PruneOptionError } from "@llm-surgeon/toolkit";
 * // Rows and columns are only ever pruned together.
 * assert.throws(() => parseStructures(["row"]), PruneOptionError);
 * ```
 */
export class PruneOptionError extends Error {
  /**
   * Creates the error.
   * @param message what is wrong, naming the flag
   */
  constructor(message: string) {
    super(message);
    this.name = "PruneOptionError";
  }
}

/**
 * Parses the reference's `--structures` values: `row column` (or `column row`), `element`, and
 * any `N:M` such as `2:4` or `4:8`. Words may come as separate list items or in one string.
 *
 * @param list the flag's words, as separate items or space/comma separated
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseStructures } from "@llm-surgeon/toolkit";
 * assert.equal(parseStructures(["column", "row"]), "rowcol");
 * assert.equal(parseStructures(["row column"]), "rowcol");
 * assert.deepEqual(parseStructures(["4:8"]), { n: 4, m: 8 });
 * ```
 */
export function parseStructures(list: string[]): Structure {
  const words = list.flatMap((s) => s.split(/[\s,]+/)).map((s) => s.trim().toLowerCase()).filter(
    (s) => s,
  );
  const set = new Set(words);
  if (set.size === 0) throw new PruneOptionError("--structures: empty list");
  if (set.size === 1 && set.has("element")) return "element";
  if (set.size === 1 && set.has("rowcol")) return "rowcol";
  if (set.size === 2 && set.has("row") && set.has("column")) return "rowcol";
  if (set.size === 1) {
    const m = /^(\d+):(\d+)$/.exec(words[0]);
    if (m) {
      const n = Number(m[1]), M = Number(m[2]);
      if (n < 1 || M < 1 || n > M || M > 32) {
        throw new PruneOptionError(`--structures ${words[0]}: need 1 ≤ N ≤ M ≤ 32`);
      }
      return { n, m: M };
    }
    if (words[0] === "row" || words[0] === "column") {
      throw new PruneOptionError(
        `--structures ${words[0]}: rows and columns are always pruned together; pass "row column"`,
      );
    }
  }
  throw new PruneOptionError(
    `--structures ${list.join(" ")}: expected "row column", "element" or "N:M" (e.g. 2:4)`,
  );
}

/**
 * Human-readable name of a structure ("element", "row column", "2:4").
 *
 * @param s the structure
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { structureName } from "@llm-surgeon/toolkit";
 * assert.equal(structureName("rowcol"), "row column");
 * assert.equal(structureName("element"), "element");
 * assert.equal(structureName({ n: 2, m: 4 }), "2:4");
 * ```
 */
export function structureName(s: Structure): string {
  return typeof s === "string" ? (s === "rowcol" ? "row column" : s) : `${s.n}:${s.m}`;
}

/**
 * Per-module row and column costs for the structured threshold (full size, dead = 0).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type RowColCosts, structuredThreshold } from "@llm-surgeon/toolkit";
 * // A 2×2 module: its cheap row holds 2 of its 4 entries, exactly half.
 * const m: RowColCosts = { rows: [0.1, 5], cols: [3, 4] };
 * assert.equal(structuredThreshold([m], 0.5).tau, 0.1);
 * ```
 */
export interface RowColCosts {
  /** Row costs, length R. */
  rows: ArrayLike<number>;
  /** Column costs, length C (bias column included). */
  cols: ArrayLike<number>;
}

/**
 * Structured threshold (ALGORITHM.md §6.3): the largest cost τ such that removing every row and
 * column with cost ≤ τ removes at most ⌊s·Σ R·C⌋ entries (overlaps counted once). Ties are
 * handled as units: a cost value is admitted only if all its ties fit. Returns `-Infinity` when
 * not even the cheapest structure fits (nothing is removed; [ref] crashes there, quirk Q8).
 *
 * @param modules row and column costs of every module
 * @param s target sparsity in [0, 1]
 * @returns τ, the entries removed at τ, the target ⌊s·Σ R·C⌋ and Σ R·C
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { structuredThreshold } from "@llm-surgeon/toolkit";
 * const t = structuredThreshold(
 *   [{ rows: [0.1, 0.5], cols: [0.2, 0.3, 0.9] }, { rows: [0.05, 0.4, 0.6], cols: [0.35, 0.7] }],
 *   0.5,
 * );
 * assert.equal(t.tau, 0.2);
 * assert.equal(t.removed, 6);
 * ```
 */
export function structuredThreshold(
  modules: RowColCosts[],
  s: number,
): { tau: number; removed: number; target: number; total: number } {
  let total = 0;
  const items: { cost: number; mod: number; row: boolean }[] = [];
  modules.forEach((m, k) => {
    total += m.rows.length * m.cols.length;
    for (let i = 0; i < m.rows.length; i++) items.push({ cost: m.rows[i], mod: k, row: true });
    for (let i = 0; i < m.cols.length; i++) items.push({ cost: m.cols[i], mod: k, row: false });
  });
  const target = Math.floor(s * total + 1e-9);
  items.sort((a, b) => a.cost - b.cost);
  const r = new Array(modules.length).fill(0);
  const c = new Array(modules.length).fill(0);
  let removed = 0, tau = -Infinity, best = 0;
  for (let k = 0; k < items.length; k++) {
    const it = items[k];
    const R = modules[it.mod].rows.length, C = modules[it.mod].cols.length;
    if (it.row) {
      removed += C - c[it.mod];
      r[it.mod]++;
    } else {
      removed += R - r[it.mod];
      c[it.mod]++;
    }
    const lastOfTie = k + 1 === items.length || items[k + 1].cost !== it.cost;
    if (lastOfTie) {
      if (removed > target) break;
      tau = it.cost;
      best = removed;
    }
  }
  return { tau, removed: best, target, total };
}

/**
 * Chunk sizes of the element/N:M OBS update (ALGORITHM.md §7.3 `CHUNK_SIZES`): rows with masked
 * entries are packed greedily while the chunk stays ≤ |k|; with `strict` an over-long packed
 * chunk is cut into pieces of k. Zero-size chunks are dropped. `k = 0` means one chunk.
 *
 * @param rowCounts masked entries per row
 * @param k chunk limit (0: one chunk)
 * @param strict cut over-long chunks into pieces of k
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { chunkSizes } from "@llm-surgeon/toolkit";
 * assert.deepEqual(chunkSizes([3, 4, 10, 1, 1], 5, false), [3, 4, 10, 2]);
 * assert.deepEqual(chunkSizes([3, 4, 10, 1, 1], 5, true), [3, 4, 5, 5, 2]);
 * assert.deepEqual(chunkSizes([3, 0, 4], 0, false), [7]);
 * ```
 */
export function chunkSizes(rowCounts: number[], k: number, strict: boolean): number[] {
  const counts = rowCounts.filter((n) => n > 0);
  const total = counts.reduce((a, b) => a + b, 0);
  if (k === 0) return total > 0 ? [total] : [];
  const lim = Math.abs(k);
  const sizes: number[] = [];
  let cnt = 0;
  const emit = () => {
    if (strict && k > 0 && cnt > k) {
      for (let i = 0; i < Math.floor(cnt / k); i++) sizes.push(k);
      sizes.push(cnt % k);
    } else sizes.push(cnt);
  };
  for (const n of counts) {
    if (cnt + n > lim) {
      emit();
      cnt = n;
    } else cnt += n;
  }
  emit();
  return sizes.filter((x) => x > 0);
}
