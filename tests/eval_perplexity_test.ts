/** Perplexity per the SparseGPT protocol (ALGORITHM.md §10.2, recipe R10). */
import assert from "node:assert/strict";
import { perplexity, PerplexityError } from "../eval/perplexity.ts";
import { CpuBigramModel } from "./_eval_fakes.ts";

const ramp = (n: number) => Int32Array.from({ length: n }, (_, i) => (i * 7) % 50);

Deno.test("perplexity() of uniform logits equals the vocabulary size", async () => {
  for (const vocab of [50, 50272]) {
    const m = new CpuBigramModel(vocab, () => new Float64Array(vocab).fill(0.25));
    const r = await perplexity(m, ramp(3 * 16 + 5), { seqlen: 16 });
    assert.ok(Math.abs(r.ppl - vocab) <= 1e-9 * vocab, `ppl ${r.ppl} vs ${vocab}`);
    assert.equal(r.windows, 3);
  }
});

Deno.test("perplexity() is exp of the mean of per-window mean NLLs, windows = ⌊N/T⌋, tail dropped", async () => {
  const V = 50;
  const m = new CpuBigramModel(
    V,
    (tok) => Float64Array.from({ length: V }, (_, j) => Math.sin(tok * 3 + j)),
  );
  const T = 8;
  const ids = ramp(2 * T + 5);
  const r = await perplexity(m, ids, { seqlen: T });
  assert.equal(r.totalWindows, 2);
  assert.equal(r.windows, 2);
  // independent float64: per window mean NLL over its T−1 predictions
  const windowNll = (w: Int32Array) => {
    let s = 0;
    for (let t = 0; t < T - 1; t++) {
      const z = Array.from({ length: V }, (_, j) => Math.sin(w[t] * 3 + j));
      s += Math.log(z.reduce((a, v) => a + Math.exp(v), 0)) - z[w[t + 1]];
    }
    return s / (T - 1);
  };
  const u1 = windowNll(ids.slice(0, T)), u2 = windowNll(ids.slice(T, 2 * T));
  assert.ok(Math.abs(r.ppl - Math.exp((u1 + u2) / 2)) < 1e-9 * r.ppl);
  // a model that puts (almost) all mass on the true next token gives 1
  const sure = new CpuBigramModel(V, (tok) => {
    const z = new Float64Array(V).fill(-1000);
    z[(tok + 7) % 50] = 0;
    return z;
  });
  assert.equal((await perplexity(sure, ids, { seqlen: T })).ppl, 1);
});

Deno.test("perplexity() honours maxWindows and defaults T to maxSeqLen", async () => {
  const m = new CpuBigramModel(
    50,
    (tok) => Float64Array.from({ length: 50 }, (_, j) => (tok + j) % 3),
  );
  const full = await perplexity(m, ramp(16 * 5), {});
  assert.equal(full.seqlen, 16);
  assert.equal(full.windows, 5);
  m.calls = 0;
  const first2 = await perplexity(m, ramp(16 * 5), { maxWindows: 2 });
  assert.equal(m.calls, 2);
  assert.deepEqual(first2.nlls, full.nlls.slice(0, 2));
});

Deno.test("perplexity() refuses NaN windows and streams shorter than one window", async () => {
  const nan = { maxSeqLen: 4, nll: () => Promise.resolve(NaN) };
  await assert.rejects(() => perplexity(nan, ramp(9), { label: "wikitext2" }), (e: Error) => {
    assert.ok(e instanceof PerplexityError);
    assert.match(e.message, /wikitext2: window 0/);
    return true;
  });
  await assert.rejects(() => perplexity(nan, ramp(3)), /fewer than one window of 4/);
});
