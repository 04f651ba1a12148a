import assert from "node:assert/strict";
import { Tensor } from "../kernels/tensor.ts";
import { inverseF64, TapReplayModel } from "../curvature/_toy.ts";
import type { Curvature } from "../curvature/types.ts";
import { elementCosts, rowColCosts } from "../pruner/costs.ts";
import { disposePrepared, prepareModules } from "../pruner/prepare.ts";
import { elementUpdate, structuredUpdate } from "../pruner/update.ts";
import { assertClose, Rng } from "./_util.ts";

const NAME = "replay.layers.0.q_proj";

/** One R×C bias-free layer holding W, with KFAC curvature G ⊗ A. */
async function layer(G: number[], A: number[], W: number[], R: number, C: number) {
  const model = await TapReplayModel.of(R, C, []);
  model.linears()[0].weight.write(Float32Array.from(W));
  const curv: Curvature = new Map([[NAME, {
    G: [await Tensor.from(Float32Array.from(G), [R, R])],
    A: [await Tensor.from(Float32Array.from(A), [C, C])],
    D: null,
    kind: "kfac" as const,
  }]]);
  return { model, curv };
}

const upd = { maxCorrelate: 0, strictmax: false, addupdate: false, updateScale: 1 };

function randSpd(n: number, rng: Rng): number[] {
  const X = rng.normals(n * n);
  const M = new Array(n * n).fill(0);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = i === j ? 0.5 : 0;
      for (let k = 0; k < n; k++) s += X[i * n + k] * X[j * n + k] / n;
      M[i * n + j] = s;
    }
  }
  return M;
}

/** Brute-force OBS: min ½ dᵀFd s.t. d_Q = −w_Q, F = G⊗A (row-major), solving the free block. */
function bruteObs(G: number[], A: number[], W: number[], R: number, C: number, Q: number[]) {
  const n = R * C;
  const F = new Float64Array(n * n);
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C; c++) {
      for (let r2 = 0; r2 < R; r2++) {
        for (let c2 = 0; c2 < C; c2++) {
          F[(r * C + c) * n + r2 * C + c2] = G[r * R + r2] * A[c * C + c2];
        }
      }
    }
  }
  const inQ = new Set(Q);
  const free = [...Array(n).keys()].filter((i) => !inQ.has(i));
  const d = new Float64Array(n);
  for (const q of Q) d[q] = -W[q];
  if (free.length) {
    const f = free.length;
    const Fff = new Float64Array(f * f);
    free.forEach((i, a) => free.forEach((j, b) => (Fff[a * f + b] = F[i * n + j])));
    const inv = inverseF64(Fff, f);
    const rhs = free.map((i) => Q.reduce((s, q) => s + F[i * n + q] * d[q], 0));
    free.forEach((i, a) => (d[i] = -rhs.reduce((s, v, b) => s + inv[a * f + b] * v, 0)));
  }
  let cost = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) cost += 0.5 * d[i] * F[i * n + j] * d[j];
  return { d, cost, F };
}

function quad(F: Float64Array, d: ArrayLike<number>): number {
  const n = d.length;
  let s = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) s += 0.5 * d[i] * F[i * n + j] * d[j];
  return s;
}

Deno.test("R4: costs and updates of the worked 2×2 example (no damping)", async () => {
  const G = [2, 0.5, 0.5, 1], A = [1, 0.2, 0.2, 3], W = [1, -2, 0.5, 3];
  const { model, curv } = await layer(G, A, W, 2, 2);
  const lins = model.linears();
  const obs = await prepareModules(lins, curv, { obd: false, dampG: 0, dampA: 0 });
  assertClose(
    await elementCosts(obs[0], { obd: false }).read(),
    [0.863333, 10.36, 0.107917, 11.655],
    1e-5,
    0,
    "element OBS",
  );
  const rc = rowColCosts(obs[0], { obd: false });
  assertClose(await rc.rows.read(), [10.675, 12.184375], 1e-5, 0, "row OBS");
  assertClose(await rc.cols.read(), [1.356667, 16.28], 1e-5, 0, "column OBS");
  disposePrepared(obs);
  const obd = await prepareModules(lins, curv, { obd: true, dampG: 0, dampA: 0 });
  assertClose(
    await elementCosts(obd[0], { obd: true }).read(),
    [1, 12, 0.125, 13.5],
    1e-6,
    0,
    "element OBD",
  );
  const rd = rowColCosts(obd[0], { obd: true });
  assertClose(await rd.rows.read(), [12.2, 13.925], 1e-6, 0, "row OBD");
  assertClose(await rd.cols.read(), [1.375, 16.5], 1e-6, 0, "column OBD");
  disposePrepared(obd);

  const w = lins[0].weight;
  const cases: [
    string,
    (p: Awaited<ReturnType<typeof prepareModules>>[0]) => Promise<unknown>,
    number[],
  ][] = [
    ["row 0", (p) => structuredUpdate(p, [0], [], upd), [0, 0, 1, 2]],
    ["column 1", (p) => structuredUpdate(p, [], [1], upd), [0.6, 0, 1.1, 0]],
    ["entry (0,1)", async (p) => {
      const mask = await Tensor.from([0, 1, 0, 0], [2, 2]);
      await elementUpdate(p, mask, upd);
    }, [0.6, 0, 0.7, 2]],
  ];
  for (const [what, run, want] of cases) {
    w.write(Float32Array.from(W));
    const p = await prepareModules(lins, curv, { obd: false, dampG: 0, dampA: 0 });
    await run(p[0]);
    const got = await w.read();
    assertClose(got, want, 1e-5, 1e-6, `update removing ${what}`);
    disposePrepared(p);
  }
  // ½ΔwᵀFΔw of the entry update equals its cost 10.36.
  const { F } = bruteObs(G, A, W, 2, 2, [1]);
  const got = await w.read();
  assertClose([quad(F, got.map((x, i) => x - W[i]))], [10.36], 1e-5, 0, "½ΔwᵀFΔw");
  model.dispose();
});

