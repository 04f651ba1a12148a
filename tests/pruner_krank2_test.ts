import assert from "node:assert/strict";
import { Tensor } from "../kernels/tensor.ts";
import { inverseF64, optLikeToy, TapReplayModel } from "../curvature/_toy.ts";
import { runSchedule } from "../pruner/mod.ts";
import type { Curvature } from "../curvature/types.ts";
import { elementCosts, rowColCosts } from "../pruner/costs.ts";
import { disposePrepared, prepareModules } from "../pruner/prepare.ts";
import { elementUpdate, structuredUpdate } from "../pruner/update.ts";
import { assertClose, Rng } from "./_util.ts";

const R = 4, C = 3, n = R * C;

function spd(k: number, rng: Rng): number[] {
  const X = rng.normals(k * k);
  return Array.from({ length: k * k }, (_, idx) => {
    const i = Math.floor(idx / k), j = idx % k;
    let s = i === j ? 0.3 : 0;
    for (let t = 0; t < k; t++) s += X[i * k + t] * X[j * k + t] / k;
    return s;
  });
}

/** Brute-force OBS under a general F: Δw and ½ΔwᵀFΔw. */
function bruteObs(F: Float64Array, W: number[], Q: number[]) {
  const inQ = new Set(Q), free = [...Array(n).keys()].filter((i) => !inQ.has(i));
  const d = new Float64Array(n);
  for (const q of Q) d[q] = -W[q];
  const f = free.length;
  const Fff = new Float64Array(f * f);
  free.forEach((i, a) => free.forEach((j, b) => (Fff[a * f + b] = F[i * n + j])));
  const inv = inverseF64(Fff, f);
  const rhs = free.map((i) => Q.reduce((s, q) => s + F[i * n + q] * d[q], 0));
  free.forEach((i, a) => (d[i] = -rhs.reduce((s, v, b) => s + inv[a * f + b] * v, 0)));
  let cost = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) cost += 0.5 * d[i] * F[i * n + j] * d[j];
  return { d, cost };
}

