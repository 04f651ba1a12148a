import assert from "node:assert/strict";
import { type GemmConfig, matmul } from "../kernels/gemm.ts";
import { gpu } from "../kernels/device.ts";
import { halfBits, halfValues, Tensor } from "../kernels/tensor.ts";
import { assertClose, matmulRef, Rng } from "./_util.ts";

/** float64 α·op(A)·op(B) + β·C0 + bias over a batch, for row-major arrays. */
function gemmRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  c0: ArrayLike<number> | null,
  bias: ArrayLike<number> | null,
  dims: { M: number; N: number; K: number; batch: number; bShared: boolean; aShared?: boolean },
  o: { ta: boolean; tb: boolean; alpha: number; beta: number },
): Float64Array {
  const { M, N, K, batch } = dims;
  const out = new Float64Array(batch * M * N);
  for (let z = 0; z < batch; z++) {
    const az = dims.aShared ? 0 : z * M * K, bz = dims.bShared ? 0 : z * K * N;
    const p = matmulRef(
      Array.from({ length: M * K }, (_, i) => a[az + i]),
      Array.from({ length: K * N }, (_, i) => b[bz + i]),
      M,
      N,
      K,
      o.ta,
      o.tb,
    );
    for (let i = 0; i < M * N; i++) {
      let v = o.alpha * p[i];
      if (c0) v += o.beta * c0[z * M * N + i];
      if (bias) v += bias[i % N];
      out[z * M * N + i] = v;
    }
  }
  return out;
}

async function check(
  rng: Rng,
  M: number,
  N: number,
  K: number,
  o: {
    ta?: boolean;
    tb?: boolean;
    alpha?: number;
    beta?: number;
    bias?: boolean;
    batch?: number;
    bShared?: boolean;
    aShared?: boolean;
    config?: Partial<GemmConfig>;
    /** Store A and/or B as f16 (the reference multiplies the same rounded values in float64). */
    halfA?: boolean;
    halfB?: boolean;
  } = {},
) {
  const {
    ta = false,
    tb = false,
    alpha = 1,
    beta = 0,
    batch = 1,
    bShared = false,
    aShared = false,
  } = o;
  const rounded = (x: Float64Array, half?: boolean) =>
    half ? Float64Array.from(halfValues(halfBits(x))) : x;
  const a = rounded(rng.normals((aShared ? 1 : batch) * M * K), o.halfA);
  const b = rounded(rng.normals((bShared ? 1 : batch) * K * N), o.halfB);
  const c0 = beta !== 0 ? rng.normals(batch * M * N) : null;
  const bias = o.bias ? rng.normals(N) : null;
  const lead = (shared: boolean) => (batch > 1 && !shared ? [batch] : []);
  const dt = (half?: boolean) => (half ? "f16" : "f32");
  const A = await Tensor.from(
    Float32Array.from(a),
    [...lead(aShared), ...(ta ? [K, M] : [M, K])],
    dt(o.halfA),
  );
  const B = await Tensor.from(
    Float32Array.from(b),
    [...lead(bShared), ...(tb ? [N, K] : [K, N])],
    dt(o.halfB),
  );
  const out = c0
    ? await Tensor.from(Float32Array.from(c0), batch > 1 ? [batch, M, N] : [M, N])
    : undefined;
  const bt = bias ? await Tensor.from(Float32Array.from(bias)) : undefined;
  const C = matmul(A, B, { transA: ta, transB: tb, alpha, beta, out, bias: bt, config: o.config });
  assert.deepEqual(C.shape, batch > 1 ? [batch, M, N] : [M, N]);
  const want = gemmRef(a, b, c0, bias, { M, N, K, batch, bShared, aShared }, {
    ta,
    tb,
    alpha,
    beta,
  });
  const tol = 2e-5 * Math.sqrt(K + 1) + 1e-5;
  assertClose(
    await C.read(),
    want,
    tol,
    tol,
    `C ${batch}×${M}×${N}×${K} ${ta ? "T" : "N"}${tb ? "T" : "N"}${o.halfA ? " A16" : ""}${
      o.halfB ? " B16" : ""
    }`,
  );
  for (const t of [A, B, C, bt]) t?.dispose();
}

