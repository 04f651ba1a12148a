import assert from "node:assert/strict";
import { Tensor } from "../kernels/tensor.ts";
import { kthSmallestCounts } from "../kernels/select.ts";
import { TapReplayModel } from "../curvature/_toy.ts";
import { estimateCurvature } from "../curvature/estimate.ts";
import {
  chunkSizes,
  parseStructures,
  pruneShot,
  sparsityStats,
  structuredThreshold,
} from "../pruner/mod.ts";
import { Rng } from "./_util.ts";

/** A one-layer model whose identity (magnitude) element costs ½W² equal `costs`. */
async function magnitudeModel(costs: number[], R: number, C: number) {
  const model = await TapReplayModel.of(R, C, []);
  model.linears()[0].weight.write(Float32Array.from(costs, (c) => Math.sqrt(2 * c)));
  const curv = await estimateCurvature(model, [], { kind: "identity" });
  return { model, curv };
}

async function zerosOf(model: TapReplayModel): Promise<boolean[]> {
  return Array.from(await model.linears()[0].weight.read(), (x) => x === 0);
}

Deno.test("kthSmallestCounts() is an exact order statistic over several tensors, with ties, negatives and ±0", async () => {
  const rng = new Rng(4);
  const parts = [
    Array.from({ length: 1000 }, () => Math.round(rng.normal() * 20) / 4),
    [0, -0, 0, 1e-30, -1e-30, 3.5, 3.5],
    Array.from({ length: 333 }, () => rng.next() * 1e6),
  ];
  const all = parts.flat().map((x) => Math.fround(x)).sort((a, b) => a - b);
  const ts = await Promise.all(parts.map((p) => Tensor.from(Float32Array.from(p))));
  for (const k of [0, 1, 17, 500, 503, 504, 1006, all.length - 1]) {
    const r = await kthSmallestCounts(ts, k);
    assert.equal(r.value, all[k] === 0 ? 0 : all[k], `k=${k}`);
    assert.equal(r.below, all.filter((x) => x < all[k]).length, `below, k=${k}`);
    assert.equal(r.atOrBelow, all.filter((x) => x <= all[k]).length, `at or below, k=${k}`);
  }
  ts.forEach((t) => t.dispose());
});

Deno.test("R7 unstructured: exactly ⌊s·V⌋ entries are removed (Q8 fixed), ties at τ all removed", async () => {
  const { model, curv } = await magnitudeModel([0.3, 0.1, 0.4, 0.2, 0.5, 0.6], 2, 3);
  // [ref] would take index 3 (τ = 0.4) and prune 4; the target is 3 of 6.
  const r = await pruneShot(model, curv, 0.5, { structure: "element", obd: true });
  assert.equal(Math.fround(r.threshold), Math.fround(0.3));
  assert.deepEqual(await zerosOf(model), [true, true, false, true, false, false]);
  assert.equal(r.sparsity, 0.5);
  // s = 1 works ([ref] crashes) and s = 0 removes nothing.
  const all = await pruneShot(model, curv, 1, { structure: "element", obd: true });
  assert.equal(all.sparsity, 1);
  model.dispose();
  const ties = await magnitudeModel([0.2, 0.1, 0.2, 0.2, 0.5, 0.6], 2, 3);
  const none = await pruneShot(ties.model, ties.curv, 0, { structure: "element", obd: true });
  assert.equal(none.sparsity, 0);
  const t = await pruneShot(ties.model, ties.curv, 0.4, { structure: "element", obd: true });
  // ⌊0.4·6⌋ = 2, the 2nd smallest is 0.2, which has three ties: 4 entries removed.
  assert.equal(t.removedUnits, 4);
  assert.deepEqual(await zerosOf(ties.model), [true, true, true, true, false, false]);
  ties.model.dispose();
});

Deno.test("R7 semi-structured: group costs, +1 behaviour fixed, entries chosen inside groups", async () => {
  const costs = [4, 1, 3, 2, 0, 5, 6, 7];
  const a = await magnitudeModel(costs, 1, 8);
  // s = 0.25 → ⌊0.25·(4/2)·2⌋ = 1 group: the cheaper one (cost 3); [ref] would prune both.
  const r = await pruneShot(a.model, a.curv, 0.25, {
    structure: parseStructures(["2:4"]),
    obd: true,
  });
  assert.equal(r.threshold, 3);
  assert.deepEqual(await zerosOf(a.model), [false, true, false, true, true, false, false, false]);
  a.model.dispose();
  const b = await magnitudeModel(costs, 1, 8);
  await pruneShot(b.model, b.curv, 0.5, { structure: { n: 2, m: 4 }, obd: true });
  assert.deepEqual(await zerosOf(b.model), [false, true, false, true, true, true, false, false]);
  b.model.dispose();
});

