import assert from "node:assert/strict";
import { Tensor } from "../kernels/mod.ts";
import {
  appendOnes,
  attentionBackward,
  attentionForward,
  copyColumns,
  crossentropyForward,
  embeddingBackward,
  embeddingForward,
  geluBackward,
  geluForward,
  layernormBackward,
  layernormForward,
  layernormParamBackward,
  linearBackward,
  linearForward,
  nnTuning,
  reluBackward,
  reluForward,
  rmsnormBackward,
  rmsnormForward,
  rmsnormParamBackward,
  ropeBackward,
  ropeForward,
  ropeInvFreq,
  ropeTables,
  sampleLabels,
  sanitizeGrad,
  softmaxBackward,
  softmaxForward,
  swigluBackward,
  swigluForward,
} from "../kernels/nn.ts";
import { attentionGradRef, attentionRef } from "./_reference_nets.ts";
import { assertClose, matmulRef, Rng } from "./_util.ts";

const f32 = (a: ArrayLike<number>) => Float32Array.from(a);
const up = (a: ArrayLike<number>, shape: number[]) => Tensor.from(f32(a), shape);

/** Central-difference gradient of `Σ w ⊙ f(x)` with respect to x (float64). */
function fdGrad(
  f: (x: Float64Array) => ArrayLike<number>,
  x: Float64Array,
  w: ArrayLike<number>,
  h = 1e-5,
) {
  const g = new Float64Array(x.length);
  const dot = (y: ArrayLike<number>) => {
    let s = 0;
    for (let i = 0; i < y.length; i++) s += y[i] * w[i];
    return s;
  };
  for (let i = 0; i < x.length; i++) {
    const xi = x[i];
    x[i] = xi + h;
    const a = dot(f(x));
    x[i] = xi - h;
    const b = dot(f(x));
    x[i] = xi;
    g[i] = (a - b) / (2 * h);
  }
  return g;
}

function layernormRef(
  x: ArrayLike<number>,
  w: ArrayLike<number> | null,
  b: ArrayLike<number> | null,
  T: number,
  C: number,
) {
  const out = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    let m = 0, v = 0;
    for (let c = 0; c < C; c++) m += x[t * C + c] / C;
    for (let c = 0; c < C; c++) v += (x[t * C + c] - m) ** 2 / C;
    const r = 1 / Math.sqrt(v + 1e-5);
    for (let c = 0; c < C; c++) {
      out[t * C + c] = (x[t * C + c] - m) * r * (w ? w[c] : 1) + (b ? b[c] : 0);
    }
  }
  return out;
}

function rmsnormRef(x: ArrayLike<number>, w: ArrayLike<number>, T: number, C: number) {
  const out = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += x[t * C + c] ** 2 / C;
    const r = 1 / Math.sqrt(s + 1e-5);
    for (let c = 0; c < C; c++) out[t * C + c] = w[c] * x[t * C + c] * r;
  }
  return out;
}

Deno.test("embeddingForward/Backward gather rows across table pieces and scatter gradients", async () => {
  const rng = new Rng(1);
  const [V, C, T] = [11, 5, 7];
  const table = rng.normals(V * C);
  const ids = Int32Array.from([3, 0, 10, 3, 7, 6, 9]);
  const idsT = await Tensor.from(ids);
  const out = await Tensor.zeros([T, C]);
  // two pieces: rows 0..5 and 6..10
  const p0 = await up(table.slice(0, 6 * C), [6, C]);
  const p1 = await up(table.slice(6 * C), [5, C]);
  embeddingForward(out, idsT, p0, 0);
  embeddingForward(out, idsT, p1, 6);
  const pos = rng.normals(T * C);
  const posT = await up(pos, [T, C]);
  const posIds = await Tensor.from(Int32Array.from([0, 1, 2, 3, 4, 5, 6]));
  embeddingForward(out, posIds, posT, 0, true);
  const ref = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < C; c++) ref[t * C + c] = table[ids[t] * C + c] + pos[t * C + c];
  }
  assertClose(await out.read(), ref, 1e-6, 1e-6, "embedding");
  const dout = rng.normals(T * C);
  const dp1 = await Tensor.zeros([5, C]);
  embeddingBackward(dp1, await up(dout, [T, C]), idsT, 6);
  const dref = new Float64Array(5 * C);
  for (let t = 0; t < T; t++) {
    if (ids[t] >= 6) { for (let c = 0; c < C; c++) dref[(ids[t] - 6) * C + c] += dout[t * C + c]; }
  }
  assertClose(await dp1.read(), dref, 1e-6, 1e-6, "dtable");
});