/** The software adapter's large-product kernel, forced onto small shapes. */
const BIG: Partial<GemmConfig> = {
  rows: 16,
  cols: 16,
  wgX: 8,
  wgY: 8,
  vec: true,
  tileK: 0,
  kChunk: 256,
};

Deno.test("matmul() matches a float64 reference for every transpose on odd shapes", async () => {
  const rng = new Rng(7);
  for (const [M, N, K] of [[1, 1, 1], [3, 17, 5], [17, 3, 100], [100, 257, 33], [130, 129, 260]]) {
    for (const ta of [false, true]) {
      for (const tb of [false, true]) await check(rng, M, N, K, { ta, tb });
    }
  }
  await check(rng, 3, 300, 300, { bias: true }); // few rows: 4×16 blocks
});

Deno.test("matmul() applies alpha, beta and bias, including vec4-aligned shapes", async () => {
  const rng = new Rng(8);
  await check(rng, 64, 48, 36, { alpha: -0.5, beta: 2, bias: true });
  await check(rng, 7, 12, 8, { alpha: 1.5, beta: 1, bias: true, tb: true });
  await check(rng, 33, 20, 300, { beta: 1, bias: true, ta: true });
});

Deno.test("matmul() handles empty and degenerate shapes", async () => {
  const rng = new Rng(9);
  // K = 0: C = β·C + bias.
  await check(rng, 5, 6, 0, { beta: 0.5, bias: true });
  await check(rng, 4, 4, 0);
  // M = 0 or N = 0: empty output, nothing dispatched.
  const A = await Tensor.from(new Float32Array(0), [0, 3]);
  const B = await Tensor.from(new Float32Array(6), [3, 2]);
  const C = matmul(A, B);
  assert.deepEqual(C.shape, [0, 2]);
  assert.equal((await C.read()).length, 0);
  // Identity: I·X = X exactly.
  const n = 19, x = rng.normals(n * 7);
  const I = await Tensor.from(
    Float32Array.from({ length: n * n }, (_, i) => (i % (n + 1) === 0 ? 1 : 0)),
    [n, n],
  );
  const X = await Tensor.from(Float32Array.from(x), [n, 7]);
  assert.deepEqual(await matmul(I, X).read(), Float32Array.from(x));
  for (const t of [A, B, C, I, X]) t.dispose();
});

Deno.test("matmul() batches 3-D operands and shares a 2-D B", async () => {
  const rng = new Rng(10);
  await check(rng, 5, 9, 6, { batch: 3 });
  await check(rng, 5, 9, 6, { batch: 2, ta: true, tb: true, beta: 1 });
  await check(rng, 17, 8, 12, { batch: 4, bShared: true, bias: true });
  await check(rng, 17, 8, 12, { batch: 3, bShared: true, ta: true });
  await check(rng, 6, 10, 7, { batch: 3, aShared: true });
});

/**
 * Small tiles (8×8 outputs per workgroup) for the symmetric kernel, so that a few dozen rows give
 * odd and even numbers of tile rows (the kernel folds its rows: 0, T−1, 1, T−2, …).
 */
const SMALL_SYM: Partial<GemmConfig> = { rows: 4, cols: 4, wgX: 2, wgY: 2, vec: true, tileK: 0 };

