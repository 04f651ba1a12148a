/**
 * Two Kronecker terms (`krank` = 2, ALGORITHM.md §4.3, §5.1–§5.2, §7.2–§7.3), research path:
 * `F = G₀⊗A₀ + G₁⊗A₁` is inverted through the generalised eigenbasis `K₁ = L₁⁻ᵀE₁`,
 * `K₂ = L₂⁻ᵀE₂` (quirk Q5 fixed: [ref] uses `L⁻¹E`), `s = s₁s₂ᵀ + 1`, so that
 * `F⁻¹ = (K₁⊗K₂)·diag(1/s)·(K₁⊗K₂)ᵀ` and `F⁻¹ vec X = vec(K₁[(K₁ᵀXK₂) ⊘ s]K₂ᵀ)`.
 *
 * Costs use O(RC² + R²C) closed forms (no explicit Kronecker rows); the OBS updates solve the
 * exact constrained problem for each chunk with an explicit `[F⁻¹]_QQ`, whose assembly costs
 * `O(|Q|·R·C)` memory — feasible for small layers or small `--max_correlate` only (as in [ref]).
 *
 * @module
 */
import { map } from "../kernels/elementwise.ts";
import { matmul } from "../kernels/gemm.ts";
import { cholesky, spdSolve, triangularSolve } from "../kernels/linalg.ts";
import { diag } from "../kernels/matrix.ts";
import { eigh } from "../kernels/eigh.ts";
import { reduce } from "../kernels/reduce.ts";
import { Tensor } from "../kernels/tensor.ts";
import { gatherFlat, kronRows, readAll, rowColMap, scatterAddFlat } from "../curvature/_ops.ts";
import type { Prepared } from "./prepare.ts";

/** The generalised eigenbasis of one module's two Kronecker terms (full size, dead indices decoupled). */
export interface TwoTermBasis {
  /** Cholesky factors of the damped G₀, A₀. */
  L1: Tensor;
  L2: Tensor;
  /** Eigenvectors of L₁⁻¹G₁L₁⁻ᵀ and L₂⁻¹A₁L₂⁻ᵀ (columns). */
  E1: Tensor;
  E2: Tensor;
  /** K₁ = L₁⁻ᵀE₁ `[R, R]`, K₂ = L₂⁻ᵀE₂ `[C, C]`. */
  K1: Tensor;
  K2: Tensor;
  /** 1/s `[R, C]`. */
  invS: Tensor;
}

/** Frees a basis. */
export function disposeBasis(b: TwoTermBasis | null): void {
  if (!b) return;
  for (const t of [b.L1, b.L2, b.E1, b.E2, b.K1, b.K2, b.invS]) t.dispose();
}

/** Live sub-factor embedded in the full size: dead rows/columns zeroed, `deadDiag` on their diagonal. */
function embedLive(m: Tensor, keep: Tensor, deadDiag: number): Tensor {
  return rowColMap("select(select(0.0, s0, r == c && u == 0.0), a, u != 0.0 && v != 0.0)", m, {
    u: keep,
    v: keep,
    s: [deadDiag],
    name: "live factor",
  });
}

/**
 * Builds the two-term basis of a prepared module with `krank` ≥ 2 (ranks beyond 1 are ignored).
 * Damping (§4.3): `δg = (λg·d̄)^¼`, `δa = (λa·d̄)^¼` with `d̄` the mean of `Σᵢ diag Gᵢ ⊗ diag Aᵢ`
 * over live entries (or of D when available), added to both terms. With `eigenfix`, a
 * non-positive `s` is shifted to a small positive minimum; without it a non-positive `s` is an
 * error (the two terms are not jointly positive definite).
 */
