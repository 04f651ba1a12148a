import assert from "node:assert/strict";
import { Tensor } from "../kernels/tensor.ts";
import { optLikeToy, TapReplayModel, ToyModel } from "../curvature/_toy.ts";
import { estimateCurvature } from "../curvature/estimate.ts";
import { type Curvature, disposeCurvature } from "../curvature/types.ts";
import { disposePrepared, prepareModules } from "../pruner/prepare.ts";
import {
  linearTarget,
  loraFinetune,
  pruneShot,
  runSchedule,
  type ScheduleOptions,
  shotData,
  type ShotReport,
  sparsityStats,
} from "../pruner/mod.ts";
import { randomSequences, Rng } from "./_util.ts";

async function zeroMasks(model: ToyModel): Promise<boolean[][]> {
  const out: boolean[][] = [];
  for (const l of model.linears()) {
    const w = await l.weight.read();
    const b = l.bias ? await l.bias.read() : new Float32Array(0);
    out.push([...Array.from(w, (x) => x === 0), ...Array.from(b, (x) => x === 0)]);
  }
  return out;
}

Deno.test("R12: pruned fc1 rows make fc2 columns dead, pruned fc2 columns make fc1 rows dead", async () => {
  const seqs = randomSequences(2, 5, 11, 1);
  const m1 = await optLikeToy(2);
  const [fc1, fc2] = m1.linears();
  const j = 2, d = fc1.inFeatures;
  const w1 = await fc1.weight.read(), b1 = await fc1.bias!.read();
  w1.fill(0, j * d, (j + 1) * d);
  b1[j] = 0;
  fc1.weight.write(w1);
  fc1.bias!.write(b1);
  const c1 = await estimateCurvature(m1, seqs, { kind: "kfac", useIad: true });
  const A = await c1.get(fc2.name)!.A[0].read(), C = fc2.inFeatures + 1;
  assert.equal(A[j * C + j], 0, "fc2 A_jj");
  const p1 = await prepareModules(m1.linears(), c1, { obd: true, dampG: 0.01, dampA: 0.01 });
  assert.equal(p1[1].keepC[j], 0, "fc2 column j dead");
  assert.equal(p1[1].keepC.reduce((a, b) => a + b, 0) <= C - 1, true);
  disposePrepared(p1);
  disposeCurvature(c1);
  m1.dispose();

  const m2 = await optLikeToy(2);
  const [f1, f2] = m2.linears();
  const k = 3, H = f2.inFeatures;
  const w2 = await f2.weight.read();
  for (let r = 0; r < f2.outFeatures; r++) w2[r * H + k] = 0;
  f2.weight.write(w2);
  const c2 = await estimateCurvature(m2, seqs, { kind: "kfac", useIad: true });
  const G = await c2.get(f1.name)!.G[0].read();
  assert.equal(G[k * f1.outFeatures + k], 0, "fc1 G_kk");
  const p2 = await prepareModules(m2.linears(), c2, { obd: false, dampG: 0.01, dampA: 0.01 });
  assert.equal(p2[0].keepR[k], 0, "fc1 row k dead");
  disposePrepared(p2);
  // The dead row was zeroed in the model (weight row and bias entry).
  const rowK = (await f1.weight.read()).slice(k * f1.inFeatures, (k + 1) * f1.inFeatures);
  assert.ok(rowK.every((x) => x === 0) && (await f1.bias!.read())[k] === 0);
  disposeCurvature(c2);
  m2.dispose();
});

const surgeon = (structure: ScheduleOptions["structure"]): ScheduleOptions => ({
  kind: "kfac",
  useIad: true,
  structure,
  obd: false,
  sparsity: 0.5,
  shots: 5,
  maxCorrelate: 7,
  addupdate: true,
  dampG: 0.1,
  dampA: 0.01,
  seed: 100,
});