Deno.test("matmul() accumulates XᵀX and XXᵀ symmetrically into a non-symmetric C", async () => {
  const rng = new Rng(11);
  const cases = [
    [100, 37, BIG],
    [50, 68, {}],
    [9, 133, BIG],
    [20, 37, SMALL_SYM], // 5 tile rows
    [33, 64, SMALL_SYM], // 8
    [7, 100, SMALL_SYM], // 13
  ] as const;
  for (const [T, Cn, config] of cases) {
    for (const ta of [true, false]) {
      const x = rng.normals(T * Cn);
      const X = await Tensor.from(Float32Array.from(x), [T, Cn]);
      const n = ta ? Cn : T;
      const c0 = rng.normals(n * n); // deliberately not symmetric
      const acc = await Tensor.from(Float32Array.from(c0), [n, n]);
      matmul(X, X, {
        transA: ta,
        transB: !ta,
        beta: 1,
        alpha: 0.25,
        out: acc,
        config,
      });
      const p = matmulRef(x, x, n, n, ta ? T : Cn, ta, !ta);
      const want = p.map((v, i) => 0.25 * v + c0[i]);
      assertClose(await acc.read(), want, 1e-4, 1e-4, `acc ${T}×${Cn} ${ta ? "XᵀX" : "XXᵀ"}`);
      X.dispose();
      acc.dispose();
    }
  }
});

Deno.test("matmul() gives the same result with every kernel configuration", async () => {
  const rng = new Rng(12);
  const configs: Partial<GemmConfig>[] = [
    { kChunk: 8 }, // K split into accumulated chunks
    BIG, // padded vec4 path on unaligned operands
    { rows: 1, cols: 4, wgX: 8, wgY: 8 },
    { rows: 4, cols: 4, wgX: 16, wgY: 16, tileK: 8 }, // workgroup-memory family (real GPUs)
    { rows: 2, cols: 4, wgX: 8, wgY: 4, tileK: 4, kChunk: 12 },
  ];
  for (const config of configs) {
    await check(rng, 37, 29, 45, { config, beta: 1, bias: true });
    await check(rng, 12, 20, 16, { config, ta: true, tb: true, batch: 2 });
    await check(rng, 9, 10, 7, { config, ta: true, batch: 2, beta: 1 }); // unaligned N, batched
  }
});

Deno.test("matmul() reports mismatched shapes with both shapes in the message", async () => {
  const A = await Tensor.zeros([3, 4], "lhs"), B = await Tensor.zeros([5, 6], "rhs");
  assert.throws(
    () => matmul(A, B),
    /matmul\(lhs, rhs\): inner dimensions differ.*\[3,4\].*\[5,6\]/,
  );
  assert.throws(() => matmul(A, B, { transB: true, beta: 1 }), /needs an output tensor|inner/);
  A.dispose();
  B.dispose();
});

Deno.test("matmul() splits operands and outputs larger than one storage binding", async () => {
  const rt = await gpu();
  const rng = new Rng(13);
  // B stored [N, K] just above the binding limit (33,554,440 floats), as the LM head uses an
  // embedding; C = A·Bᵀ is also over the limit and gets split by rows.
  const K = 8, N = Math.ceil((rt.maxBinding / 4 + 8) / K) + 1, M = 9;
  const bData = new Float32Array(N * K);
  for (let i = 0; i < bData.length; i++) bData[i] = ((i * 2654435761) % 1000) / 500 - 1;
  const aData = Float32Array.from(rng.normals(M * K));
  const A = await Tensor.from(aData, [M, K]);
  const B = await Tensor.from(bData, [N, K], "f32", "embedding");
  assert.ok(B.size * 4 > rt.maxBinding);
  const C = matmul(A, B, { transB: true, name: "logits" });
  assert.ok(C.size * 4 > rt.maxBinding);
  for (const m of [0, 4, M - 1]) {
    for (const n0 of [0, 4_000_001, N - 5]) {
      const got = await C.readRange(m * N + n0, 5);
      const want = Array.from({ length: 5 }, (_, j) => {
        let s = 0;
        for (let k = 0; k < K; k++) s += aData[m * K + k] * bData[(n0 + j) * K + k];
        return s;
      });
      assertClose(got, want, 1e-5, 1e-5, `logits[${m}, ${n0}..]`);
    }
  }
  C.dispose();
  // The same big matrix as a non-transposed A (split by rows).
  const W = await Tensor.from(Float32Array.from(rng.normals(K * 3)), [K, 3]);
  const w = await W.read();
  const Y = matmul(B, W);
  for (const r of [0, 3_000_000, N - 1]) {
    const got = await Y.readRange(r * 3, 3);
    const want = [0, 1, 2].map((j) => {
      let s = 0;
      for (let k = 0; k < K; k++) s += bData[r * K + k] * w[k * 3 + j];
      return s;
    });
    assertClose(got, want, 1e-5, 1e-5, `Y[${r}]`);
  }
  for (const t of [A, B, W, Y]) t.dispose();
});

