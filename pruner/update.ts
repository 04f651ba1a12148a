/**
 * Weight updates (ALGORITHM.md §7): OBD masking, the chunked element/N:M OBS update and the
 * correlated structured OBS update (rows, then columns), all in the closed forms with Ĝ and Â
 * (no eigen-decomposition). Everything runs on the GPU: the SPD systems of each chunk
 * (`Ĝ[p,p]`, `Â[κ,κ]`, the element chunk matrices `Cm`) with `spdSolve` (float64-like accuracy).
 *
 * @module
 */
import { matmul } from "../kernels/gemm.ts";
import { map } from "../kernels/elementwise.ts";
import { batchedSpdSolve, spdSolve } from "../kernels/linalg.ts";
import { gatherCols, gatherRows, submatrix, transpose } from "../kernels/matrix.ts";
import { Tensor } from "../kernels/tensor.ts";
import {
  batchedChunkMatrix,
  chunkMatrix,
  gatherFlat,
  gatherFlatPadded,
  PAD,
  readAll,
  rowColMap,
  scatterAddFlat,
  scatterAddFlatPadded,
  scatterAddRows,
  splitAugmented,
} from "../curvature/_ops.ts";
import { applyFinv, obsStepK2, rhsK2, type TwoTermBasis } from "./krank2.ts";
import type { Prepared } from "./prepare.ts";
import { chunkSizes } from "./structure.ts";

/** Options of the OBS updates. */
export interface UpdateOptions {
  /** Chunk size for correlated updates (0 = all at once, −1 = one row per chunk; element only). */
  maxCorrelate: number;
  /** Cut over-long rows into chunks of `maxCorrelate` (element update). */
  strictmax: boolean;
  /** Each chunk sees the compensation of the earlier chunks. */
  addupdate: boolean;
  /** η: W ← W + η·E before masking. */
  updateScale: number;
}

/** Writes the prepared (updated) augmented weight back into the module and frees nothing. */
export function writeBack(p: Prepared): void {
  rowColMap("select(0.0, a, u != 0.0 && v != 0.0)", p.W, { u: p.keepRT, v: p.keepCT, out: p.W });
  splitAugmented(p.W, p.lin.weight, p.lin.bias);
}

/** OBD: zero the masked entries (`mask` `[R, C]` of 0/1) and write back. */
export function applyMask(p: Prepared, mask: Tensor): void {
  rowColMap("select(a, 0.0, b != 0.0)", p.W, { b: mask, out: p.W });
  writeBack(p);
}

/** OBD for rows/columns: zero rows with `rowMask[r] = 1` and columns with `colMask[c] = 1`. */
export function applyRowColMask(p: Prepared, rowMask: Tensor, colMask: Tensor): void {
  rowColMap("select(a, 0.0, u != 0.0 || v != 0.0)", p.W, { u: rowMask, v: colMask, out: p.W });
  writeBack(p);
}

/**
 * Element / N:M OBS update (§7.3): Q = masked live entries in row-major order, split into chunks
 * by {@link chunkSizes}; for each chunk P solve `Cm z = v` on the GPU (`spdSolve`, float64-like)
 * with `Cm[i,j] = Ĝ[r_i,r_j]·Â[c_i,c_j]` and `v = W[P] (+ E[P] with addupdate)`, and accumulate
 * `Y[ρ,:] += Z_ρ·Â`; finally `E = −Ĝ·Y`, `W ← W + η·E` with the mask zeroed. The host only reads
 * the mask once to list Q. Returns the number of chunks solved.
 */
