/**
 * Regression tests for llvmpipe's per-invocation loop limit: Mesa's software Vulkan adapter
 * silently ends every loop of an invocation once it has run 65,535 loop iterations in total
 * (docs/CONTRIBUTING.md, "Loop limit on llvmpipe"). Each test runs one kernel at a size where a
 * single invocation would have needed more than 65,535 iterations before its fix, and compares
 * with a float64 or exact reference.
 */
import assert from "node:assert/strict";
import { Tensor } from "../kernels/mod.ts";
import { map } from "../kernels/elementwise.ts";
import { matmul } from "../kernels/gemm.ts";
import { batchedSpdSolve } from "../kernels/linalg.ts";
import { reduce } from "../kernels/reduce.ts";
import {
  crossentropyForward,
  embeddingBackward,
  layernormParamBackward,
  sampleLabels,
} from "../kernels/nn.ts";
import { assertClose, matmulRef, relFrob, Rng } from "./_util.ts";

const up = (a: ArrayLike<number>, shape: number[]) => Tensor.from(Float32Array.from(a), shape);

Deno.test("looplimit: sampleLabels with 16 draws over a 65,536-word vocabulary", async () => {
  // Before: taken() looped over the chosen labels inside every column loop; lane 0 ran
  // ≈ 256·136 + 16·512 + 255·136 ≈ 78,000 iterations and stopped early.
  const [T, V, S] = [2, 65536, 16];
  const rng = new Rng(11);
  const z = new Float32Array(T * V).fill(-30);
  // 24 peaks per row near the ends of 256-column segments (the pick loop walks far).
  const peaks: number[][] = [];
  for (let t = 0; t < T; t++) {
    const cols = new Set<number>();
    while (cols.size < 24) cols.add(256 * (8 + rng.int(248)) + 240 + rng.int(16));
    peaks.push([...cols]);
    for (const c of cols) z[t * V + c] = Math.log(1 + rng.next());
  }
  // float64 inverse CDF without replacement over the peaks (the −30 floor weighs < 1e-8); the
  // uniforms are drawn away from the boundaries between labels.
  const u = new Array<number>(T * S);
  const expected: number[][] = [];
  for (let t = 0; t < T; t++) {
    const order = [...peaks[t]].sort((a, b) => a - b);
    const w = new Map(order.map((c) => [c, Math.exp(z[t * V + c])]));
    const taken: number[] = [];
    for (let j = 0; j < S; j++) {
      const left = order.filter((c) => !taken.includes(c));
      const total = left.reduce((a, c) => a + w.get(c)!, 0);
      const bounds: number[] = [];
      let acc = 0;
      for (const c of left) bounds.push(acc += w.get(c)! / total);
      let x = rng.next();
      while (bounds.some((b) => Math.abs(b - x) < 1e-3)) x = rng.next();
      u[t * S + j] = x;
      taken.push(left[bounds.findIndex((b) => b > x)]);
    }
    expected.push(taken);
  }
  const labels = await Tensor.from(new Int32Array(T * S));
  sampleLabels(labels, await up(z, [T, V]), await up(u, [T * S]), S, 0, T);
  const got = new Int32Array((await labels.read()).buffer);
  for (let t = 0; t < T; t++) {
    const taken = expected[t];
    assert.deepEqual([...got.slice(t * S, t * S + S)], taken, `row ${t}`);
  }
});

Deno.test("looplimit: sampleLabels fallback when the goal is never reached", async () => {
  // u = 1 makes the goal equal the total, which the running sum never exceeds: the kernel falls
  // back to the last eligible column. Before: it scanned all of V from the end (65,536 columns ×
  // the taken() loop); here the last 64,536 columns have zero probability (exp underflows).
  const [V, S] = [65536, 16];
  const z = new Float32Array(V).fill(-200);
  z.fill(0, 0, 1000);
  const labels = await Tensor.from(new Int32Array(S));
  sampleLabels(labels, await up(z, [1, V]), await up(new Array(S).fill(1), [S]), S, 0, 1);
  const got = new Int32Array((await labels.read()).buffer);
  assert.deepEqual([...got], Array.from({ length: S }, (_, j) => 999 - j));
});