Deno.test("matmul() reads f16 operands and accumulates in f32, in every kernel family", async () => {
  const rng = new Rng(14);
  const halves = [{ halfA: true }, { halfB: true }, { halfA: true, halfB: true }];
  const configs: Partial<GemmConfig>[] = [
    {}, // the adapter's choice (small scalar kernel here for the small shapes)
    BIG, // software vec4 family: halves loaded four at a time; unaligned rows padded
    { rows: 8, cols: 8, wgX: 8, wgY: 8, vec: true, tileK: 0, kChunk: 1 << 30 }, // real GPUs
    { rows: 4, cols: 4, wgX: 16, wgY: 16, tileK: 8 }, // workgroup-memory tiles
    { kChunk: 8 }, // K split into accumulated chunks
  ];
  for (const config of configs) {
    for (const h of halves) {
      for (const [ta, tb] of [[false, true], [true, false], [false, false], [true, true]]) {
        await check(rng, 13, 21, 37, { ...h, config, ta, tb, bias: true }); // odd: K tail
      }
      await check(rng, 20, 36, 44, { ...h, config, tb: true, beta: 1, alpha: 0.5 }); // aligned
      await check(rng, 9, 10, 7, { ...h, config, batch: 3, ta: true, beta: -1 });
      await check(rng, 6, 12, 16, { ...h, config, batch: 2, bShared: true, tb: true });
    }
  }
  // Large enough for the adapter's vec4 kernel: a linear layer with f16 weights (B with transB).
  await check(rng, 64, 96, 80, { halfB: true, tb: true, bias: true });
  await check(rng, 64, 96, 80, { halfA: true, halfB: true, ta: true });
});

Deno.test("matmul() with an f16 operand: Xᵀ·X of an f16 X, and f16 bias refused", async () => {
  const rng = new Rng(15);
  const T = 40, Cn = 36;
  const x = halfValues(halfBits(rng.normals(T * Cn)));
  const X = await Tensor.from(x, [T, Cn], "f16", "x16");
  const acc = matmul(X, X, { transA: true, config: BIG });
  assertClose(await acc.read(), matmulRef(x, x, Cn, Cn, T, true, false), 1e-4, 1e-4, "XᵀX f16");
  const bias = await Tensor.from(new Uint16Array(Cn), [Cn], "f16", "b16");
  assert.throws(() => matmul(X, X, { transA: true, bias }), /bias .*b16.* must be f32/);
  const ids = await Tensor.from(new Uint32Array(T * Cn), [T, Cn], "u32", "ids");
  assert.throws(() => matmul(ids, X, { transA: true }), /expects f32 or f16 operands.*u32/);
  for (const t of [X, acc, bias, ids]) t.dispose();
});