export async function elementUpdate(
  p: Prepared,
  mask: Tensor,
  opts: UpdateOptions,
): Promise<number> {
  const { R, C } = p;
  const { q, perRow } = await maskedEntries(p, mask);
  if (p.basis) return await elementUpdateK2(p, p.basis, mask, q, perRow, opts);
  const sizes = chunkSizes(perRow, opts.maxCorrelate, opts.strictmax);
  if (!opts.addupdate && sizes.length > 1 && Math.max(...sizes) <= BATCH_MAX) {
    return await elementUpdateBatched(p, mask, q, sizes, opts);
  }
  const rt = p.W.rt;
  const Y = Tensor.emptySync(rt, [R, C], "f32", "Y = Z·Â");
  let start = 0;
  for (const [ci, size] of sizes.entries()) {
    const P = q.slice(start, start + size);
    start += size;
    const rows = [...new Set(P.map((x) => Math.floor(x / C)))].sort((a, b) => a - b);
    const rowPos = new Map(rows.map((r, i) => [r, i]));
    const local = Uint32Array.from(P, (x) => rowPos.get(Math.floor(x / C))! * C + (x % C));
    const t = {
      rows: Tensor.fromSync(rt, Uint32Array.from(rows), [rows.length], "u32", "ρ"),
      flat: Tensor.fromSync(rt, Uint32Array.from(P), [size], "u32", "P"),
      local: Tensor.fromSync(rt, local, [size], "u32", "P in ρ"),
      ri: Tensor.fromSync(rt, Uint32Array.from(P, (x) => Math.floor(x / C)), [size], "u32", "r_i"),
      ci: Tensor.fromSync(rt, Uint32Array.from(P, (x) => x % C), [size], "u32", "c_i"),
    };
    const v = gatherFlat(p.W, t.flat, "v = W[P]");
    if (opts.addupdate && ci > 0) {
      const Gr = gatherRows(p.Ghat!, t.rows);
      const Er = matmul(Gr, Y, { alpha: -1, name: "E[ρ,:]" });
      const e = gatherFlat(Er, t.local);
      map("o + b", [v, e], [], { out: v });
      Gr.dispose(), Er.dispose(), e.dispose();
    }
    const Cm = chunkMatrix(p.Ghat!, p.Ahat!, t.ri, t.ci);
    const z = await solveChunk(Cm, v, `OBS chunk ${ci} (${size} entries) of ${p.lin.name}`);
    const Z = Tensor.emptySync(rt, [rows.length, C], "f32", "Z_ρ");
    scatterAddFlat(Z, t.local, z);
    const ZA = matmul(Z, p.Ahat!, { name: "Z_ρ·Â" });
    scatterAddRows(Y, t.rows, ZA);
    for (const x of [v, Cm, z, Z, ZA, ...Object.values(t)]) x.dispose();
  }
  const E = matmul(p.Ghat!, Y, { alpha: -1, name: "E" });
  rowColMap("a + s0 * b", p.W, {
    b: E,
    s: [opts.updateScale],
    out: p.W,
  });
  rowColMap("select(a, 0.0, b != 0.0)", p.W, { b: mask, out: p.W });
  E.dispose(), Y.dispose();
  writeBack(p);
  return sizes.length;
}

/**
 * Solves one chunk system: small ones in a single workgroup (`batchedSpdSolve`, one read-back),
 * large ones with the blocked `spdSolve`. Both refine to float64-like accuracy.
 */
async function solveChunk(Cm: Tensor, v: Tensor, name: string): Promise<Tensor> {
  const n = v.size;
  if (n > BATCH_MAX) return await spdSolve(Cm, v, { name });
  const M3 = Cm.reshape([1, n, n]), v2 = v.reshape([1, n]);
  try {
    const z = await batchedSpdSolve(M3, v2, { name });
    const out = z.reshape([n]);
    z.dispose();
    return out;
  } finally {
    M3.dispose(), v2.dispose();
  }
}

/** Largest chunk solved by the batched path (one workgroup per system). */
const BATCH_MAX = 128;

/**
 * Independent chunks (no addupdate) solved at once: every chunk is padded to the largest size,
 * `Cm` assembled for all chunks by one kernel, one `batchedSpdSolve`, `Z` scattered, and
 * `E = −Ĝ·Z·Â` by two GEMMs.
 */
