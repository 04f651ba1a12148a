import assert from "node:assert/strict";
import { estimateCurvature } from "../curvature/estimate.ts";
import { disposeCurvature } from "../curvature/types.ts";
import { TapReplayModel } from "../curvature/_toy.ts";
import { Rng } from "./_util.ts";

/** R(F) = (1/N) Σ_t vec(g gᵀ) vec(a aᵀ)ᵀ, an (R²)×(C²) matrix, float64. */
function rearranged(taps: { a: number[][]; g: number[][] }[], R: number, C: number): Float64Array {
  const M = new Float64Array(R * R * C * C);
  let N = 0;
  for (const s of taps) N += s.a.length;
  for (const s of taps) {
    s.a.forEach((a, t) => {
      const g = s.g[t];
      for (let i = 0; i < R; i++) {
        for (let j = 0; j < R; j++) {
          const gg = g[i] * g[j] / N;
          for (let k = 0; k < C; k++) {
            for (let l = 0; l < C; l++) M[(i * R + j) * C * C + k * C + l] += gg * a[k] * a[l];
          }
        }
      }
    });
  }
  return M;
}

/** Top singular triplets of an m×n matrix by deflated power iteration on MᵀM (float64). */
function topSvd(M: Float64Array, m: number, n: number, count: number) {
  const out: { s: number; u: Float64Array; v: Float64Array }[] = [];
  const A = Float64Array.from(M);
  for (let q = 0; q < count; q++) {
    let v = Float64Array.from({ length: n }, (_, i) => 1 + 0.01 * i);
    let s = 0, u = new Float64Array(m);
    for (let it = 0; it < 3000; it++) {
      u = new Float64Array(m);
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) u[i] += A[i * n + j] * v[j];
      const nv = new Float64Array(n);
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) nv[j] += A[i * n + j] * u[i];
      const nrm = Math.hypot(...nv);
      v = nv.map((x) => x / nrm);
      s = Math.sqrt(nrm);
    }
    u = new Float64Array(m);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) u[i] += A[i * n + j] * v[j];
    s = Math.hypot(...u);
    u = u.map((x) => x / s);
    out.push({ s, u, v });
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) A[i * n + j] -= s * u[i] * v[j];
  }
  return out;
}

Deno.test("estimateCurvature() power iteration converges to the best Kronecker approximation, rank 2 by deflation (R9)", async () => {
  const R = 3, C = 4;
  const rng = new Rng(11);
  // Two token populations make F ≈ G₁⊗A₁ + G₂⊗A₂ with well separated singular values.
  const base = [
    { g: [1, 0.5, -0.2], a: [1, 0.2, 0, 0.3] },
    { g: [-0.1, 0.4, 1], a: [0, 1, 0.6, -0.4] },
  ];
  const taps = [0, 1].map(() => {
    const a: number[][] = [], g: number[][] = [];
    for (let t = 0; t < 6; t++) {
      const b = base[t % 2], w = t % 2 === 0 ? 1.6 : 1;
      g.push(b.g.map((x) => w * x + 0.15 * rng.normal()));
      a.push(b.a.map((x) => x + 0.15 * rng.normal()));
    }
    return { a, g };
  });
  const svd = topSvd(rearranged(taps, R, C), R * R, C * C, 2);
  assert.ok(
    svd[1].s / svd[0].s < 0.8,
    `test needs a spectral gap (σ2/σ1 = ${svd[1].s / svd[0].s})`,
  );
  const model = await TapReplayModel.of(R, C, taps);
  const curv = await estimateCurvature(model, model.seqs(), {
    kind: "kfac",
    krank: 2,
    kpcaIter: 40,
  });
  const l = curv.get("replay.layers.0.q_proj")!;
  assert.equal(l.G.length, 2);
  for (let r = 0; r < 2; r++) {
    const G = await l.G[r].read(), A = await l.A[r].read();
    // vec(G_r)·vec(A_r)ᵀ must equal σ_r·u_r·v_rᵀ (signs of u, v cancel in the product).
    let err = 0, ref = 0;
    for (let i = 0; i < R * R; i++) {
      for (let j = 0; j < C * C; j++) {
        const want = svd[r].s * svd[r].u[i] * svd[r].v[j];
        err += (G[i] * A[j] - want) ** 2;
        ref += want ** 2;
      }
    }
    assert.ok(Math.sqrt(err / ref) < 1e-3, `rank ${r}: relative error ${Math.sqrt(err / ref)}`);
  }
  disposeCurvature(curv);

  // IAD for rank 0, then power iteration for rank 1 deflated against the IAD term only
  // (the IAD sums must not leak into rank 1, quirk Q7): check the residual is orthogonal.
  const iad = await estimateCurvature(model, model.seqs(), {
    kind: "kfac",
    useIad: true,
    krank: 2,
    kpcaIter: 40,
  });
  const li = iad.get("replay.layers.0.q_proj")!;
  const [G0, A0, G1, A1] = await Promise.all([
    li.G[0].read(),
    li.A[0].read(),
    li.G[1].read(),
    li.A[1].read(),
  ]);
  const Rf = rearranged(taps, R, C);
  // Best rank-1 approximation of R(F) − vec(G0)vec(A0)ᵀ, by the same float64 SVD.
  const resid = Rf.map((x, idx) => x - G0[Math.floor(idx / (C * C))] * A0[idx % (C * C)]);
  const top = topSvd(resid, R * R, C * C, 1)[0];
  let err = 0, ref = 0;
  for (let i = 0; i < R * R; i++) {
    for (let j = 0; j < C * C; j++) {
      const want = top.s * top.u[i] * top.v[j];
      err += (G1[i] * A1[j] - want) ** 2;
      ref += want ** 2;
    }
  }
  assert.ok(Math.sqrt(err / ref) < 1e-3, `IAD + rank 1: relative error ${Math.sqrt(err / ref)}`);
  disposeCurvature(iad);
  model.dispose();
});

Deno.test("estimateCurvature() with reuse seeds the power iteration from the previous factors", async () => {
  const rng = new Rng(3);
  const taps = [0, 1, 2].map(() => ({
    a: Array.from({ length: 5 }, () => [1 + rng.normal(), rng.normal()]),
    g: Array.from({ length: 5 }, () => [rng.normal(), 0.5 * rng.normal()]),
  }));
  const model = await TapReplayModel.of(2, 2, taps);
  const lines: string[] = [];
  const first = await estimateCurvature(model, model.seqs(), { kind: "kfac", kpcaIter: 30 });
  const again = await estimateCurvature(model, model.seqs(), {
    kind: "kfac",
    kpcaIter: 2,
    reuse: first,
    onProgress: (m) => lines.push(m),
  });
  // Forced to 6 half-steps, one progress line per pass.
  assert.equal(lines.length, 6);
  const a = first.get("replay.layers.0.q_proj")!, b = again.get("replay.layers.0.q_proj")!;
  const [g1, a1, g2, a2] = await Promise.all([
    a.G[0].read(),
    a.A[0].read(),
    b.G[0].read(),
    b.A[0].read(),
  ]);
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 4; j++) {
      assert.ok(Math.abs(g1[i] * a1[j] - g2[i] * a2[j]) < 1e-4 * (1 + Math.abs(g1[i] * a1[j])));
    }
  }
  disposeCurvature(first);
  disposeCurvature(again);
  model.dispose();
});