Deno.test("R7 structured: the two-module example, overlap counts, and the sweep vs the [ref] running maximum", async () => {
  const mods = [{ rows: [0.1, 0.5], cols: [0.2, 0.3, 0.9] }, {
    rows: [0.05, 0.4, 0.6],
    cols: [0.35, 0.7],
  }];
  assert.equal(structuredThreshold(mods, 0.25).tau, 0.05);
  assert.equal(structuredThreshold(mods, 0.5).tau, 0.2);
  assert.equal(structuredThreshold(mods, 0.5).removed, 6);
  assert.equal(structuredThreshold(mods, 0.75).tau, 0.35);
  assert.equal(structuredThreshold(mods, 0.75).removed, 9);
  assert.equal(structuredThreshold(mods, 0.01).tau, -Infinity);

  // Random property test against [ref]'s formulation (per-module cumulative counts, running max).
  const rng = new Rng(8);
  for (let trial = 0; trial < 30; trial++) {
    const ms = Array.from({ length: 1 + rng.int(3) }, () => {
      const R = 1 + rng.int(5), C = 1 + rng.int(5);
      return {
        rows: Array.from({ length: R }, () => rng.next()),
        cols: Array.from({ length: C }, () => rng.next()),
      };
    });
    const s = rng.next();
    const got = structuredThreshold(ms, s);
    const total = ms.reduce((a, m) => a + m.rows.length * m.cols.length, 0);
    const target = Math.floor(s * total);
    const removedAt = (tau: number) =>
      ms.reduce((a, m) => {
        const r = m.rows.filter((x) => x <= tau).length, c = m.cols.filter((x) => x <= tau).length;
        return a + r * m.cols.length + c * m.rows.length - r * c;
      }, 0);
    const sorted = ms.flatMap((m) => [...m.rows, ...m.cols]).sort((a, b) => a - b);
    // [ref]: last global index whose summed running-max count is ≤ target.
    let refTau = -Infinity;
    for (const v of sorted) if (removedAt(v) <= target) refTau = v;
    assert.equal(got.tau, refTau, `trial ${trial}`);
    assert.ok(removedAt(got.tau) <= target);
    const next = sorted.find((v) => v > got.tau);
    if (next !== undefined) {
      assert.ok(removedAt(next) > target, `trial ${trial}: next structure would fit`);
    }
    assert.equal(got.removed, got.tau === -Infinity ? 0 : removedAt(got.tau));
  }

  // Overlap: removing r rows and c columns of R×C zeroes exactly rC + cR − rc entries.
  const R = 4, C = 5;
  const w = Array.from({ length: R * C }, (_, i) => (Math.floor(i / C) + 1) * ((i % C) + 1));
  const { model, curv } = await magnitudeModel(w.map((x) => x * x / 2), R, C);
  // Norms: column 0 (5.48) < row 0 (7.42) < column 1 (10.95): target 9 fits column 0 + row 0.
  const rep = await pruneShot(model, curv, 0.45, { structure: "rowcol", obd: true });
  const st = await sparsityStats(model);
  const rr = R - st.perModule[0].rowsKept, cc = C - st.perModule[0].colsKept;
  assert.deepEqual([rr, cc], [1, 1]);
  assert.equal(Math.round(st.overall * R * C), rr * C + cc * R - rr * cc);
  assert.ok(st.overall <= 0.45 + 1e-12);
  assert.equal(rep.sparsity, st.overall);
  model.dispose();
});

Deno.test("R14: chunk sizes of the element update", () => {
  assert.deepEqual(chunkSizes([3, 4, 10, 1, 1], 5, false), [3, 4, 10, 2]);
  // Ours cuts the over-long row also when no row follows; zero-size chunks are dropped (Q15).
  assert.deepEqual(chunkSizes([3, 4, 10, 1, 1], 5, true), [3, 4, 5, 5, 2]);
  assert.deepEqual(chunkSizes([7, 2, 3], 5, false), [7, 5]);
  assert.deepEqual(chunkSizes([2, 2, 2, 1], -1, false), [2, 2, 2, 1]);
  assert.deepEqual(chunkSizes([2, 0, 2], 0, false), [4]);
});

Deno.test("parseStructures() accepts the reference's spellings and rejects the rest", () => {
  assert.equal(parseStructures(["row", "column"]), "rowcol");
  assert.equal(parseStructures(["column", "row"]), "rowcol");
  assert.equal(parseStructures(["row column"]), "rowcol");
  assert.equal(parseStructures(["element"]), "element");
  assert.deepEqual(parseStructures(["2:4"]), { n: 2, m: 4 });
  assert.deepEqual(parseStructures(["4:8"]), { n: 4, m: 8 });
  assert.throws(() => parseStructures(["row"]), /rows and columns are always pruned together/);
  assert.throws(() => parseStructures(["5:4"]), /N ≤ M/);
  assert.throws(() => parseStructures(["banana"]), /--structures/);
});