async function elementUpdateBatched(
  p: Prepared,
  mask: Tensor,
  q: number[],
  sizes: number[],
  opts: UpdateOptions,
): Promise<number> {
  const { R, C } = p;
  const rt = p.W.rt;
  const n = Math.max(...sizes), b = sizes.length;
  const flat = new Uint32Array(b * n).fill(PAD);
  const ri = new Uint32Array(b * n).fill(PAD), ci = new Uint32Array(b * n).fill(PAD);
  let start = 0;
  sizes.forEach((size, s) => {
    for (let i = 0; i < size; i++) {
      const x = q[start + i];
      flat[s * n + i] = x;
      ri[s * n + i] = Math.floor(x / C);
      ci[s * n + i] = x % C;
    }
    start += size;
  });
  const t = {
    flat: Tensor.fromSync(rt, flat, [b * n], "u32", "Q batch"),
    ri: Tensor.fromSync(rt, ri, [b * n], "u32", "r_i batch"),
    ci: Tensor.fromSync(rt, ci, [b * n], "u32", "c_i batch"),
  };
  const Cm = batchedChunkMatrix(p.Ghat!, p.Ahat!, t.ri, t.ci, b, n);
  const v = gatherFlatPadded(p.W, t.flat, [b, n]);
  const z = await batchedSpdSolve(Cm, v, { name: `OBS chunks (${b} × ${n}) of ${p.lin.name}` });
  const Z = Tensor.emptySync(rt, [R, C], "f32", "Z");
  scatterAddFlatPadded(Z, t.flat, z);
  const ZA = matmul(Z, p.Ahat!);
  const E = matmul(p.Ghat!, ZA, { alpha: -1, name: "E" });
  rowColMap("a + s0 * b", p.W, { b: E, s: [opts.updateScale], out: p.W });
  rowColMap("select(a, 0.0, b != 0.0)", p.W, { b: mask, out: p.W });
  for (const x of [Cm, v, z, Z, ZA, E, ...Object.values(t)]) x.dispose();
  writeBack(p);
  return b;
}

/** The masked live entries Q (flat, row-major) of a module and their count per row. */
async function maskedEntries(
  p: Prepared,
  mask: Tensor,
): Promise<{ q: number[]; perRow: number[] }> {
  const { R, C } = p;
  const [mRaw] = await readAll([mask]);
  const M = new Float32Array(mRaw);
  const q: number[] = [];
  const perRow = new Array(R).fill(0);
  for (let r = 0; r < R; r++) {
    if (!p.keepR[r]) continue;
    for (let c = 0; c < C; c++) {
      if (M[r * C + c] !== 0 && p.keepC[c]) {
        q.push(r * C + c);
        perRow[r]++;
      }
    }
  }
  return { q, perRow };
}

/**
 * krank-2 element/N:M update: the same chunks as krank 1, each an exact OBS step under
 * `F = G₀⊗A₀ + G₁⊗A₁` (`Z` accumulated; with addupdate the right-hand side includes `−F⁻¹Z` so far).
 */
async function elementUpdateK2(
  p: Prepared,
  b: TwoTermBasis,
  mask: Tensor,
  q: number[],
  perRow: number[],
  opts: UpdateOptions,
): Promise<number> {
  const sizes = chunkSizes(perRow, opts.maxCorrelate, opts.strictmax);
  const Zt = Tensor.emptySync(p.W.rt, [p.R, p.C], "f32", "ΣZ");
  let start = 0;
  for (const [ci, size] of sizes.entries()) {
    const P = q.slice(start, start + size);
    start += size;
    const E = opts.addupdate && ci > 0 ? applyFinv(b, Zt) : null;
    if (E) map("-o", [E], [], { out: E });
    const v = rhsK2(p.W, E, P);
    const Z = await obsStepK2(p, b, P, v);
    map("o + b", [Zt, Z], [], { out: Zt });
    E?.dispose(), v.dispose(), Z.dispose();
  }
  const E = applyFinv(b, Zt);
  rowColMap("a - s0 * b", p.W, { b: E, s: [opts.updateScale], out: p.W });
  rowColMap("select(a, 0.0, b != 0.0)", p.W, { b: mask, out: p.W });
  E.dispose(), Zt.dispose();
  writeBack(p);
  return sizes.length;
}