Deno.test("R1/R2/R5: OBS updates equal the brute-force constrained minimum for element, row and column sets", async () => {
  const rng = new Rng(21);
  const R = 5, C = 4;
  const G = randSpd(R, rng), A = randSpd(C, rng);
  const W = Array.from(rng.normals(R * C), (x) => x + Math.sign(x) * 0.1);
  const { model, curv } = await layer(G, A, W, R, C);
  const lins = model.linears(), w = lins[0].weight;
  const sets: { what: string; Q: number[]; rows?: number[]; cols?: number[] }[] = [
    { what: "single element", Q: [7] },
    { what: "scattered elements", Q: [0, 3, 6, 13, 14, 19] },
    { what: "rows 1 and 3", Q: [4, 5, 6, 7, 12, 13, 14, 15], rows: [1, 3] },
    { what: "columns 0 and 2", Q: [0, 2, 4, 6, 8, 10, 12, 14, 16, 18], cols: [0, 2] },
  ];
  for (const s of sets) {
    w.write(Float32Array.from(W));
    const p = await prepareModules(lins, curv, { obd: false, dampG: 0, dampA: 0 });
    if (s.rows || s.cols) await structuredUpdate(p[0], s.rows ?? [], s.cols ?? [], upd);
    else {
      const m = new Float32Array(R * C);
      for (const q of s.Q) m[q] = 1;
      await elementUpdate(p[0], await Tensor.from(m, [R, C]), upd);
    }
    const got = await w.read();
    const ref = bruteObs(G, A, W, R, C, s.Q);
    const delta = Array.from(got, (x, i) => x - W[i]);
    assertClose(delta, ref.d, 2e-4, 2e-5, `Δw for ${s.what}`);
    // Removed entries are exactly zero (bitwise).
    for (const q of s.Q) assert.ok(Object.is(got[q], 0), `${s.what}: entry ${q} is ${got[q]}`);
    assertClose([quad(ref.F, delta)], [ref.cost], 2e-4, 0, `cost of ${s.what}`);
    disposePrepared(p);
  }
  // Single-element OBS cost = brute-force cost (closed form of §5.1).
  w.write(Float32Array.from(W));
  const p = await prepareModules(lins, curv, { obd: false, dampG: 0, dampA: 0 });
  const costs = await elementCosts(p[0], { obd: false }).read();
  for (const q of [0, 7, 19]) {
    assertClose([costs[q]], [bruteObs(G, A, W, R, C, [q]).cost], 1e-4, 0, `cost ${q}`);
  }
  const rc = rowColCosts(p[0], { obd: false });
  const rows = await rc.rows.read(), cols = await rc.cols.read();
  const rowQ = (r: number) => [0, 1, 2, 3].map((c) => r * C + c);
  const colQ = (c: number) => [0, 1, 2, 3, 4].map((r) => r * C + c);
  for (let r = 0; r < R; r++) {
    assertClose([rows[r]], [bruteObs(G, A, W, R, C, rowQ(r)).cost], 1e-4, 0, `row ${r}`);
  }
  for (let c = 0; c < C; c++) {
    assertClose([cols[c]], [bruteObs(G, A, W, R, C, colQ(c)).cost], 1e-4, 0, `col ${c}`);
  }
  disposePrepared(p);

  // R5: the row update does not depend on A, the column update not on G.
  const runs: Float32Array[] = [];
  for (const [gs, as] of [[1, 1], [1, 7], [7, 1]]) {
    const c2: Curvature = new Map([[NAME, {
      G: [await Tensor.from(G.map((x) => x * gs), [R, R])],
      A: [await Tensor.from(A.map((x) => x * as), [C, C])],
      D: null,
      kind: "kfac" as const,
    }]]);
    for (const which of ["row", "col"]) {
      w.write(Float32Array.from(W));
      const q = await prepareModules(lins, c2, { obd: false, dampG: 0.01, dampA: 0.01 });
      await structuredUpdate(q[0], which === "row" ? [2] : [], which === "col" ? [1] : [], upd);
      runs.push(await w.read());
      disposePrepared(q);
    }
  }
  assertClose(runs[2], runs[0], 1e-5, 1e-6, "row update with A×7");
  assertClose(runs[5], runs[1], 1e-5, 1e-6, "column update with G×7");
  model.dispose();
});

