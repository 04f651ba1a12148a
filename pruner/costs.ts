/**
 * Local costs (ALGORITHM.md §5): predicted loss increase of removing one entry, one row or one
 * column, for every curvature, OBD and OBS. All on the GPU, in the full augmented space; dead
 * rows/columns get cost 0 and NaN costs become 0.
 *
 * @module
 */
import { map } from "../kernels/elementwise.ts";
import { Tensor } from "../kernels/tensor.ts";
import { rowColMap } from "../curvature/_ops.ts";
import { colQuadForm, rowQuadForm } from "../kernels/kron.ts";
import { reduce } from "../kernels/reduce.ts";
import { diag } from "../kernels/matrix.ts";
import { elementCostsK2, rowColCostsK2 } from "./krank2.ts";
import type { Prepared } from "./prepare.ts";

/** Options that change the cost formulas. */
export interface CostOptions {
  /** OBD costs (no compensation) instead of OBS. */
  obd: boolean;
  /** KFAC OBD element costs from the exact diagonal D (`--use_diagonal`). */
  useDiagonal?: boolean;
  /** With krank ≥ 2, compute OBS costs from rank 0 alone (`--rank1cost`). */
  rank1cost?: boolean;
}

const NAN0 = (x: string) => `select(${x}, 0.0, ${x} != ${x})`;

/** Σ_i diag(M_i) over a factor list, or null for an empty list. */
function sumDiag(ms: Tensor[], n: number): Tensor | null {
  if (ms.length === 0) return null;
  const acc = Tensor.emptySync(ms[0].rt, [n], "f32", "Σdiag");
  for (const m of ms) {
    const d = diag(m);
    map("o + b", [acc, d], [], { out: acc });
    d.dispose();
  }
  return acc;
}

/** krank ≥ 2 OBS costs come from the two-term basis unless `--rank1cost`. */
function useBasis(p: Prepared, opts: CostOptions): boolean {
  return !opts.obd && p.basis !== null && !opts.rank1cost;
}

/**
 * Element costs `[R, C]` of one prepared module (§5.1).
 */
export function elementCosts(p: Prepared, opts: CostOptions): Tensor {
  if (useBasis(p, opts)) return liveOnly(p, elementCostsK2(p, p.basis!));
  const W = p.W;
  let cost: Tensor;
  if (p.kind === "identity") {
    cost = rowColMap("0.5 * a * a", W, { name: "cost" });
  } else if (opts.obd) {
    if (p.kind === "kfac" && opts.useDiagonal) {
      if (!p.curv.D) {
        throw new Error(`pruner: --use_diagonal needs --diagonal curvature (module ${p.lin.name})`);
      }
      cost = rowColMap("0.5 * a * a * b", W, { b: p.curv.D, name: "cost" });
    } else if (p.kind === "activations") {
      const da = sumDiag(p.curv.A, p.C)!;
      cost = rowColMap("0.5 * a * a * v", W, { v: da, name: "cost" });
      da.dispose();
    } else {
      // Σ_i G_i[r,r]·A_i[c,c]
      const s = Tensor.emptySync(W.rt, [p.R, p.C], "f32", "Σ diagG⊗diagA");
      p.curv.G.forEach((g, i) => {
        const dg = diag(g), da = diag(p.curv.A[i]);
        rowColMap("a + u * v", s, { u: dg, v: da, out: s });
        dg.dispose(), da.dispose();
      });
      cost = rowColMap("0.5 * a * a * b", W, { b: s, name: "cost" });
      s.dispose();
    }
  } else {
    const dg = diag(p.Ghat!), da = diag(p.Ahat!);
    const expr = p.kind === "activations" ? "0.5 * a * a / v" : "0.5 * a * a / (u * v)";
    cost = rowColMap(expr, W, { u: dg, v: da, name: "cost" });
    dg.dispose(), da.dispose();
  }
  return liveOnly(p, cost);
}

/** Dead entries get cost 0; NaN costs become 0. */
function liveOnly(p: Prepared, cost: Tensor): Tensor {
  rowColMap(`${NAN0("a")} * u * v`, cost, { u: p.keepRT, v: p.keepCT, out: cost });
  return cost;
}

/** Dead rows/columns get cost 0; NaN costs become 0. */
function liveRowsCols(
  p: Prepared,
  rc: { rows: Tensor; cols: Tensor },
): { rows: Tensor; cols: Tensor } {
  map(`${NAN0("o")} * b`, [rc.rows, p.keepRT], [], { out: rc.rows });
  map(`${NAN0("o")} * b`, [rc.cols, p.keepCT], [], { out: rc.cols });
  return rc;
}

/**
 * Row costs `[R]` and column costs `[C]` of one prepared module (§5.2).
 */
export function rowColCosts(p: Prepared, opts: CostOptions): { rows: Tensor; cols: Tensor } {
  if (useBasis(p, opts)) return liveRowsCols(p, rowColCostsK2(p, p.basis!));
  const W = p.W;
  let rows: Tensor, cols: Tensor;
  if (p.kind === "identity") {
    rows = reduce(W, "sumsq", "rows");
    cols = reduce(W, "sumsq", "cols");
    map("sqrt(max(o, 0.0))", [rows], [], { out: rows });
    map("sqrt(max(o, 0.0))", [cols], [], { out: cols });
  } else if (p.kind === "activations" && opts.obd) {
    // [ref]: ½ Σ_c W²_rc (ΣA)_cc for rows, ½ (ΣA)_cc Σ_r W²_rc for columns.
    const da = sumDiag(p.curv.A, p.C)!;
    const e = rowColMap("0.5 * a * a * v", W, { v: da });
    rows = reduce(e, "sum", "rows");
    cols = reduce(e, "sum", "cols");
    da.dispose(), e.dispose();
  } else if (opts.obd) {
    // KFAC OBD: ½ Σ_i G_i[r,r]·W_r A_i W_rᵀ and ½ Σ_i A_i[c,c]·W_cᵀ G_i W_c.
    rows = Tensor.emptySync(W.rt, [p.R], "f32", "rowcost");
    cols = Tensor.emptySync(W.rt, [p.C], "f32", "colcost");
    p.curv.G.forEach((g, i) => {
      const a = p.curv.A[i];
      const qr = rowQuadForm(W, a), qc = colQuadForm(g, W);
      const dg = diag(g), da = diag(a);
      map("o + 0.5 * b * c", [rows, qr, dg], [], { out: rows });
      map("o + 0.5 * b * c", [cols, qc, da], [], { out: cols });
      for (const t of [qr, qc, dg, da]) t.dispose();
    });
  } else {
    // OBS rank 0: ½ W_r A W_rᵀ / Ĝ_rr and ½ W_cᵀ G W_c / Â_cc (numerators undamped, [ref]).
    const dg = diag(p.Ghat!), da = diag(p.Ahat!);
    rows = rowQuadForm(W, p.curv.A[0]);
    map("0.5 * o / b", [rows, dg], [], { out: rows });
    cols = p.kind === "activations" ? reduce(W, "sumsq", "cols") : colQuadForm(p.curv.G[0], W);
    map("0.5 * o / b", [cols, da], [], { out: cols });
    dg.dispose(), da.dispose();
  }
  return liveRowsCols(p, { rows, cols });
}