Deno.test("layernormForward/Backward match float64 and finite differences (odd C > 256)", async () => {
  const rng = new Rng(2);
  for (const [T, C, affine] of [[3, 7, true], [2, 300, true], [2, 9, false]] as const) {
    const x = rng.normals(T * C, 2).map((v) => v + 0.5);
    const w = affine ? rng.normals(C) : null;
    const b = affine ? rng.normals(C) : null;
    const X = await up(x, [T, C]);
    const W = w ? await up(w, [C]) : null;
    const B = b ? await up(b, [C]) : null;
    const [out, mean, rstd] = [
      await Tensor.zeros([T, C]),
      await Tensor.zeros([T]),
      await Tensor.zeros([T]),
    ];
    layernormForward(out, mean, rstd, X, W, B, 1e-5);
    assertClose(await out.read(), layernormRef(x, w, b, T, C), 1e-4, 1e-5, "layernorm out");
    const dy = rng.normals(T * C);
    const DY = await up(dy, [T, C]);
    const dx = await Tensor.zeros([T, C]);
    map1(dx, 0.25); // accumulate onto a known value
    layernormBackward(dx, DY, X, W, mean, rstd, true);
    const gx = fdGrad((xx) => layernormRef(xx, w, b, T, C), Float64Array.from(x), dy);
    assertClose(await dx.read(), gx.map((v) => v + 0.25), 1e-3, 1e-4, "layernorm dx");
    if (w && b && W) {
      const [dw, db] = [await Tensor.zeros([C]), await Tensor.zeros([C])];
      layernormParamBackward(dw, db, DY, X, mean, rstd);
      const gw = fdGrad((ww) => layernormRef(x, ww, b, T, C), Float64Array.from(w), dy);
      const gb = fdGrad((bb) => layernormRef(x, w, bb, T, C), Float64Array.from(b), dy);
      assertClose(await dw.read(), gw, 1e-3, 1e-4, "layernorm dweight");
      assertClose(await db.read(), gb, 1e-3, 1e-4, "layernorm dbias");
    }
  }
});

function map1(t: Tensor, v: number) {
  t.write(new Float32Array(t.size).fill(v));
}

Deno.test("rmsnormForward/Backward match float64 and finite differences", async () => {
  const rng = new Rng(3);
  for (const [T, C] of [[3, 7], [2, 260]]) {
    const x = rng.normals(T * C);
    const w = rng.normals(C);
    const X = await up(x, [T, C]);
    const W = await up(w, [C]);
    const [out, rstd] = [await Tensor.zeros([T, C]), await Tensor.zeros([T])];
    rmsnormForward(out, rstd, X, W, 1e-5);
    assertClose(await out.read(), rmsnormRef(x, w, T, C), 1e-4, 1e-5, "rmsnorm out");
    const dy = rng.normals(T * C);
    const DY = await up(dy, [T, C]);
    const dx = await Tensor.zeros([T, C]);
    rmsnormBackward(dx, DY, X, W, rstd);
    assertClose(
      await dx.read(),
      fdGrad((xx) => rmsnormRef(xx, w, T, C), Float64Array.from(x), dy),
      1e-3,
      1e-4,
      "rmsnorm dx",
    );
    const dw = await Tensor.zeros([C]);
    rmsnormParamBackward(dw, DY, X, rstd);
    assertClose(
      await dw.read(),
      fdGrad((ww) => rmsnormRef(x, ww, T, C), Float64Array.from(w), dy),
      1e-3,
      1e-4,
      "rmsnorm dw",
    );
  }
});

