/**
 * Kronecker-factored algebra for curvature `F ≈ G ⊗ A` of a weight `W` (`[R, C]`, row-major,
 * `vec W` stacking rows): with `G` `[R, R]` (output side) and `A` `[C, C]` (input side),
 * `(G ⊗ A)·vec W = vec(G·W·Aᵀ)`. The products reduce to GEMMs; the row and column quadratic
 * forms of the structured costs (ALGORITHM.md §5.2) to a GEMM, an element-wise product and a
 * row/column sum.
 *
 * @module
 */
import { type BufferRange, GpuError, grid, packParams, type Runtime } from "./device.ts";
import { Tensor } from "./tensor.ts";
import { matmul } from "./gemm.ts";
import { map } from "./elementwise.ts";
import { reduce } from "./reduce.ts";
import { diag, transpose } from "./matrix.ts";
import { spdSolve } from "./linalg.ts";

function square(t: Tensor, what: string, name: string): number {
  if (t.shape.length !== 2 || t.shape[0] !== t.shape[1]) {
    throw new GpuError(what, `${name} ${t} must be a square matrix`);
  }
  return t.shape[0];
}

function matrix(t: Tensor, what: string, name: string): [number, number] {
  if (t.shape.length !== 2) throw new GpuError(what, `${name} ${t} must be a matrix`);
  return [t.shape[0], t.shape[1]];
}

/** The explicit product's kernel reads f32 words: other dtypes would be misread. */
function f32Factor(t: Tensor, name: string): void {
  if (t.dtype !== "f32") throw new GpuError("kron", `${name} ${t} must be f32`);
}

const KRON_WGSL = `
@group(0) @binding(0) var<storage, read> g: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;
struct P { n: u32, b: u32, c: u32, d: u32, row0: u32, gRow0: u32, gOff: u32, aRow0: u32,
  aOff: u32, oOff: u32, p0: u32, p1: u32 };
@group(0) @binding(3) var<uniform> p: P;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let e = gid.x + gid.y * nw.x * 256u;
  if (e >= p.n) { return; }
  let cols = p.b * p.d;
  let lr = e / cols;
  let col = e - lr * cols;
  let row = p.row0 + lr;
  let gi = p.gOff + (row / p.c - p.gRow0) * p.b + col / p.d;
  let ai = p.aOff + (row % p.c - p.aRow0) * p.d + col % p.d;
  o[p.oOff + e] = g[gi] * x[ai];
}`;

/**
 * Output rows `[row0, row0 + rows)` of a Kronecker product, with the rows of G (`[gRow0, ..)`)
 * and of A (`[aRow0, ..)`) they read.
 */
interface KronBlock {
  row0: number;
  rows: number;
  gRow0: number;
  gRows: number;
  aRow0: number;
  aRows: number;
}

/**
 * Cuts `kron` of `G` `[a, b]` and `A` `[c, d]` into row blocks whose windows fit one binding:
 * everything at once when all fits; else runs of whole G rows (each `c` output rows, all of A);
 * else, when the `c` output rows of one G row are too many, runs of A rows within one G row.
 */
function kronBlocks(rt: Runtime, dims: number[], fits: boolean, name: string): KronBlock[] {
  const [a, b, c, d] = dims;
  if (fits) return [{ row0: 0, rows: a * c, gRow0: 0, gRows: a, aRow0: 0, aRows: c }];
  const lim = Math.floor(rt.maxBinding / 4) - rt.offsetAlign / 4;
  const blocks: KronBlock[] = [];
  if (c * b * d <= lim) {
    const step = Math.floor(lim / (c * b * d));
    for (let i0 = 0; i0 < a; i0 += step) {
      const gRows = Math.min(step, a - i0);
      blocks.push({ row0: i0 * c, rows: gRows * c, gRow0: i0, gRows, aRow0: 0, aRows: c });
    }
    return blocks;
  }
  if (b * d > lim) {
    throw new GpuError(
      "kron",
      `a row of ${name} (${b * d} elements, ${b * d * 4} bytes) is larger than one storage ` +
        `binding (${rt.maxBinding} bytes)`,
    );
  }
  const step = Math.floor(lim / (b * d));
  for (let i = 0; i < a; i++) {
    for (let k0 = 0; k0 < c; k0 += step) {
      const aRows = Math.min(step, c - k0);
      blocks.push({ row0: i * c + k0, rows: aRows, gRow0: i, gRows: 1, aRow0: k0, aRows });
    }
  }
  return blocks;
}