Deno.test("looplimit: crossentropy gradient with 16 labels per row over 6000 columns", async () => {
  // Before: one lane per row on software adapters ran V·(3 + S) ≈ 114,000 iterations.
  const [T, V, S] = [3, 6000, 16];
  const rng = new Rng(5);
  const z = rng.normals(T * V, 1.5);
  const tg = Array.from({ length: T * S }, () => rng.int(V));
  const logits = await up(z, [T, V]);
  const losses = await Tensor.zeros([T]);
  const w = 0.5;
  crossentropyForward(
    logits,
    losses,
    await Tensor.from(Int32Array.from(tg), [T * S]),
    S,
    0,
    true,
    w,
  );
  const [gotL, gotG] = [await losses.read(), await logits.read()];
  const refL = new Float64Array(T), refG = new Float64Array(T * V);
  for (let t = 0; t < T; t++) {
    const row = z.subarray(t * V, (t + 1) * V);
    const m = Math.max(...row);
    const s = row.reduce((a, x) => a + Math.exp(x - m), 0);
    const lse = m + Math.log(s);
    for (let j = 0; j < S; j++) refL[t] += (lse - row[tg[t * S + j]]) / S;
    for (let c = 0; c < V; c++) refG[t * V + c] = w * Math.exp(row[c] - lse);
    for (let j = 0; j < S; j++) refG[t * V + tg[t * S + j]] -= w / S;
  }
  assertClose(gotL, refL, 1e-5, 1e-5, "losses");
  assertClose(gotG, refG, 1e-4, 1e-7, "dlogits");
});

Deno.test("looplimit: LayerNorm parameter gradients over 70,000 tokens", async () => {
  // Before: one lane per column walked all T = 70,000 rows.
  const [T, C] = [70000, 3];
  const rng = new Rng(9);
  const dout = rng.normals(T * C), inp = rng.normals(T * C);
  const mean = rng.normals(T, 0.1), rstd = Float64Array.from({ length: T }, () => 0.5 + rng.next());
  const dw = await Tensor.zeros([C]), db = await Tensor.zeros([C]);
  layernormParamBackward(
    dw,
    db,
    await up(dout, [T, C]),
    await up(inp, [T, C]),
    await up(mean, [T]),
    await up(rstd, [T]),
  );
  const f = (a: Float64Array) => Float64Array.from(a, Math.fround);
  const [d32, x32, m32, r32] = [f(dout), f(inp), f(mean), f(rstd)];
  const refW = new Float64Array(C), refB = new Float64Array(C);
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < C; c++) {
      refW[c] += d32[t * C + c] * (x32[t * C + c] - m32[t]) * r32[t];
      refB[c] += d32[t * C + c];
    }
  }
  // f32 sums of 70,000 terms of size ~1: absolute error ~1e-2 at most.
  assertClose(await dw.read(), refW, 1e-3, 5e-2, "dweight");
  assertClose(await db.read(), refB, 1e-3, 5e-2, "dbias");
  // The last rows must count: the sums over rows ≥ 65,535 alone are far larger than the tolerance.
  let tail = 0;
  for (let t = 65535; t < T; t++) tail += Math.abs(d32[t * C]);
  assert.ok(tail > 1000, `tail mass ${tail}`);
});

Deno.test("looplimit: embedding gradient over 70,000 tokens", async () => {
  const [T, Vp, C] = [70000, 3, 2];
  const rng = new Rng(3);
  const ids = Int32Array.from({ length: T }, () => 10 + rng.int(Vp + 1)); // id 13 is outside
  const dout = Float64Array.from({ length: T * C }, () => rng.int(5) - 2); // exact in f32
  const dtable = await Tensor.zeros([Vp, C]);
  embeddingBackward(dtable, await up(dout, [T, C]), await Tensor.from(ids, [T]), 10);
  const ref = new Float64Array(Vp * C);
  for (let t = 0; t < T; t++) {
    const v = ids[t] - 10;
    if (v < Vp) { for (let c = 0; c < C; c++) ref[v * C + c] += dout[t * C + c]; }
  }
  assert.deepEqual([...await dtable.read()], [...ref]);
});