export async function twoTermBasis(
  p: Prepared,
  damp: { dampG: number; dampA: number; eigenfix?: boolean },
): Promise<TwoTermBasis> {
  const { R, C } = p;
  const [G0, G1] = p.curv.G, [A0, A1] = p.curv.A;
  const nR = p.keepR.reduce((a, b) => a + b, 0), nC = p.keepC.reduce((a, b) => a + b, 0);
  const diags = [diag(G0), diag(G1), diag(A0), diag(A1)];
  const extra = p.curv.D ? [p.curv.D] : [];
  const raw = await readAll([...diags, ...extra]);
  diags.forEach((t) => t.dispose());
  const [g0, g1, a0, a1] = raw.slice(0, 4).map((b) => new Float32Array(b));
  const liveSum = (d: Float32Array, keep: Uint8Array) =>
    d.reduce((s, x, i) => s + (keep[i] ? x : 0), 0);
  let dbar: number;
  if (p.curv.D) {
    const D = new Float32Array(raw[4]);
    let s = 0;
    for (let r = 0; r < R; r++) {
      for (let c = 0; c < C; c++) if (p.keepR[r] && p.keepC[c]) s += D[r * C + c];
    }
    dbar = s / Math.max(nR * nC, 1);
  } else {
    dbar =
      (liveSum(g0, p.keepR) * liveSum(a0, p.keepC) + liveSum(g1, p.keepR) * liveSum(a1, p.keepC)) /
      Math.max(nR * nC, 1);
  }
  const dg = Math.pow(Math.max(damp.dampG * dbar, 0), 0.25),
    da = Math.pow(Math.max(damp.dampA * dbar, 0), 0.25);
  const side = async (F0: Tensor, F1: Tensor, keep: Tensor, delta: number, what: string) => {
    const M0 = embedLive(F0, keep, 1), M1 = embedLive(F1, keep, 0);
    rowColMap("a + select(0.0, s0, r == c && u != 0.0)", M0, { u: keep, s: [delta], out: M0 });
    rowColMap("a + select(0.0, s0, r == c && u != 0.0)", M1, { u: keep, s: [delta], out: M1 });
    const L = await cholesky(M0, { name: `${what}₀ + δI of ${p.lin.name}` });
    const X = triangularSolve(L, M1, { lower: true });
    const Mt = triangularSolve(L, X, { lower: true, transpose: true, side: "right" });
    const { values, vectors } = await eigh(Mt, { name: `L⁻¹${what}₁L⁻ᵀ of ${p.lin.name}` });
    const K = triangularSolve(L, vectors, { lower: true, transpose: true });
    M0.dispose(), M1.dispose(), X.dispose(), Mt.dispose();
    return { L, E: vectors, K, s: values };
  };
  const g = await side(G0, G1, p.keepRT, dg, "G");
  const a = await side(A0, A1, p.keepCT, da, "A");
  const [s1raw, s2raw] = await readAll([g.s, a.s]);
  const s1 = new Float32Array(s1raw), s2 = new Float32Array(s2raw);
  // Dead indices have s₁ = 0 (or s₂ = 0), so s = 1 there; the minimum over the live block decides.
  let smin = Infinity, smax = -Infinity;
  for (const x of s1) {
    for (const y of s2) {
      const v = x * y + 1;
      smin = Math.min(smin, v);
      smax = Math.max(smax, v);
    }
  }
  let shift = 0;
  if (!(smin > 0)) {
    if (!damp.eigenfix) {
      throw new Error(
        `pruner: krank 2 curvature of ${p.lin.name} is not positive definite (min s = ${smin}); pass --eigenfix`,
      );
    }
    shift = -smin + 1e-6 * Math.max(Math.abs(smax), 1);
  }
  const invS = rowColMap(
    "1.0 / (u * v + 1.0 + s0)",
    Tensor.emptySync(p.W.rt, [R, C], "f32", "1/s"),
    {
      u: g.s,
      v: a.s,
      s: [shift],
      name: "1/s",
    },
  );
  g.s.dispose(), a.s.dispose();
  return { L1: g.L, L2: a.L, E1: g.E, E2: a.E, K1: g.K, K2: a.K, invS };
}

/** `F⁻¹ vec X = vec(K₁[(K₁ᵀXK₂) ⊘ s]K₂ᵀ)` for an `[R, C]` matrix. */
export function applyFinv(b: TwoTermBasis, X: Tensor): Tensor {
  const T1 = matmul(b.K1, X, { transA: true });
  const T2 = matmul(T1, b.K2);
  rowColMap("a * b", T2, { b: b.invS, out: T2 });
  const T3 = matmul(b.K1, T2);
  const out = matmul(T3, b.K2, { transB: true, name: "F⁻¹X" });
  T1.dispose(), T2.dispose(), T3.dispose();
  return out;
}

/** Element OBS costs `½W²/[F⁻¹]_(rc),(rc)` with `diag F⁻¹ = (K₁⊙K₁)(1/s)(K₂⊙K₂)ᵀ` (§5.1). */
export function elementCostsK2(p: Prepared, b: TwoTermBasis): Tensor {
  const K1sq = map("a * a", [b.K1]), K2sq = map("a * a", [b.K2]);
  const T = matmul(K1sq, b.invS);
  const Dinv = matmul(T, K2sq, { transB: true });
  const cost = rowColMap("0.5 * a * a / b", p.W, { b: Dinv, name: "cost" });
  for (const t of [K1sq, K2sq, T, Dinv]) t.dispose();
  return cost;
}