Deno.test("ropeInvFreq implements HF linear and llama3 scaling", () => {
  const D = 16;
  const base = ropeInvFreq(D, 500000, null);
  for (let i = 0; i < D / 2; i++) {
    assertClose([base[i]], [1 / 500000 ** ((2 * i) / D)], 1e-6, 0, "inv_freq");
  }
  const lin = ropeInvFreq(D, 500000, { type: "linear", factor: 4 });
  assertClose(lin, Array.from(base, (v) => v / 4), 1e-6, 0, "linear");
  const sc = {
    type: "llama3" as const,
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositions: 64,
  };
  const l3 = ropeInvFreq(D, 500000, sc);
  let sawHigh = false, sawLow = false, sawMid = false;
  for (let i = 0; i < D / 2; i++) {
    const wl = (2 * Math.PI) / base[i];
    let want: number;
    if (wl < 64 / 4) (want = base[i], sawHigh = true);
    else if (wl > 64 / 1) (want = base[i] / 8, sawLow = true);
    else {
      const s = (64 / wl - 1) / (4 - 1);
      want = (1 - s) * base[i] / 8 + s * base[i];
      sawMid = true;
    }
    assertClose([l3[i]], [want], 1e-6, 0, `llama3 inv_freq[${i}]`);
  }
  assert.ok(sawHigh && sawLow && sawMid, "test covers all three llama3 bands");
});

function ropeRef(
  x: ArrayLike<number>,
  inv: ArrayLike<number>,
  T: number,
  H: number,
  D: number,
  pos0: number,
) {
  const out = Float64Array.from(x);
  const half = D / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < half; i++) {
        const a = (t + pos0) * inv[i];
        const [c, s] = [Math.cos(a), Math.sin(a)];
        const j = (t * H + h) * D + i;
        out[j] = x[j] * c - x[j + half] * s;
        out[j + half] = x[j + half] * c + x[j] * s;
      }
    }
  }
  return out;
}

Deno.test("ropeForward/Backward rotate half-split pairs and invert exactly", async () => {
  const rng = new Rng(4);
  const [T, H, D, pos0] = [5, 3, 8, 2];
  const inv = ropeInvFreq(D, 10000, null);
  const { cos, sin } = ropeTables(inv, 16);
  const CS = await up(cos, [16, D / 2]);
  const SN = await up(sin, [16, D / 2]);
  const x = rng.normals(T * H * D);
  const X = await up(x, [T, H * D]);
  ropeForward(X, CS, SN, H, pos0);
  assertClose(await X.read(), ropeRef(x, inv, T, H, D, pos0), 1e-5, 1e-5, "rope");
  const dy = rng.normals(T * H * D);
  const DY = await up(dy, [T, H * D]);
  ropeBackward(DY, CS, SN, H, pos0);
  assertClose(
    await DY.read(),
    fdGrad((xx) => ropeRef(xx, inv, T, H, D, pos0), Float64Array.from(x), dy),
    1e-4,
    1e-5,
    "rope dx",
  );
});

Deno.test("attentionForward/Backward: causal GQA, sliding window and query offset vs float64 and FD", async () => {
  const rng = new Rng(5);
  for (
    const [T, L, H, KH, D, window] of [[5, 5, 4, 2, 6, 0], [3, 7, 2, 1, 4, 3], [6, 6, 3, 3, 5, 2]]
  ) {
    const q = rng.normals(T * H * D), k = rng.normals(L * KH * D), v = rng.normals(L * KH * D);
    const [Q, K, Vt] = [
      await up(q, [T, H * D]),
      await up(k, [L, KH * D]),
      await up(v, [L, KH * D]),
    ];
    const sh = { numHeads: H, numKvHeads: KH, headDim: D, window };
    const out = await Tensor.zeros([T, H * D]);
    attentionForward(out, Q, K, Vt, sh);
    const ref = (qq: ArrayLike<number>, kk: ArrayLike<number>, vv: ArrayLike<number>) =>
      attentionRef(qq, kk, vv, T, L, H, KH, D, 1 / Math.sqrt(D), L - T, window);
    assertClose(
      await out.read(),
      ref(q, k, v),
      1e-4,
      1e-5,
      `attention T${T} L${L} H${H}/${KH} w${window}`,
    );
    if (T !== L) continue; // backward is used on full causal blocks only
    const dy = rng.normals(T * H * D);
    const [dq, dk, dv] = [
      await Tensor.zeros([T, H * D]),
      await Tensor.zeros([L, KH * D]),
      await Tensor.zeros([L, KH * D]),
    ];
    attentionBackward(dq, dk, dv, await up(dy, [T, H * D]), Q, K, Vt, sh);
    assertClose(
      await dq.read(),
      fdGrad((x) => ref(x, k, v), Float64Array.from(q), dy),
      1e-3,
      1e-4,
      "dq",
    );
    assertClose(
      await dk.read(),
      fdGrad((x) => ref(q, x, v), Float64Array.from(k), dy),
      1e-3,
      1e-4,
      "dk",
    );
    assertClose(
      await dv.read(),
      fdGrad((x) => ref(q, k, x), Float64Array.from(v), dy),
      1e-3,
      1e-4,
      "dv",
    );
  }
});