/**
 * A binding for the elements `[start, start + count)` of `t`, starting at the aligned element at
 * or below `start`; `off` is `start` relative to the binding.
 */
function window(t: Tensor, start: number, count: number): { range: BufferRange; off: number } {
  const align = t.rt.offsetAlign / 4;
  const s0 = Math.floor(start / align) * align;
  return { range: t.range(s0, Math.max(1, start + count - s0)), off: start - s0 };
}

/**
 * The explicit Kronecker product `G ⊗ A`: `[a·c, b·d]` for `G` `[a, b]` and `A` `[c, d]`,
 * `out[i·c + k, j·d + l] = G[i, j]·A[k, l]`. Meant for small factors (tests, toy models); an
 * output (or factor) larger than one storage binding is written in row blocks, and only a
 * single output row over the limit is refused.
 *
 * @param G `[a, b]`
 * @param A `[c, d]`
 * @example Usage
 * ```ts ignore
 * const F = kron(G, A); // [R·C, R·C]
 * ```
 */
export function kron(G: Tensor, A: Tensor): Tensor {
  const [a, b] = matrix(G, "kron", "G");
  const [c, d] = matrix(A, "kron", "A");
  f32Factor(G, "G");
  f32Factor(A, "A");
  const rt = G.rt, name = `kron(${G.name}, ${A.name})`;
  if (a * b * c * d === 0) return new Tensor(rt, [a * c, b * d], "f32", name);
  const fits = Math.max(G.size, A.size, a * b * c * d) * 4 <= rt.maxBinding;
  const blocks = kronBlocks(rt, [a, b, c, d], fits, name); // refuses before allocating
  const out = new Tensor(rt, [a * c, b * d], "f32", name);
  const k = rt.kernel("kron_blocks", KRON_WGSL);
  for (const blk of blocks) {
    const gw = window(G, blk.gRow0 * b, blk.gRows * b);
    const aw = window(A, blk.aRow0 * d, blk.aRows * d);
    const ow = window(out, blk.row0 * b * d, blk.rows * b * d);
    const n = blk.rows * b * d;
    rt.dispatch(
      k,
      [gw.range, aw.range, ow.range],
      packParams(n, b, c, d, blk.row0, blk.gRow0, gw.off, blk.aRow0, aw.off, ow.off, 0, 0),
      grid(Math.ceil(n / 256)),
    );
  }
  return out;
}

/**
 * `G·X·Aᵀ`, i.e. `(G ⊗ A)·vec X` for row-major `vec`. With inverse factors (`G⁻¹`, `A⁻¹`) it is
 * the inverse-factored form `(G ⊗ A)⁻¹·vec X`; symmetric factors need no transpose.
 *
 * @param G `[R, R]`
 * @param A `[C, C]`
 * @param X `[R, C]`
 * @example Usage
 * ```ts ignore
 * const Y = kronMatVec(Ginv, Ainv, W); // (G ⊗ A)⁻¹ vec W
 * ```
 */
export function kronMatVec(G: Tensor, A: Tensor, X: Tensor): Tensor {
  const R = square(G, "kronMatVec", "G"), C = square(A, "kronMatVec", "A");
  const [xr, xc] = matrix(X, "kronMatVec", "X");
  if (xr !== R || xc !== C) {
    throw new GpuError("kronMatVec", `X ${X} must be [${R}, ${C}] to match G ${G} and A ${A}`);
  }
  const GX = matmul(G, X, { name: "G·X" });
  const out = matmul(GX, A, { transB: true, name: `kronMatVec(${X.name})` });
  GX.dispose();
  return out;
}