/**
 * Row and column OBS costs (§5.2, with the ½ that [ref] lacks): row r costs
 * `½ W_r Z_r⁻¹ W_rᵀ = ½ Σ_c (W L₂E₂)²_rc / ((K₁⊙K₁)(1/s))_rc` and column c costs
 * `½ Σ_r (E₁ᵀL₁ᵀW)²_rc / ((1/s)(K₂⊙K₂)ᵀ)_rc` — the `Z_r`, `Y_c` forms at O(RC² + R²C).
 */
export function rowColCostsK2(p: Prepared, b: TwoTermBasis): { rows: Tensor; cols: Tensor } {
  const K1sq = map("a * a", [b.K1]), K2sq = map("a * a", [b.K2]);
  const Drow = matmul(K1sq, b.invS), Dcol = matmul(b.invS, K2sq, { transB: true });
  const WL = matmul(p.W, b.L2), Y = matmul(WL, b.E2);
  const LW = matmul(b.L1, p.W, { transA: true }), X = matmul(b.E1, LW, { transA: true });
  const qr = rowColMap("0.5 * a * a / b", Y, { b: Drow }),
    qc = rowColMap("0.5 * a * a / b", X, { b: Dcol });
  const rows = reduce(qr, "sum", "rows"), cols = reduce(qc, "sum", "cols");
  for (const t of [K1sq, K2sq, Drow, Dcol, WL, Y, LW, X, qr, qc]) t.dispose();
  return { rows, cols };
}

const MAX_ASSEMBLY = 1 << 26;

/**
 * One exact OBS step for the entries `Q` (flat indices into `[R, C]`, live only) with right-hand
 * side `v`: solves `[F⁻¹]_QQ z = v` with `[F⁻¹]_QQ = ℰℰᵀ`, `ℰ[i, (a,b)] = K₁[r_i,a]K₂[c_i,b]/√s_ab`,
 * and returns `Z` (`[R, C]`, z placed at Q) so that the update is `−F⁻¹ vec Z`.
 */
export async function obsStepK2(
  p: Prepared,
  b: TwoTermBasis,
  Q: number[],
  v: Tensor,
): Promise<Tensor> {
  const { R, C } = p;
  const n = Q.length, rt = p.W.rt;
  if (n * R * C > MAX_ASSEMBLY) {
    throw new Error(
      `pruner: krank 2 OBS chunk of ${n} entries of ${p.lin.name} needs a ${n}×${
        R * C
      } assembly; ` +
        `use a smaller --max_correlate (or --rank1cost with krank 1 updates)`,
    );
  }
  const ri = Tensor.fromSync(rt, Uint32Array.from(Q, (x) => Math.floor(x / C)), [n], "u32", "r_i");
  const ci = Tensor.fromSync(rt, Uint32Array.from(Q, (x) => x % C), [n], "u32", "c_i");
  const flat = Tensor.fromSync(rt, Uint32Array.from(Q), [n], "u32", "Q");
  const w = map("sqrt(a)", [b.invS]);
  const E = kronRows(b.K1, b.K2, ri, ci, w);
  const Cm = matmul(E, E, { transB: true, name: "[F⁻¹]_QQ" });
  try {
    const z = await spdSolve(Cm, v, { name: `krank-2 OBS block (${n} entries) of ${p.lin.name}` });
    const Z = Tensor.emptySync(rt, [R, C], "f32", "Z");
    scatterAddFlat(Z, flat, z);
    z.dispose();
    return Z;
  } finally {
    for (const t of [ri, ci, flat, w, E, Cm]) t.dispose();
  }
}

/** Gathers `W[Q] (+ E[Q])` as the right-hand side of an OBS step. */
export function rhsK2(W: Tensor, E: Tensor | null, Q: number[]): Tensor {
  const rt = W.rt;
  const flat = Tensor.fromSync(rt, Uint32Array.from(Q), [Q.length], "u32", "Q");
  const v = gatherFlat(W, flat, "v");
  if (E) {
    const e = gatherFlat(E, flat);
    map("o + b", [v, e], [], { out: v });
    e.dispose();
  }
  flat.dispose();
  return v;
}