Deno.test("attention at sizes where the banded GEMMs skip blocks: causal, windowed, offset", async () => {
  const rng = new Rng(15);
  const [H, KH, D] = [2, 1, 16];
  const sh0 = { numHeads: H, numKvHeads: KH, headDim: D };
  // T = L = 130 (the 16×16-block GEMM family, several row blocks), with and without a window
  for (const window of [0, 40]) {
    const T = 130;
    const q = rng.normals(T * H * D), k = rng.normals(T * KH * D), v = rng.normals(T * KH * D);
    const dy = rng.normals(T * H * D);
    const [Q, K, V, DY] = [
      await up(q, [T, H * D]),
      await up(k, [T, KH * D]),
      await up(v, [T, KH * D]),
      await up(dy, [T, H * D]),
    ];
    const sh = { ...sh0, window };
    const out = await Tensor.zeros([T, H * D]);
    attentionForward(out, Q, K, V, sh);
    const scale = 1 / Math.sqrt(D);
    const what = `T${T} w${window}`;
    assertClose(
      await out.read(),
      attentionRef(q, k, v, T, T, H, KH, D, scale, 0, window),
      1e-4,
      1e-5,
      what,
    );
    const [dq, dk, dv] = [
      await Tensor.zeros([T, H * D]),
      await Tensor.zeros([T, KH * D]),
      await Tensor.zeros([T, KH * D]),
    ];
    attentionBackward(dq, dk, dv, DY, Q, K, V, sh);
    const ref = attentionGradRef(q, k, v, dy, T, H, KH, D, scale, window);
    assertClose(await dq.read(), ref.dq, 1e-4, 1e-5, `${what} dq`);
    assertClose(await dk.read(), ref.dk, 1e-4, 1e-5, `${what} dk`);
    assertClose(await dv.read(), ref.dv, 1e-4, 1e-5, `${what} dv`);
    for (const t of [Q, K, V, DY, out, dq, dk, dv]) t.dispose();
  }
  // 50 new queries after 80 cached keys
  const [T, L] = [50, 130];
  const q = rng.normals(T * H * D), k = rng.normals(L * KH * D), v = rng.normals(L * KH * D);
  const out = await Tensor.zeros([T, H * D]);
  attentionForward(
    out,
    await up(q, [T, H * D]),
    await up(k, [L, KH * D]),
    await up(v, [L, KH * D]),
    sh0,
  );
  assertClose(
    await out.read(),
    attentionRef(q, k, v, T, L, H, KH, D, 1 / Math.sqrt(D), L - T, 0),
    1e-4,
    1e-5,
    "offset 80",
  );
});

function ceRef(z: ArrayLike<number>, T: number, V: number, tg: ArrayLike<number>, S: number) {
  const loss = new Float64Array(T);
  for (let t = 0; t < T; t++) {
    if (tg[t * S] < 0) continue;
    let m = -Infinity;
    for (let c = 0; c < V; c++) m = Math.max(m, z[t * V + c]);
    let s = 0;
    for (let c = 0; c < V; c++) s += Math.exp(z[t * V + c] - m);
    for (let j = 0; j < S; j++) loss[t] += (m + Math.log(s) - z[t * V + tg[t * S + j]]) / S;
  }
  return loss;
}

Deno.test("crossentropyForward: losses and fused dlogits (S labels, ignored rows, row offset)", async () => {
  const rng = new Rng(6);
  const [T, V, S] = [4, 301, 2];
  const z = rng.normals(T * V, 3);
  const tg = Int32Array.from([5, 7, 300, 0, 2, 2, -1, -1]);
  const targets = await Tensor.from(tg);
  const losses = await Tensor.zeros([T + 1]);
  // rows 1..3 in one chunk at rowBase 1; row 0 separately
  const z0 = await up(z.slice(0, V), [1, V]);
  const z1 = await up(z.slice(V), [T - 1, V]);
  crossentropyForward(z0, losses, targets, S, 0, true, 0.5);
  crossentropyForward(z1, losses, targets, S, 1, true, 0.5);
  const want = ceRef(z, T, V, tg, S);
  assertClose((await losses.read()).slice(0, T), want, 1e-5, 1e-5, "losses");
  const dz = new Float64Array([...(await z0.read()), ...(await z1.read())]);
  const g = fdGrad((zz) => ceRef(zz, T, V, tg, S), Float64Array.from(z), [0.5, 0.5, 0.5, 0.5]);
  assertClose(dz, g, 1e-3, 1e-5, "dlogits");
});