Deno.test("matmul() splits an f16 operand larger than one storage binding", async () => {
  const rt = await gpu();
  const rng = new Rng(16);
  // An f16 embedding [N, K] just over one binding (twice the elements an f32 binding holds),
  // used as the LM head (B with transB) and as a row-split A.
  const K = 8, N = Math.ceil((rt.maxBinding / 2 + 8) / K) + 1, M = 3;
  const table = halfBits(rng.normals(997));
  const bits = new Uint16Array(N * K);
  for (let i = 0; i < bits.length; i++) bits[i] = table[(i * 7919) % 997];
  const E = await Tensor.from(bits, [N, K], "f16", "embedding");
  assert.ok(E.byteSize > rt.maxBinding);
  const e = (i: number) => halfValues(Uint16Array.of(bits[i]))[0];
  const aData = Float32Array.from(rng.normals(M * K));
  const A = await Tensor.from(aData, [M, K]);
  const C = matmul(A, E, { transB: true, name: "logits" });
  for (const m of [0, M - 1]) {
    for (const n0 of [0, 4_194_301, N - 5]) {
      const want = Array.from({ length: 5 }, (_, j) => {
        let s = 0;
        for (let k = 0; k < K; k++) s += aData[m * K + k] * e((n0 + j) * K + k);
        return s;
      });
      assertClose(await C.readRange(m * N + n0, 5), want, 1e-5, 1e-5, `logits[${m}, ${n0}..]`);
    }
  }
  C.dispose();
  const W = await Tensor.from(Float32Array.from(rng.normals(K * 3)), [K, 3]);
  const w = await W.read();
  const Y = matmul(E, W);
  for (const r of [0, 4_194_303, N - 1]) {
    const want = [0, 1, 2].map((j) => {
      let s = 0;
      for (let k = 0; k < K; k++) s += e(r * K + k) * w[k * 3 + j];
      return s;
    });
    assertClose(await Y.readRange(r * 3, 3), want, 1e-5, 1e-5, `Y[${r}]`);
  }
  for (const t of [A, E, W, Y]) t.dispose();
});

Deno.test("matmul() splits N and M over dispatches of at most 65,535 workgroups", async () => {
  const rng = new Rng(17);
  // Tiny tiles (4 columns, 1 row per workgroup): N = 270,001 needs more than 65,535 workgroups
  // along N, and the transposed product along M, as an LM head over a large vocabulary does on
  // GPU tiles.
  const config = { rows: 1, cols: 4, wgX: 1, wgY: 1, vec: false, tileK: 0 };
  const K = 3, N = 270_001;
  const a = rng.normals(2 * K), b = rng.normals(N * K);
  const A = await Tensor.from(Float32Array.from(a), [2, K]);
  const B = await Tensor.from(Float32Array.from(b), [N, K]);
  const want = matmulRef(a, b, 2, N, K, false, true);
  assertClose(await matmul(A, B, { transB: true, config }).read(), want, 1e-5, 1e-5, "A·Bᵀ");
  const wantT = matmulRef(b, a, N, 2, K, false, true);
  assertClose(await matmul(B, A, { transB: true, config }).read(), wantT, 1e-5, 1e-5, "B·Aᵀ");
  A.dispose();
  B.dispose();
});

/**
 * Band hints: op(A) is zero outside its band (built so), C starts as a sentinel; every element
 * inside the output band must match the float64 product (those outside are unspecified). Returns
 * how many elements outside kept the sentinel.
 */
async function checkBand(
  rng: Rng,
  M: number,
  N: number,
  K: number,
  o: {
    ta?: boolean;
    tb?: boolean;
    batch?: number;
    out?: [number, number];
    a?: [number, number];
    config?: Partial<GemmConfig>;
  },
): Promise<number> {
  const { ta = false, tb = false, batch = 1 } = o;
  const a = new Float64Array(batch * M * K);
  for (let z = 0; z < batch; z++) {
    for (let i = 0; i < M; i++) {
      for (let k = 0; k < K; k++) {
        const inBand = !o.a || (k - i >= o.a[0] && k - i <= o.a[1]);
        const v = inBand ? rng.normal() : 0;
        a[z * M * K + (ta ? k * M + i : i * K + k)] = Math.fround(v);
      }
    }
  }
  const b = Float64Array.from(rng.normals(batch * K * N), Math.fround);
  const A = await Tensor.from(
    Float32Array.from(a),
    batch > 1 ? [batch, ta ? K : M, ta ? M : K] : [ta ? K : M, ta ? M : K],
  );
  const B = await Tensor.from(
    Float32Array.from(b),
    batch > 1 ? [batch, tb ? N : K, tb ? K : N] : [tb ? N : K, tb ? K : N],
  );
  const SENTINEL = 12345;
  const C = await Tensor.from(
    new Float32Array(batch * M * N).fill(SENTINEL),
    batch > 1 ? [batch, M, N] : [M, N],
  );
  matmul(A, B, { transA: ta, transB: tb, out: C, band: { out: o.out, a: o.a }, config: o.config });
  const want = gemmRef(a, b, null, null, { M, N, K, batch, bShared: false }, {
    ta,
    tb,
    alpha: 1,
    beta: 0,
  });
  const got = await C.read();
  let skipped = 0;
  for (let z = 0; z < batch; z++) {
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        const idx = z * M * N + i * N + j;
        const needed = !o.out || (j - i >= o.out[0] && j - i <= o.out[1]);
        if (!needed) {
          if (got[idx] === SENTINEL) skipped++;
          continue;
        }
        const tol = 1e-4 * (1 + Math.abs(want[idx])) * Math.sqrt(K + 1);
        assert.ok(
          Math.abs(got[idx] - want[idx]) <= tol,
          `${M}×${N}×${K} ${JSON.stringify(o)}: C[${z}, ${i}, ${j}] = ${got[idx]}, want ${
            want[idx]
          }`,
        );
      }
    }
  }
  for (const t of [A, B, C]) t.dispose();
  return skipped;
}