function chunksOf(idx: number[], k: number): number[][] {
  if (k < 0) {
    throw new Error(`--max_correlate ${k}: negative values are only valid for element/N:M pruning`);
  }
  if (k === 0 || idx.length <= k) return idx.length ? [idx] : [];
  const out: number[][] = [];
  for (let i = 0; i < idx.length; i += k) out.push(idx.slice(i, i + k));
  return out;
}

/**
 * Structured OBS update (§7.2): for each chunk p of removed rows
 * `U = −Ĝ[:,p]·Ĝ[p,p]⁻¹·V` with `V = W[p,:] (+ E[p,:])` and `U[p,:] = −W[p,:]`; then for each chunk κ
 * of removed columns `U = −V·Â[κ,κ]⁻¹·Â[κ,:]` with `U[:,κ] = −W[:,κ]`; `W ← W + η·E`, removed rows
 * and columns zeroed. `rowsOut`/`colsOut` are live indices (ascending).
 */
export async function structuredUpdate(
  p: Prepared,
  rowsOut: number[],
  colsOut: number[],
  opts: UpdateOptions,
): Promise<void> {
  const { R, C } = p;
  if (p.basis) return await structuredUpdateK2(p, p.basis, rowsOut, colsOut, opts);
  const rt = p.W.rt;
  const E = Tensor.emptySync(rt, [R, C], "f32", "E");
  for (const chunk of chunksOf(rowsOut, opts.maxCorrelate)) {
    const idx = Tensor.fromSync(rt, Uint32Array.from(chunk), [chunk.length], "u32", "p");
    const V = gatherRows(p.W, idx);
    if (opts.addupdate) {
      const Ep = gatherRows(E, idx);
      rowColMap("a + b", V, { b: Ep, out: V });
      Ep.dispose();
    }
    const Gpp = submatrix(p.Ghat!, idx, idx);
    const T1 = await spdSolve(Gpp, V, { name: `Ĝ[p,p] of ${p.lin.name}` });
    const Gp = gatherRows(p.Ghat!, idx);
    const U = matmul(Gp, T1, { transA: true, alpha: -1, name: "U" });
    const rm = new Float32Array(R);
    for (const r of chunk) rm[r] = 1;
    const rmT = Tensor.fromSync(rt, rm, [R], "f32", "rows p");
    rowColMap("select(a, 0.0, a != a) * (1.0 - u) - u * b", U, { b: p.W, u: rmT, out: U });
    rowColMap("a + b", E, { b: U, out: E });
    for (const t of [idx, V, Gpp, T1, Gp, U, rmT]) t.dispose();
  }
  for (const chunk of chunksOf(colsOut, opts.maxCorrelate)) {
    const k = chunk.length;
    const idx = Tensor.fromSync(rt, Uint32Array.from(chunk), [k], "u32", "κ");
    const V = gatherCols(p.W, idx);
    if (opts.addupdate) {
      const Ek = gatherCols(E, idx);
      rowColMap("a + b", V, { b: Ek, out: V });
      Ek.dispose();
    }
    // T1 = V·Â[κ,κ]⁻¹ = (Â[κ,κ]⁻¹·Vᵀ)ᵀ (Â symmetric).
    const Akk = submatrix(p.Ahat!, idx, idx);
    const Vt = transpose(V);
    const T1t = await spdSolve(Akk, Vt, { name: `Â[κ,κ] of ${p.lin.name}` });
    const T1 = transpose(T1t);
    const Ak = gatherRows(p.Ahat!, idx);
    const U = matmul(T1, Ak, { alpha: -1, name: "U" });
    const cm = new Float32Array(C);
    for (const c of chunk) cm[c] = 1;
    const cmT = Tensor.fromSync(rt, cm, [C], "f32", "cols κ");
    rowColMap("select(a, 0.0, a != a) * (1.0 - v) - v * b", U, { b: p.W, v: cmT, out: U });
    rowColMap("a + b", E, { b: U, out: E });
    for (const t of [V, Akk, Vt, T1t, T1, idx, Ak, U, cmT]) t.dispose();
  }
  finishStructured(p, E, rowsOut, colsOut, opts.updateScale);
}