Deno.test("sampleLabels draws by inverse CDF without replacement; rows past validRows get −1", async () => {
  const rng = new Rng(7);
  const [T, V, S] = [6, 700, 3];
  const z = rng.normals(T * V, 2);
  const u = Array.from({ length: T * S }, () => rng.next());
  const labels = await Tensor.from(new Int32Array(T * S));
  sampleLabels(labels, await up(z, [T, V]), await up(u, [T * S]), S, 0, T - 1);
  const got = new Int32Array((await labels.read()).buffer);
  for (let t = 0; t < T; t++) {
    if (t === T - 1) {
      assert.deepEqual([...got.slice(t * S, t * S + S)], [-1, -1, -1]);
      continue;
    }
    const p = Array.from({ length: V }, (_, c) => Math.exp(z[t * V + c]));
    const taken: number[] = [];
    for (let j = 0; j < S; j++) {
      const total = p.reduce((a, b, c) => a + (taken.includes(c) ? 0 : b), 0);
      const goal = u[t * S + j] * total;
      let acc = 0, pick = -1;
      for (let c = 0; c < V; c++) {
        if (taken.includes(c)) continue;
        acc += p[c];
        if (acc > goal) {
          pick = c;
          break;
        }
      }
      taken.push(pick);
    }
    assert.deepEqual([...got.slice(t * S, t * S + S)], taken, `row ${t}`);
  }
});

/** erfc in float64: Taylor series for |y| < 2, continued fraction beyond (no cancellation). */
function erfcRef(y: number): number {
  if (y < 0) return 2 - erfcRef(-y);
  if (y < 2) {
    let s = 0, term = y;
    for (let n = 0; n < 80; n++) {
      s += term / (2 * n + 1);
      term *= -y * y / (n + 1);
    }
    return 1 - (2 / Math.sqrt(Math.PI)) * s;
  }
  let f = y;
  for (let k = 80; k >= 1; k--) f = y + (k / 2) / f;
  return Math.exp(-y * y) / Math.sqrt(Math.PI) / f;
}

function geluRef(x: number) {
  return 0.5 * x * erfcRef(-x / Math.SQRT2);
}

Deno.test("relu, gelu (erf) and swiglu forward/backward vs float64 and finite differences", async () => {
  const rng = new Rng(8);
  const n = 301;
  const x = Float64Array.from(f32(rng.normals(n, 2)));
  const dy = Float64Array.from(f32(rng.normals(n)));
  const X = await up(x, [n]);
  const DY = await up(dy, [n]);
  const out = await Tensor.zeros([n]);
  reluForward(out, X);
  assertClose(await out.read(), x.map((v) => Math.max(v, 0)), 0, 0, "relu");
  reluBackward(out, DY, X);
  assertClose(await out.read(), x.map((v, i) => (v > 0 ? dy[i] : 0)), 0, 0, "relu'");
  geluForward(out, X);
  assertClose(await out.read(), x.map(geluRef), 1e-5, 1e-6, "gelu");
  geluBackward(out, DY, X);
  assertClose(
    await out.read(),
    fdGrad((xx) => xx.map(geluRef), Float64Array.from(x), dy),
    1e-4,
    1e-5,
    "gelu'",
  );
  const u = rng.normals(n);
  const U = await up(u, [n]);
  const silu = (v: number) => v / (1 + Math.exp(-v));
  swigluForward(out, X, U);
  assertClose(await out.read(), x.map((v, i) => silu(v) * u[i]), 1e-5, 1e-6, "swiglu");
  const [dg, du] = [await Tensor.zeros([n]), await Tensor.zeros([n])];
  swigluBackward(dg, du, DY, X, U);
  assertClose(
    await dg.read(),
    fdGrad((xx) => xx.map((v, i) => silu(v) * u[i]), Float64Array.from(x), dy),
    1e-4,
    1e-5,
    "dgate",
  );
  assertClose(await du.read(), x.map((v, i) => silu(v) * dy[i]), 1e-5, 1e-6, "dup");
});