Deno.test("R6: damped inverse of [[2,1],[1,4]] with λ = 0.1 (GPU), dead indices decoupled", async () => {
  const want = [0.483690, -0.112486, -0.112486, 0.258718];
  // G is the 2×2 example; A has a dead middle column (A_11 = 0): its live 2×2 block is the same
  // matrix, inverted with its own mean diagonal, and the dead index gets an identity row/column.
  const { model, curv } = await layer(
    [2, 1, 1, 4],
    [2, 9, 1, 9, 0, 9, 1, 9, 4],
    [1, 2, 3, 4, 5, 6],
    2,
    3,
  );
  const p = await prepareModules(model.linears(), curv, { obd: false, dampG: 0.1, dampA: 0.1 });
  assertClose(await p[0].Ghat!.read(), want, 3e-6, 0, "Ĝ");
  assertClose(
    await p[0].Ahat!.read(),
    [want[0], 0, want[1], 0, 1, 0, want[2], 0, want[3]],
    3e-6,
    0,
    "Â with a dead index",
  );
  assert.deepEqual(Array.from(p[0].keepC), [1, 0, 1]);
  disposePrepared(p);
  model.dispose();
});

Deno.test("R14: chunked element updates — addupdate equals sequential OBS steps, without it the sum of independent steps", async () => {
  const rng = new Rng(77);
  const R = 4, C = 5;
  const G = randSpd(R, rng), A = randSpd(C, rng);
  const W = Array.from(rng.normals(R * C), (x) => x + Math.sign(x) * 0.1);
  const { model, curv } = await layer(G, A, W, R, C);
  const lins = model.linears(), w = lins[0].weight;
  const P1 = [1, 3, 7], P2 = [10, 14, 17]; // rows (0, 0, 1) and (2, 2, 3): two chunks of 3 at k = 3
  const run = async (start: number[], Q: number[], o: typeof upd) => {
    w.write(Float32Array.from(start));
    const p = await prepareModules(lins, curv, { obd: false, dampG: 0.01, dampA: 0.01 });
    const m = new Float32Array(R * C);
    for (const q of Q) m[q] = 1;
    const chunks = await elementUpdate(p[0], await Tensor.from(m, [R, C]), o);
    disposePrepared(p);
    return { W: Array.from(await w.read()), chunks };
  };
  const both = [...P1, ...P2];
  const add = await run(W, both, { ...upd, maxCorrelate: 3, addupdate: true });
  const ind = await run(W, both, { ...upd, maxCorrelate: 3, addupdate: false });
  assert.equal(add.chunks, 2);
  // Sequential: OBS for P1 on W, then OBS for P2 on the result; finally zero P1 as the mask does.
  const s1 = await run(W, P1, upd);
  const s2 = await run(s1.W, P2, upd);
  const seq = s2.W.map((x, i) => (P1.includes(i) ? 0 : x));
  assertClose(add.W, seq, 2e-4, 2e-5, "addupdate vs sequential");
  // Independent: each chunk against the original W, updates summed.
  const i2 = await run(W, P2, upd);
  const sum = W.map((x, i) => (both.includes(i) ? 0 : s1.W[i] + i2.W[i] - x));
  assertClose(ind.W, sum, 2e-4, 2e-5, "independent chunks vs summed steps");
  assert.ok(
    Math.max(...add.W.map((x, i) => Math.abs(x - ind.W[i]))) > 1e-4,
    "the two modes differ",
  );
  model.dispose();
});

Deno.test("element OBS update with a chunk above the single-workgroup limit (blocked spdSolve path) equals brute force", async () => {
  const rng = new Rng(91);
  const R = 12, C = 16;
  const G = randSpd(R, rng), A = randSpd(C, rng);
  const W = Array.from(rng.normals(R * C), (x) => x + Math.sign(x) * 0.1);
  const { model, curv } = await layer(G, A, W, R, C);
  const lins = model.linears(), w = lins[0].weight;
  const Q = [...Array(R * C).keys()].filter((i) => i % 4 !== 1); // 144 entries in one chunk
  const p = await prepareModules(lins, curv, { obd: false, dampG: 0, dampA: 0 });
  const m = new Float32Array(R * C);
  for (const q of Q) m[q] = 1;
  assert.equal(await elementUpdate(p[0], await Tensor.from(m, [R, C]), upd), 1);
  const got = await w.read();
  const ref = bruteObs(G, A, W, R, C, Q);
  assertClose(Array.from(got, (x, i) => x - W[i]), ref.d, 1e-3, 1e-4, "Δw");
  disposePrepared(p);
  model.dispose();
});