/**
 * The inverse-factored product `(G_d ⊗ A_d)⁻¹·vec X = G_d⁻¹·X·A_d⁻¹` for symmetric positive
 * definite factors, through two SPD solves (Cholesky with refinement, kernels/linalg.ts) instead
 * of explicit inverses. `damp` applies the relative damping `M + λ·mean(diag M)·I` to both.
 *
 * @param G `[R, R]` SPD
 * @param A `[C, C]` SPD
 * @param X `[R, C]`
 * @param opts relative damping λ of both factors (default 0)
 * @example Usage
 * ```ts ignore
 * const Y = await kronSolve(G, A, W, { damp: 0.01 });
 * ```
 */
export async function kronSolve(
  G: Tensor,
  A: Tensor,
  X: Tensor,
  opts: { damp?: number } = {},
): Promise<Tensor> {
  const R = square(G, "kronSolve", "G"), C = square(A, "kronSolve", "A");
  const [xr, xc] = matrix(X, "kronSolve", "X");
  if (xr !== R || xc !== C) {
    throw new GpuError("kronSolve", `X ${X} must be [${R}, ${C}] to match G ${G} and A ${A}`);
  }
  const Y = await spdSolve(G, X, { damp: opts.damp, name: G.name }); // G⁻¹X
  const Yt = transpose(Y);
  Y.dispose();
  const Zt = await spdSolve(A, Yt, { damp: opts.damp, name: A.name }); // A⁻¹(G⁻¹X)ᵀ
  Yt.dispose();
  const Z = transpose(Zt);
  Zt.dispose();
  return Z;
}

/**
 * `diag(G)·diag(A)ᵀ` as `[R, C]`: the diagonal of `G ⊗ A` laid out like `W`.
 *
 * @param G `[R, R]`
 * @param A `[C, C]`
 * @example Usage
 * ```ts ignore
 * const d = kronDiag(Ginv, Ainv); // [F⁻¹]_(rc),(rc)
 * ```
 */
export function kronDiag(G: Tensor, A: Tensor): Tensor {
  const R = square(G, "kronDiag", "G"), C = square(A, "kronDiag", "A");
  const dg = diag(G), da = diag(A);
  const g2 = dg.reshape([R, 1]), a2 = da.reshape([1, C]);
  const out = matmul(g2, a2, { name: `kronDiag(${G.name}, ${A.name})` });
  for (const t of [dg, da, g2, a2]) t.dispose();
  return out;
}

/**
 * Per-row quadratic forms `q[i] = Σ_j (W·A)_ij·W_ij = W_i,: A W_i,:ᵀ` (`[R]`).
 *
 * @param W `[R, C]`
 * @param A `[C, C]`
 * @example Usage
 * ```ts ignore
 * const rowCost = rowQuadForm(W, A); // then × ½ / Ĝ_rr
 * ```
 */
export function rowQuadForm(W: Tensor, A: Tensor): Tensor {
  const [, C] = matrix(W, "rowQuadForm", "W");
  if (square(A, "rowQuadForm", "A") !== C) {
    throw new GpuError("rowQuadForm", `A ${A} must be [${C}, ${C}] to match W ${W}`);
  }
  const WA = matmul(W, A, { name: "W·A" });
  map("o * a", [W], [], { out: WA }); // WA ⊙ W in place (`o` is the output value, `a` is W)
  const q = reduce(WA, "sum", "rows");
  WA.dispose();
  return q;
}

/**
 * Per-column quadratic forms `q[j] = Σ_i (G·W)_ij·W_ij = W_:,jᵀ G W_:,j` (`[C]`).
 *
 * @param G `[R, R]`
 * @param W `[R, C]`
 * @example Usage
 * ```ts ignore
 * const colCost = colQuadForm(G, W); // then × ½ / Â_cc
 * ```
 */
export function colQuadForm(G: Tensor, W: Tensor): Tensor {
  const [R] = matrix(W, "colQuadForm", "W");
  if (square(G, "colQuadForm", "G") !== R) {
    throw new GpuError("colQuadForm", `G ${G} must be [${R}, ${R}] to match W ${W}`);
  }
  const GW = matmul(G, W, { name: "G·W" });
  map("o * a", [W], [], { out: GW });
  const q = reduce(GW, "sum", "cols");
  GW.dispose();
  return q;
}