Deno.test("R13: linear schedule, zeros only grow, final 2:4 pattern valid on every row group (bias-free and dead columns too)", async () => {
  [0.1, 0.2, 0.3, 0.4, 0.5].forEach((t, i) =>
    assert.ok(Math.abs(linearTarget(i + 1, 5, 0.5) - t) < 1e-15)
  );
  const seqs = randomSequences(3, 6, 11, 3);
  for (const structure of ["element", { n: 2, m: 4 }] as const) {
    const model = await optLikeToy(5, 8, 12);
    // A dead ReLU unit: fc1 row 1 and its bias are zero, so fc2's column 1 is dead.
    const fc1 = model.linears()[0];
    const w = await fc1.weight.read(), b = await fc1.bias!.read();
    w.fill(0, 8, 16);
    b[1] = 0;
    fc1.weight.write(w);
    fc1.bias!.write(b);
    let prev = await zeroMasks(model);
    const reports: ShotReport[] = [];
    await runSchedule(model, seqs, surgeon(structure), {
      onShot: async (_k, r) => {
        reports.push(r);
        const now = await zeroMasks(model);
        now.forEach((m, i) =>
          m.forEach((z, j) => assert.ok(z || !prev[i][j], `zero (${i}, ${j}) came back`))
        );
        prev = now;
      },
    });
    assert.deepEqual(
      reports.map((r) => r.target),
      [1, 2, 3, 4, 5].map((k) => linearTarget(k, 5, 0.5)),
    );
    const V = model.linears().reduce(
      (a, l) => a + l.outFeatures * (l.inFeatures + (l.bias ? 1 : 0)),
      0,
    );
    if (structure === "element") {
      // At least ⌊s·V⌋ entries are zero after every shot (more only through ties).
      for (const r of reports) {
        assert.ok(
          r.sparsity * V >= Math.floor(r.target * V + 1e-9),
          `${r.sparsity} vs ${r.target}`,
        );
      }
    }
    if (structure !== "element") {
      for (const l of model.linears()) {
        const W = await l.weight.read(), C0 = l.inFeatures;
        for (let r = 0; r < l.outFeatures; r++) {
          for (let g = 0; g + 4 <= C0; g += 4) {
            const zeros = [0, 1, 2, 3].filter((t) => W[r * C0 + g + t] === 0).length;
            assert.ok(zeros >= 2, `${l.name} row ${r} group ${g / 4}: ${zeros} zeros`);
          }
        }
      }
    } else {
      assert.ok(
        Math.abs(reports[4].sparsity - 0.5) < 0.02,
        `final sparsity ${reports[4].sparsity}`,
      );
    }
    model.dispose();
  }
});

Deno.test("runSchedule() structured: removed rows/columns stay zero; a resumed run equals an uninterrupted one", async () => {
  const seqs = randomSequences(3, 6, 11, 9);
  const opts = {
    ...surgeon("rowcol"),
    sparsity: 0.3,
    shots: 3,
    maxCorrelate: 0,
    addupdate: false,
    dampG: 0.01,
  };
  const full = await optLikeToy(6, 8, 12);
  let prevRows: number[] = [];
  await runSchedule(full, seqs, opts, {
    onShot: async () => {
      const st = await sparsityStats(full);
      const rows = st.perModule.map((m) => m.rowsKept + m.colsKept);
      prevRows.forEach((x, i) => assert.ok(rows[i] <= x, "a removed row/column came back"));
      prevRows = rows;
    },
  });
  const part = await optLikeToy(6, 8, 12);
  await runSchedule(part, seqs, { ...opts, shots: 3 }, {
    onShot: (k) => (k === 1 ? Promise.reject(new Error("stop")) : Promise.resolve()),
  }).catch((e) => assert.equal(e.message, "stop"));
  await runSchedule(part, seqs, { ...opts, startShot: 1 });
  for (const [i, l] of full.linears().entries()) {
    assert.deepEqual(
      await part.linears()[i].weight.read(),
      await l.weight.read(),
      `${l.name} after resume`,
    );
  }
  const st = await sparsityStats(full);
  assert.ok(st.overall > 0.1 && st.overall <= 0.3 + 1e-9, `sparsity ${st.overall}`);
  full.dispose();
  part.dispose();
});

Deno.test("shotData() with newdata uses block k−1 for shot k (quirk Q3 fixed) and checks the count", () => {
  const cal = Array.from({ length: 6 }, (_, i) => Int32Array.of(i, i));
  const o = { ...surgeon("element"), shots: 3, newdata: true, nsamples: 2 };
  assert.deepEqual([1, 2, 3].map((k) => shotData(cal, k, o).map((s) => s[0])), [[0, 1], [2, 3], [
    4,
    5,
  ]]);
  assert.throws(() => shotData(cal, 1, { ...o, nsamples: 3 }), /--newdata/);
});

/** Exact quadratic loss increase ½ vec(ΔW)ᵀ (G⊗A) vec(ΔW). */
function quadLoss(
  G: Float64Array,
  A: Float64Array,
  dW: Float64Array,
  R: number,
  C: number,
): number {
  let s = 0;
  for (let r = 0; r < R; r++) {
    for (let r2 = 0; r2 < R; r2++) {
      const g = G[r * R + r2];
      for (let c = 0; c < C; c++) {
        for (let c2 = 0; c2 < C; c2++) {
          s += 0.5 * dW[r * C + c] * g * A[c * C + c2] * dW[r2 * C + c2];
        }
      }
    }
  }
  return s;
}