/**
 * krank-2 structured update: for each chunk of rows (then columns) an exact OBS step with Q = the
 * chunk's live entries, `U = −F⁻¹Z`, `U[p,:] = −W[p,:]` (resp. `U[:,κ] = −W[:,κ]`), summed into E.
 */
async function structuredUpdateK2(
  p: Prepared,
  b: TwoTermBasis,
  rowsOut: number[],
  colsOut: number[],
  opts: UpdateOptions,
): Promise<void> {
  const { R, C } = p;
  const rt = p.W.rt;
  const E = Tensor.emptySync(rt, [R, C], "f32", "E");
  const liveCols = [...Array(C).keys()].filter((c) => p.keepC[c]);
  const liveRows = [...Array(R).keys()].filter((r) => p.keepR[r]);
  const steps: { Q: number[]; rm: Float32Array; cm: Float32Array }[] = [];
  for (const chunk of chunksOf(rowsOut, opts.maxCorrelate)) {
    const rm = new Float32Array(R);
    for (const r of chunk) rm[r] = 1;
    steps.push({
      Q: chunk.flatMap((r) => liveCols.map((c) => r * C + c)),
      rm,
      cm: new Float32Array(C),
    });
  }
  for (const chunk of chunksOf(colsOut, opts.maxCorrelate)) {
    const cm = new Float32Array(C);
    for (const c of chunk) cm[c] = 1;
    const Q = liveRows.flatMap((r) => chunk.map((c) => r * C + c)).sort((x, y) => x - y);
    steps.push({ Q, rm: new Float32Array(R), cm });
  }
  for (const st of steps) {
    const v = rhsK2(p.W, opts.addupdate ? E : null, st.Q);
    const Z = await obsStepK2(p, b, st.Q, v);
    const U = applyFinv(b, Z);
    const rmT = Tensor.fromSync(rt, st.rm, [R], "f32", "rows p");
    const cmT = Tensor.fromSync(rt, st.cm, [C], "f32", "cols κ");
    rowColMap("select(-select(a, 0.0, a != a), -b, u != 0.0 || v != 0.0)", U, {
      b: p.W,
      u: rmT,
      v: cmT,
      out: U,
    });
    rowColMap("a + b", E, { b: U, out: E });
    for (const t of [v, Z, U, rmT, cmT]) t.dispose();
  }
  finishStructured(p, E, rowsOut, colsOut, opts.updateScale);
}

/** `W ← W + η·E` with the removed rows and columns set to exactly zero; frees E; writes back. */
function finishStructured(
  p: Prepared,
  E: Tensor,
  rowsOut: number[],
  colsOut: number[],
  eta: number,
): void {
  const rm = new Float32Array(p.R), cm = new Float32Array(p.C);
  for (const r of rowsOut) rm[r] = 1;
  for (const c of colsOut) cm[c] = 1;
  const rmT = Tensor.fromSync(p.W.rt, rm, [p.R], "f32", "rows out");
  const cmT = Tensor.fromSync(p.W.rt, cm, [p.C], "f32", "cols out");
  rowColMap("select(a + s0 * b, 0.0, u != 0.0 || v != 0.0)", p.W, {
    b: E,
    u: rmT,
    v: cmT,
    s: [eta],
    out: p.W,
  });
  E.dispose(), rmT.dispose(), cmT.dispose();
  writeBack(p);
}