Deno.test("looplimit: matmul with one K chunk of 300,000 (vec4) and 540,000 (tiled)", async () => {
  // Before: a configuration with a large kChunk walked all of K in one invocation
  // (K/4 = 75,000 vec4 steps; 67,500 tiles of 8).
  const rng = new Rng(2);
  const cases = [
    { M: 4, N: 8, K: 300000, config: { rows: 4, cols: 4, wgX: 8, wgY: 8, tileK: 0, vec: true } },
    { M: 5, N: 6, K: 540000, config: { rows: 4, cols: 4, wgX: 16, wgY: 16, tileK: 8, vec: false } },
  ];
  for (const { M, N, K, config } of cases) {
    // Uniform [0, 1) entries: every dropped K step would lower the sums visibly.
    const a = Float64Array.from({ length: M * K }, () => Math.fround(rng.next()));
    const b = Float64Array.from({ length: K * N }, () => Math.fround(rng.next()));
    const c = matmul(await up(a, [M, K]), await up(b, [K, N]), {
      config: { ...config, kChunk: 1 << 30 },
    });
    const err = relFrob(await c.read(), matmulRef(a, b, M, N, K));
    assert.ok(err < 1e-4, `K = ${K}, tileK ${config.tileK}: relative error ${err}`);
  }
});

Deno.test("looplimit: row reductions over rows of 4,500,000 elements", async () => {
  // Before: one workgroup of 64 lanes per row, each lane looping C/64 = 70,313 times.
  const [R, C] = [2, 4500000];
  const x = await Tensor.zeros([R, C]);
  map("f32(p.base + i)", [], [], { out: x }); // x[r, c] = r·C + c (rounded to f32)
  const mx = await reduce(x, "max", "rows").read();
  assert.deepEqual([...mx], [Math.fround(C - 1), Math.fround(2 * C - 1)]);
  map("1.0", [], [], { out: x });
  assert.deepEqual([...await reduce(x, "sum", "rows").read()], [C, C]);
  x.dispose();
});

/** A symmetric n×n matrix with eigenvalues κ^(i/(n−1)): diag(λ) under three Householder reflections. */
function conditioned(n: number, kappa: number, rng: Rng): Float32Array {
  const m = new Float64Array(n * n);
  for (let i = 0; i < n; i++) m[i * n + i] = kappa ** (i / (n - 1));
  for (let h = 0; h < 3; h++) {
    const v = rng.normals(n);
    const vv = v.reduce((a, x) => a + x * x, 0);
    // M ← H·M·H with H = I − 2vvᵀ/vᵀv, applied as rows then columns.
    for (const cols of [false, true]) {
      for (let a = 0; a < n; a++) {
        let d = 0;
        for (let b = 0; b < n; b++) d += v[b] * (cols ? m[a * n + b] : m[b * n + a]);
        const f = (2 * d) / vv;
        for (let b = 0; b < n; b++) {
          if (cols) m[a * n + b] -= f * v[b];
          else m[b * n + a] -= f * v[b];
        }
      }
    }
  }
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) m[j * n + i] = m[i * n + j];
  return Float32Array.from(m);
}

/** x = M⁻¹b in float64 by Cholesky. */
function solve64(m: ArrayLike<number>, n: number, b: ArrayLike<number>): Float64Array {
  const L = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    for (let i = j; i < n; i++) {
      let v = m[i * n + j];
      for (let q = 0; q < j; q++) v -= L[i * n + q] * L[j * n + q];
      L[i * n + j] = i === j ? Math.sqrt(v) : v / L[j * n + j];
    }
  }
  const y = Float64Array.from(b);
  for (let i = 0; i < n; i++) {
    for (let q = 0; q < i; q++) y[i] -= L[i * n + q] * y[q];
    y[i] /= L[i * n + i];
  }
  for (let i = n - 1; i >= 0; i--) {
    for (let q = i + 1; q < n; q++) y[i] -= L[q * n + i] * y[q];
    y[i] /= L[i * n + i];
  }
  return y;
}

Deno.test("looplimit: batchedSpdSolve of a 300×300 system that needs every refinement step", async () => {
  // Before: a 256-wide workgroup solved it in place; its first invocation needs ≈ 74,000 loop
  // iterations when all 10 refinement steps run (κ = 1e7 makes them run).
  const n = 300;
  const rng = new Rng(8);
  const m = conditioned(n, 1e7, rng);
  const b = rng.normals(n);
  const x = await batchedSpdSolve(await up(m, [1, n, n]), await up(b, [1, n, 1]));
  const err = relFrob(await x.read(), solve64(m, n, Float64Array.from(b, Math.fround)));
  // Fully refined: ~2e-8; the truncated solve of the old path: ~1e-3.
  assert.ok(err < 1e-5, `relative error ${err}`);
});
