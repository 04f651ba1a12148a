/** Calibration windows: CPython-identical starts, reproducible from the seed (ALGORITHM.md §10.1). */
import assert from "node:assert/strict";
import { calibrationWindows, sampleDocumentWindows, windowStarts } from "../eval/calibration.ts";
import type { TextSplit } from "../eval/datasets.ts";
import { CharTokenizer } from "./_eval_fakes.ts";

Deno.test("windowStarts() equals CPython random.seed(100); random.sample(range(N − T), n)", () => {
  // python3 -c "import random; random.seed(100); print(random.sample(range(286000-2048),128)[:6])"
  assert.deepEqual(windowStarts(286000, { nsamples: 128, seqlen: 2048, seed: 100 }).slice(0, 6), [
    76372,
    240925,
    238512,
    91618,
    206062,
    183362,
  ]);
});

Deno.test("calibrationWindows() is reproducible from the seed and cuts T tokens at each start", () => {
  const tok = new CharTokenizer();
  const rows = Array.from({ length: 300 }, (_, i) => `row ${i} says ${"xyz".repeat(i % 7)}`);
  const data: TextSplit = { dataset: "wikitext2", split: "validation", source: "mem", rows };
  const opts = { nsamples: 6, seqlen: 32, seed: 7 };
  const a = calibrationWindows(data, tok, opts);
  const b = calibrationWindows(data, tok, opts);
  assert.deepEqual(a, b);
  const stream = tok.encode(rows.join(" "));
  const starts = windowStarts(stream.length, opts);
  assert.equal(new Set(starts).size, 6, "distinct starts");
  a.forEach((w, k) => {
    assert.equal(w.length, 32);
    assert.deepEqual(w, stream.slice(starts[k], starts[k] + 32));
  });
  assert.notDeepEqual(calibrationWindows(data, tok, { ...opts, seed: 8 }), a);
  assert.throws(
    () => calibrationWindows(data, tok, { nsamples: 6, seqlen: stream.length - 3, seed: 1 }),
    /needs 6 distinct windows.*\(3 possible starts\)/,
  );
});

Deno.test("sampleDocumentWindows() follows SparseGPT's C4 sampling (retry short documents)", () => {
  const tok = new CharTokenizer();
  const docs = ["short", "a".repeat(40) + "b".repeat(40), "tiny", "c".repeat(12) + "d".repeat(30)];
  const w = sampleDocumentWindows(docs, tok, { nsamples: 5, seqlen: 20, seed: 3 });
  assert.equal(w.length, 5);
  for (const x of w) {
    assert.equal(x.length, 20);
    const text = tok.decode(x);
    assert.ok(docs.some((d) => d.includes(text)), `window "${text}" comes from one long document`);
  }
  assert.deepEqual(sampleDocumentWindows(docs, tok, { nsamples: 5, seqlen: 20, seed: 3 }), w);
  assert.throws(
    () => sampleDocumentWindows(["ab", "cd"], tok, { nsamples: 1, seqlen: 20, seed: 3 }),
    /no document/,
  );
});