Deno.test("matmul() band hints: skipped blocks outside the output band, K loops over A's band", async () => {
  const rng = new Rng(31);
  const OPEN = 1 << 30;
  // The last config is the workgroup-memory family, which ignores the hints.
  const TILED: Partial<GemmConfig> = { rows: 4, cols: 4, wgX: 8, wgY: 8, tileK: 4, vec: false };
  for (const config of [{}, BIG, SMALL_SYM, { ...BIG, kChunk: 16 }, TILED]) {
    // causal scores q·kᵀ, with a query offset and a sliding window
    await checkBand(rng, 37, 41, 9, { tb: true, batch: 2, out: [-OPEN, 4], config });
    await checkBand(rng, 50, 50, 13, { tb: true, out: [-6, 0], config });
    // probabilities · v (A lower-banded), and the backward's transposed products
    await checkBand(rng, 45, 10, 45, { batch: 3, a: [-OPEN, 0], config });
    await checkBand(rng, 45, 12, 47, { a: [-8, 2], config });
    await checkBand(rng, 44, 16, 44, { ta: true, batch: 2, a: [0, OPEN], config });
    await checkBand(rng, 33, 7, 30, { ta: true, tb: true, a: [-3, 5], config });
    // both hints, and bands that miss whole rows
    await checkBand(rng, 40, 40, 40, { a: [-OPEN, 0], out: [-OPEN, 0], config });
    await checkBand(rng, 20, 9, 11, { a: [15, OPEN], out: [30, OPEN], config });
  }
  // With 8×8 blocks per workgroup a 64×64 causal product must leave upper blocks untouched.
  const skipped = await checkBand(rng, 64, 64, 8, { tb: true, out: [-OPEN, 0], config: SMALL_SYM });
  assert.ok(skipped >= 28 * 16, `only ${skipped} elements above the diagonal were skipped`);
  // Operands over one binding: the product runs per batch element and per (M, N, K) window, and
  // each window's band is placed by its offsets in the whole product.
  const rt = await gpu();
  const restore = rt.limitBinding(4096); // 1,024 floats: every operand below is split
  try {
    await checkBand(rng, 70, 66, 60, { tb: true, batch: 2, out: [-OPEN, 3], config: BIG });
    await checkBand(rng, 70, 20, 70, { batch: 2, a: [-9, 0], config: BIG });
    await checkBand(rng, 64, 24, 64, { ta: true, a: [0, OPEN], config: SMALL_SYM });
  } finally {
    restore();
  }
  const X = await Tensor.from(new Float32Array(4), [2, 2]);
  assert.throws(
    () => matmul(X, X, { band: { out: [1, 0] } }),
    /matmul.*band\.out \[1, 0\] must be integers with lo ≤ hi/,
  );
  // also where the kernel would ignore the hints
  assert.throws(
    () => matmul(X, X, { band: { a: [0, 0.5] }, config: TILED }),
    /band\.a \[0, 0\.5\] must be integers/,
  );
  X.dispose();
});