Deno.test("on a synthetic quadratic problem LLM Surgeon ≤ Kron-OBD ≤ magnitude at equal sparsity", async () => {
  const R = 8, C = 12;
  const rng = new Rng(31);
  const spd = (n: number) => {
    // Strongly correlated SPD factor with uneven scales.
    const X = rng.normals(n * (n + 2));
    const s = Array.from({ length: n }, () => Math.exp(rng.normal()));
    const M = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let v = 0;
        for (let k = 0; k < n + 2; k++) v += X[i * (n + 2) + k] * X[j * (n + 2) + k];
        M[i * n + j] = s[i] * s[j] * (v / (n + 2) + (i === j ? 0.05 : 0));
      }
    }
    return M;
  };
  const G = spd(R), A = spd(C);
  const W0 = Float32Array.from(rng.normals(R * C));
  const curvOf = async (kind: "kfac" | "identity"): Promise<Curvature> =>
    new Map([[
      "replay.layers.0.q_proj",
      kind === "identity" ? { G: [], A: [], D: null, kind } : {
        G: [await Tensor.from(Float32Array.from(G), [R, R])],
        A: [await Tensor.from(Float32Array.from(A), [C, C])],
        D: null,
        kind,
      },
    ]]);
  for (const structure of ["element", { n: 2, m: 4 }] as const) {
    const losses: number[] = [], sparsities: number[] = [];
    for (const method of ["surgeon", "kron-obd", "magnitude"]) {
      const model = await TapReplayModel.of(R, C, []);
      const w = model.linears()[0].weight;
      w.write(W0);
      const curv = await curvOf(method === "magnitude" ? "identity" : "kfac");
      const shots = method === "surgeon" ? 4 : 1;
      let rep: ShotReport | null = null;
      for (let k = 1; k <= shots; k++) {
        rep = await pruneShot(model, curv, linearTarget(k, shots, 0.5), {
          structure,
          obd: method !== "surgeon",
          dampG: 1e-3,
          dampA: 1e-3,
        });
      }
      const W = await w.read();
      losses.push(quadLoss(G, A, Float64Array.from(W, (x, i) => x - W0[i]), R, C));
      sparsities.push(rep!.sparsity);
      disposeCurvature(curv);
      model.dispose();
    }
    assert.deepEqual(sparsities, [0.5, 0.5, 0.5]);
    assert.ok(
      losses[0] <= losses[1] && losses[1] <= losses[2],
      `${JSON.stringify(structure)}: losses ${losses}`,
    );
  }
});

Deno.test("loraFinetune() trains adapters on the attention projections, lowers the loss and keeps zeros", async () => {
  const model = await ToyModel.create(11, 6, [
    { kind: "q_proj", inF: 6, outF: 6, bias: true, act: "relu" },
    { kind: "out_proj", inF: 6, outF: 6, bias: false, act: "none" },
    { kind: "fc1", inF: 6, outF: 6, bias: true, act: "none" },
  ], 13);
  const seqs = randomSequences(4, 6, 11, 2);
  // Prune a little so that zeros must survive absorption.
  const curv = await estimateCurvature(model, seqs, { kind: "identity" });
  await pruneShot(model, curv, 0.3, { structure: "element", obd: true });
  const before = await zeroMasks(model);
  const fc1 = await model.linears()[2].weight.read();
  const nll0 = (await Promise.all(seqs.map((s) => model.nll(s)))).reduce((a, b) => a + b) /
    seqs.length;
  const losses = await loraFinetune(model, seqs, { lr: 0.02, subset: 1, epochs: 4 }, 7);
  const nll1 = (await Promise.all(seqs.map((s) => model.nll(s)))).reduce((a, b) => a + b) /
    seqs.length;
  assert.equal(losses.length, 4);
  assert.ok(nll1 < nll0 - 1e-3, `loss ${nll0} → ${nll1}`);
  const after = await zeroMasks(model);
  before.forEach((m, i) =>
    m.forEach((z, j) => z && assert.ok(after[i][j], `zero (${i}, ${j}) lost`))
  );
  // fc1 has no adapter and is unchanged; the adapters are gone.
  assert.deepEqual(await model.linears()[2].weight.read(), fc1);
  assert.ok(model.linears().every((l) => l.adapter === null));
  model.dispose();
});
