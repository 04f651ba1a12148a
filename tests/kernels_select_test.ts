import assert from "node:assert/strict";
import { kthSmallest, kthSmallestOf, sortWithIndices } from "../kernels/select.ts";
import { gpu } from "../kernels/device.ts";
import { Tensor } from "../kernels/tensor.ts";
import { Rng } from "./_util.ts";

Deno.test("kthSmallest() returns the exact order statistic with ties, signs and zeros", async () => {
  const rng = new Rng(31);
  const n = 100_003;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x[i] = i % 11 === 0 ? 0 : Math.fround(rng.normal() * 10 ** rng.int(6) * (i % 3 ? 1 : -1));
  }
  x.fill(3.25, 500, 900); // a block of ties
  const X = await Tensor.from(x);
  const sorted = Float64Array.from(x).sort();
  for (const k of [0, 1, 17, 50_000, 77_777, n - 2, n - 1]) {
    assert.equal(await kthSmallest(X, k), sorted[k], `k = ${k}`);
  }
  await assert.rejects(() => kthSmallest(X, n), /outside \[0, 100003\)/);
  X.dispose();
});

Deno.test("kthSmallestOf() selects across several tensors, one larger than a binding", async () => {
  const rt = await gpu();
  const big = Math.ceil(rt.maxBinding / 4) + 40;
  const a = new Float32Array(big);
  for (let i = 0; i < big; i++) a[i] = (i * 7919) % 1_000_003; // integers < 2^24, exact in f32
  const b = Float32Array.from([-5, 2.5, 1e9, -1e-3]);
  const A = await Tensor.from(a), B = await Tensor.from(b);
  // Reference without sorting 33M numbers: the union's sorted order is b's two negatives, then
  // a's integers by counts with 2.5 placed after the 2s, then 1e9.
  const counts = new Uint32Array(1_000_003);
  for (let i = 0; i < big; i++) counts[a[i]]++;
  const kthRef = (k: number) => {
    if (k < 2) return [-5, Math.fround(-1e-3)][k];
    let kk = k - 2;
    for (let v = 0; v < counts.length; v++) {
      if (v === 3) {
        if (kk === 0) return 2.5;
        kk--;
      }
      if (kk < counts[v]) return v;
      kk -= counts[v];
    }
    return 1e9;
  };
  const third = 2 + counts[0] + counts[1] + counts[2]; // the position of 2.5
  for (const k of [1, third, 12_345_678, big + 3]) {
    const got = await kthSmallestOf([A, B], k);
    const want = kthRef(k);
    assert.equal(got, want, `k = ${k}`);
  }
  A.dispose();
  B.dispose();
});

Deno.test("sortWithIndices() sorts stably and returns the permutation", async () => {
  const rng = new Rng(32);
  for (const n of [1, 3, 17, 1000, 4099]) {
    const x = Float32Array.from(
      { length: n },
      () => Math.fround(rng.int(50) - 25 + (rng.next() < 0.3 ? 0.5 : 0)),
    );
    if (n > 3) x[2] = -Infinity;
    const { values, indices } = sortWithIndices(await Tensor.from(x));
    const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => x[i] - x[j] || i - j);
    assert.deepEqual([...await indices.readU32()], order, `order n = ${n}`);
    assert.deepEqual([...await values.read()], order.map((i) => x[i]), `values n = ${n}`);
  }
  const empty = sortWithIndices(await Tensor.from(new Float32Array(0)));
  assert.equal(empty.values.size, 0);
});