Deno.test("linearForward/Backward with a LoRA adapter vs float64", async () => {
  const rng = new Rng(9);
  const [T, C, R, r] = [5, 7, 6, 3];
  const x = rng.normals(T * C),
    w = rng.normals(R * C),
    b = rng.normals(R),
    A = rng.normals(r * C),
    B = rng.normals(R * r);
  const out = await Tensor.zeros([T, R]);
  const ad = { A: await up(A, [r, C]), B: await up(B, [R, r]) };
  const X = await up(x, [T, C]), W = await up(w, [R, C]);
  linearForward(out, X, W, await up(b, [R]), ad);
  // W_eff = W + B·A
  const ba = matmulRef(B, A, R, C, r);
  const weff = w.map((v, i) => v + ba[i]);
  const ref = matmulRef(x, weff, T, R, C, false, true).map((v, i) => v + b[i % R]);
  assertClose(await out.read(), ref, 1e-4, 1e-5, "linear");
  const dy = rng.normals(T * R);
  const dx = await Tensor.zeros([T, C]);
  linearBackward(dx, await up(dy, [T, R]), W, ad);
  assertClose(await dx.read(), matmulRef(dy, weff, T, C, R), 1e-4, 1e-5, "linear dx");
});

Deno.test("appendOnes, copyColumns and sanitizeGrad", async () => {
  const x = await up([1, 2, 3, 4, 5, 6], [2, 3]);
  const a = await Tensor.zeros([2, 4]);
  appendOnes(a, x);
  assert.deepEqual([...(await a.read())], [1, 2, 3, 1, 4, 5, 6, 1]);
  const big = await Tensor.zeros([2, 5]);
  copyColumns(big, 2, x, 1, 2);
  assert.deepEqual([...(await big.read())], [0, 0, 2, 3, 0, 0, 0, 5, 6, 0]);
  const g = await up([NaN, 3, -7, 0.5, Infinity, -Infinity], [6]);
  sanitizeGrad(g, 2);
  assert.deepEqual([...(await g.read())], [0, 2, -2, 0.5, 2, -2]);
  const h = await up([NaN, 3, -7], [3]);
  sanitizeGrad(h);
  assert.deepEqual([...(await h.read())], [0, 3, -7]);
});

Deno.test("row kernels give the same results with 1 lane per row and 256 lanes per row", async () => {
  const rng = new Rng(10);
  const [T, C] = [5, 300];
  const x = f32(rng.normals(T * C)), w = f32(rng.normals(C)), dy = f32(rng.normals(T * C));
  const results: Float32Array[][] = [];
  for (const lanes of [1, 256]) {
    nnTuning.rowLanes = lanes;
    try {
      const X = await up(x, [T, C]), W = await up(w, [C]), DY = await up(dy, [T, C]);
      const [o, m, r, dx] = [
        await Tensor.zeros([T, C]),
        await Tensor.zeros([T]),
        await Tensor.zeros([T]),
        await Tensor.zeros([T, C]),
      ];
      const got: Float32Array[] = [];
      layernormForward(o, m, r, X, W, W, 1e-5);
      layernormBackward(dx, DY, X, W, m, r);
      got.push(await o.read(), await dx.read());
      rmsnormForward(o, r, X, W, 1e-5);
      rmsnormBackward(dx, DY, X, W, r);
      got.push(await o.read(), await dx.read());
      const S = await up(x, [1, T, C]);
      softmaxForward(S, 0.7, C - T, C, 7);
      const P = S.clone();
      const D = await up(dy, [1, T, C]);
      softmaxBackward(D, P, 0.7);
      got.push(await S.read(), await D.read());
      const tg = await Tensor.from(Int32Array.from([3, 299, -1, 0, 7]));
      const losses = await Tensor.zeros([T]);
      crossentropyForward(X, losses, tg, 1, 0, true, 0.25);
      got.push(await losses.read(), await X.read());
      results.push(got);
    } finally {
      nnTuning.rowLanes = 0;
    }
  }
  results[0].forEach((a, i) => assertClose(a, results[1][i], 1e-5, 1e-6, `output ${i}`));
});

Deno.test("layer kernels refuse f16 tensors with an error naming the tensor", async () => {
  const table = await Tensor.from([1, 2, 3, 4], [2, 2], "f16", "embed half");
  const ids = await Tensor.from(new Int32Array([1]), [1]);
  const out = await Tensor.zeros([1, 2]);
  assert.throws(() => embeddingForward(out, ids, table), /embed half.*f16/);
  for (const t of [table, ids, out]) t.dispose();
});