Deno.test("R11: two Kronecker terms — generalised eigenbasis inverse, its diagonal, row/column costs and OBS updates", async () => {
  const rng = new Rng(3);
  const G0 = spd(R, rng), G1 = spd(R, rng), A0 = spd(C, rng), A1 = spd(C, rng);
  const W = Array.from(rng.normals(n), (x) => x + Math.sign(x) * 0.2);
  const F = new Float64Array(n * n);
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C; c++) {
      for (let r2 = 0; r2 < R; r2++) {
        for (let c2 = 0; c2 < C; c2++) {
          F[(r * C + c) * n + r2 * C + c2] = G0[r * R + r2] * A0[c * C + c2] +
            G1[r * R + r2] * A1[c * C + c2];
        }
      }
    }
  }
  const Finv = inverseF64(F, n);
  const model = await TapReplayModel.of(R, C, []);
  const w = model.linears()[0].weight;
  const curv: Curvature = new Map([["replay.layers.0.q_proj", {
    G: [await Tensor.from(G0, [R, R]), await Tensor.from(G1, [R, R])],
    A: [await Tensor.from(A0, [C, C]), await Tensor.from(A1, [C, C])],
    D: null,
    kind: "kfac" as const,
  }]]);
  const prep = async () => {
    w.write(Float32Array.from(W));
    return await prepareModules(model.linears(), curv, { obd: false, dampG: 0, dampA: 0 });
  };
  const p = await prep();
  const b = p[0].basis!;
  const [K1, K2, iS] = [await b.K1.read(), await b.K2.read(), await b.invS.read()];
  // (K1⊗K2)·diag(1/s)·(K1⊗K2)ᵀ = F⁻¹.
  const rec = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let a = 0; a < R; a++) {
        for (let c = 0; c < C; c++) {
          s += K1[Math.floor(i / C) * R + a] * K2[(i % C) * C + c] * iS[a * C + c] *
            K1[Math.floor(j / C) * R + a] * K2[(j % C) * C + c];
        }
      }
      rec[i * n + j] = s;
    }
  }
  const scale = Math.max(...Finv.map(Math.abs));
  assertClose(rec, Finv, 1e-3, 1e-4 * scale, "F⁻¹ from the eigenbasis");
  // [ref]'s K = L⁻¹E (instead of L⁻ᵀE) does not give the inverse (quirk Q5).
  const lowerSolve = (L: Float32Array, E: Float32Array, k: number) => {
    const X = new Float64Array(k * k);
    for (let col = 0; col < k; col++) {
      for (let i = 0; i < k; i++) {
        let v = E[i * k + col];
        for (let j = 0; j < i; j++) v -= L[i * k + j] * X[j * k + col];
        X[i * k + col] = v / L[i * k + i];
      }
    }
    return X;
  };
  const K1r = lowerSolve(await b.L1.read(), await b.E1.read(), R);
  const K2r = lowerSolve(await b.L2.read(), await b.E2.read(), C);
  let err = 0, ref = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let v = 0;
      for (let a = 0; a < R; a++) {
        for (let c = 0; c < C; c++) {
          v += K1r[Math.floor(i / C) * R + a] * K2r[(i % C) * C + c] * iS[a * C + c] *
            K1r[Math.floor(j / C) * R + a] * K2r[(j % C) * C + c];
        }
      }
      err += (v - Finv[i * n + j]) ** 2;
      ref += Finv[i * n + j] ** 2;
    }
  }
  assert.ok(
    Math.sqrt(err / ref) > 0.05,
    `[ref]'s basis unexpectedly inverts F (${Math.sqrt(err / ref)})`,
  );
  // Costs: element = ½w²/[F⁻¹]_qq; rows/columns = brute-force OBS costs of whole rows/columns.
  const ec = await elementCosts(p[0], { obd: false }).read();
  assertClose(ec, W.map((x, q) => 0.5 * x * x / Finv[q * n + q]), 1e-3, 1e-6, "element costs");
  const rc = rowColCosts(p[0], { obd: false });
  const rows = await rc.rows.read(), cols = await rc.cols.read();
  for (let r = 0; r < R; r++) {
    assertClose(
      [rows[r]],
      [bruteObs(F, W, [0, 1, 2].map((c) => r * C + c)).cost],
      1e-3,
      1e-6,
      `row ${r}`,
    );
  }
  for (let c = 0; c < C; c++) {
    assertClose(
      [cols[c]],
      [bruteObs(F, W, [0, 1, 2, 3].map((r) => r * C + c)).cost],
      1e-3,
      1e-6,
      `col ${c}`,
    );
  }
  disposePrepared(p);
  // Updates equal the brute-force constrained minimiser.
  const upd = { maxCorrelate: 0, strictmax: false, addupdate: false, updateScale: 1 };
  const cases: { what: string; Q: number[]; rows?: number[]; cols?: number[] }[] = [
    { what: "scattered entries", Q: [0, 4, 5, 11] },
    { what: "rows 1 and 2", Q: [3, 4, 5, 6, 7, 8], rows: [1, 2] },
    { what: "column 1", Q: [1, 4, 7, 10], cols: [1] },
  ];
  for (const cs of cases) {
    const q = await prep();
    if (cs.rows || cs.cols) await structuredUpdate(q[0], cs.rows ?? [], cs.cols ?? [], upd);
    else {
      const m = new Float32Array(n);
      for (const i of cs.Q) m[i] = 1;
      await elementUpdate(q[0], await Tensor.from(m, [R, C]), upd);
    }
    const got = await w.read();
    const ref = bruteObs(F, W, cs.Q);
    assertClose(Array.from(got, (x, i) => x - W[i]), ref.d, 2e-3, 1e-4, cs.what);
    for (const i of cs.Q) assert.ok(Object.is(got[i], 0), `${cs.what}: entry ${i}`);
    disposePrepared(q);
  }
  model.dispose();
});

Deno.test("runSchedule() with krank 2 (power iteration + deflation) prunes a toy model end to end", async () => {
  const rng = new Rng(6);
  const seqs = [0, 1].map(() => Int32Array.from({ length: 6 }, () => rng.int(11)));
  for (const structure of ["element", "rowcol"] as const) {
    const model = await optLikeToy(4);
    let sp = -1;
    await runSchedule(model, seqs, {
      kind: "kfac",
      krank: 2,
      kpcaIter: 6,
      useIad: true,
      structure,
      sparsity: 0.2,
      shots: 1,
      maxCorrelate: 4,
      eigenfix: true,
      dampG: 0.1,
      dampA: 0.1,
      seed: 1,
    }, { onShot: (_k, r) => Promise.resolve(void (sp = r.sparsity)) });
    if (structure === "element") assert.ok(Math.abs(sp - 0.2) < 0.01, `element: ${sp}`);
    else assert.ok(sp > 0.05 && sp <= 0.2 + 1e-9, `rowcol: ${sp}`);
    assert.ok(Number.isFinite(await model.nll(seqs[0])));
    model.dispose();
  }
});
