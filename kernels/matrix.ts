/**
 * Layout helpers for row-major matrices: transpose, diagonal access, identity, and the row/column
 * gathers and scatters the pruner needs (sub-matrices over kept indices, zeroing pruned rows).
 *
 * Gathers and scatters share one kernel generator ({@link gatherRows}, {@link gatherCols},
 * {@link submatrix}, {@link scatterSubmatrix}, {@link setRows}, {@link setCols}, {@link padCols});
 * it works on the raw 4-byte words, so it serves f32, u32 and i32 tensors alike, and it splits
 * tensors larger than one storage binding (e.g. an OPT embedding looked up by token ids) into
 * row chunks. Indices are `u32` tensors; an index outside the matrix is skipped (the output
 * element keeps its previous value, zero for a new tensor). Diagonal access ({@link diag},
 * {@link addDiag}, {@link eye}) shares a second generator.
 *
 * Tensors larger than one storage binding (`maxStorageBufferBindingSize`, 128 MiB on software
 * adapters) work in every function: a tensor that fits is bound whole (one dispatch), a larger
 * one in aligned windows (row chunks; diagonal runs; transpose blocks that fit on both sides).
 * Only gathers and scatters refuse a single row larger than one binding, naming the tensor.
 *
 * @module
 */
import { type BufferRange, f32, GpuError, grid, packParams, type Runtime } from "./device.ts";
import { Tensor } from "./tensor.ts";

const WG = 256;

/** Refuses f16 tensors: these kernels move whole 4-byte words (f32, u32, i32). */
function checkWords(t: Tensor, what: string): void {
  if (t.dtype === "f16") {
    throw new GpuError(
      what,
      `${t}: f16 tensors are not supported here; widen with toF32 (kernels/cast.ts) first`,
    );
  }
}

function asMatrix(t: Tensor, what: string): [number, number] {
  if (t.shape.length < 1) throw new GpuError(what, `${t} must be at least 1-D`);
  checkWords(t, what);
  return [t.rows, t.cols];
}

function checkIdx(idx: Tensor | null, what: string): void {
  if (idx && idx.dtype !== "u32") throw new GpuError(what, `index tensor ${idx} must be u32`);
}

function f32Bits(x: number): number {
  return new Uint32Array(new Float32Array([x]).buffer)[0];
}

/**
 * Words one binding window may span: the binding limit less the slack that aligning a window's
 * start down to the storage offset alignment can add.
 */
function windowLimit(rt: Runtime): number {
  return Math.floor(rt.maxBinding / 4) - rt.offsetAlign / 4;
}

/** Whether all of `t` fits one binding (then it is bound whole, as one dispatch). */
function fitsBinding(t: Tensor): boolean {
  return t.size * 4 <= t.rt.maxBinding;
}

/**
 * Rows per chunk so that `rows·ld` words fit one binding window; a single row that does not fit
 * is refused with an error naming `t`.
 */
function chunkRows(rt: Runtime, ld: number, t: Tensor, what: string): number {
  const lim = windowLimit(rt);
  if (ld > lim) {
    throw new GpuError(
      what,
      `a row of ${t} (${ld} elements, ${ld * 4} bytes) is larger than one storage binding ` +
        `(${rt.maxBinding} bytes)`,
    );
  }
  return Math.floor(lim / Math.max(ld, 1));
}

/**
 * A binding for the elements `[start, start + count)` of `t`: the window starts at the aligned
 * element at or below `start`; `off` is `start` relative to the window.
 */
function window(
  rt: Runtime,
  t: Tensor,
  start: number,
  count: number,
): { range: BufferRange; off: number } {
  const align = rt.offsetAlign / 4;
  const s0 = Math.floor(start / align) * align;
  const n = Math.max(1, Math.min(start + count, t.size) - s0);
  return { range: t.range(s0, n), off: start - s0 };
}

interface IndexOp {
  /** The public function, for error messages. */
  op: string;
  /** "gather": plain[i, j] = idx[rowMap(i), colMap(j)]; "scatter": the reverse (or a value). */
  mode: "gather" | "scatter";
  /** The tensor addressed by (i, j) directly. Null in scatter-a-value mode. */
  plain: Tensor | null;
  /** The tensor addressed through the index maps. */
  indexed: Tensor;
  rowIdx: Tensor | null;
  colIdx: Tensor | null;
  /** Iteration space. */
  rows: number;
  cols: number;
  /** Value written in scatter-a-value mode. */
  value?: number;
}

function indexSource(mode: string, hasPlain: boolean, hasR: boolean, hasC: boolean): string {
  const decl: string[] = [];
  let b = 0;
  if (hasPlain) {
    decl.push(
      `@group(0) @binding(${b++}) var<storage, ${
        mode === "gather" ? "read_write" : "read"
      }> plain: array<u32>;`,
    );
  }
  decl.push(
    `@group(0) @binding(${b++}) var<storage, ${
      mode === "gather" ? "read" : "read_write"
    }> ind: array<u32>;`,
  );
  if (hasR) decl.push(`@group(0) @binding(${b++}) var<storage, read> ridx: array<u32>;`);
  if (hasC) decl.push(`@group(0) @binding(${b++}) var<storage, read> cidx: array<u32>;`);
  const assign = mode === "gather"
    ? "plain[pi] = ind[xi];"
    : hasPlain
    ? "ind[xi] = plain[pi];"
    : "ind[xi] = p.value;";
  return `${decl.join("\n")}
struct P { rows: u32, cols: u32, row0: u32, plainOff: u32, plainLd: u32, idxRow0: u32, idxRows: u32,
  idxOff: u32, idxLd: u32, idxCols: u32, value: u32, p0: u32 };
@group(0) @binding(${b}) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let lin = gid.x + gid.y * nw.x * ${WG}u;
  if (lin >= p.rows * p.cols) { return; }
  let i = lin / p.cols;
  let j = lin % p.cols;
  let r = ${hasR ? "ridx[p.row0 + i]" : "p.row0 + i"};
  let c = ${hasC ? "cidx[j]" : "j"};
  if (r < p.idxRow0 || r >= p.idxRow0 + p.idxRows || c >= p.idxCols) { return; }
  let pi = p.plainOff + i * p.plainLd + j;
  let xi = p.idxOff + (r - p.idxRow0) * p.idxLd + c;
  ${assign}
}`;
}

/**
 * Runs a gather/scatter. Tensors that fit one binding are bound whole (one dispatch); larger ones
 * are cut into row chunks. Without row indices, iteration row `i` is row `i` of the indexed side,
 * so each chunk pairs with one window of it; with row indices, every chunk of the plain side
 * visits every chunk of the indexed side.
 */
function indexOp(o: IndexOp): void {
  const rt = o.indexed.rt;
  if (o.rows === 0 || o.cols === 0) return;
  // The indexed side as a matrix; its columns bound the column indices.
  const idxRows = o.indexed.shape.slice(0, -1).reduce((a, b) => a * b, 1);
  const idxLd = o.indexed.cols, idxCols = idxLd;
  const hasPlain = o.plain !== null;
  const kernel = rt.kernel(
    `index2d_${o.mode}_${hasPlain ? "t" : "v"}${o.rowIdx ? "r" : ""}${o.colIdx ? "c" : ""}`,
    indexSource(o.mode, hasPlain, o.rowIdx !== null, o.colIdx !== null),
  );
  const plainChunk = !hasPlain || fitsBinding(o.plain!)
    ? o.rows
    : chunkRows(rt, o.cols, o.plain!, o.op);
  const idxChunk = fitsBinding(o.indexed) ? idxRows : chunkRows(rt, idxLd, o.indexed, o.op);
  const record = (i0: number, ni: number, x0: number, nx: number) => {
    const pw = hasPlain ? window(rt, o.plain!, i0 * o.cols, ni * o.cols) : null;
    const xw = window(rt, o.indexed, x0 * idxLd, nx * idxLd);
    const bindings = [];
    if (pw) bindings.push(pw.range);
    bindings.push(xw.range);
    if (o.rowIdx) bindings.push(o.rowIdx.range());
    if (o.colIdx) bindings.push(o.colIdx.range());
    const params = packParams(
      ni,
      o.cols,
      i0,
      pw ? pw.off : 0,
      o.cols,
      x0,
      nx,
      xw.off,
      idxLd,
      idxCols,
      f32Bits(o.value ?? 0),
      0,
    );
    rt.dispatch(kernel, bindings, params, grid(Math.ceil((ni * o.cols) / WG)));
  };
  if (!o.rowIdx) {
    const step = Math.min(plainChunk, idxChunk);
    for (let i0 = 0; i0 < Math.min(o.rows, idxRows); i0 += step) {
      const ni = Math.min(step, o.rows - i0);
      record(i0, ni, i0, Math.min(ni, idxRows - i0));
    }
    return;
  }
  for (let i0 = 0; i0 < o.rows; i0 += plainChunk) {
    const ni = Math.min(plainChunk, o.rows - i0);
    for (let x0 = 0; x0 < idxRows; x0 += idxChunk) {
      record(i0, ni, x0, Math.min(idxChunk, idxRows - x0));
    }
  }
}

/** Runs a gather into the new tensor `out`, freeing it when the gather is refused. */
function gatherInto(out: Tensor, o: Omit<IndexOp, "mode" | "plain">): Tensor {
  try {
    indexOp({ ...o, mode: "gather", plain: out });
  } catch (e) {
    out.dispose();
    throw e;
  }
  return out;
}

/**
 * Copies a `[rows, c]` matrix into a new `[rows, cols]` one (`cols ≥ c`), zero-filling the new
 * columns. Leading dimensions are kept (a 3-D tensor pads its last dimension). Used by the GEMM
 * to reach vec4 alignment.
 *
 * @param a the tensor to pad
 * @param cols the new size of the last dimension
 * @example Usage
 * ```ts ignore
 * const p = padCols(x, 772); // [T, 769] → [T, 772]
 * ```
 */
export function padCols(a: Tensor, cols: number): Tensor {
  const [R, C] = asMatrix(a, "padCols");
  if (cols < C) throw new GpuError("padCols", `cannot pad ${a} to ${cols} columns`);
  const out = new Tensor(a.rt, [...a.shape.slice(0, -1), cols], a.dtype, `${a.name}_padded`);
  return gatherInto(out, {
    op: "padCols",
    indexed: a,
    rowIdx: null,
    colIdx: null,
    rows: R,
    cols,
  });
}

/**
 * Copies the leading `out.cols` columns of `src` into `out` (the inverse of {@link padCols}).
 * Both have the same number of rows.
 *
 * @param src `[rows, c]` with `c ≥ out.cols`
 * @param out `[rows, n]`, overwritten
 * @example Usage
 * ```ts ignore
 * unpadCols(padded, x); // [T, 772] → [T, 769]
 * ```
 */
export function unpadCols(src: Tensor, out: Tensor): Tensor {
  const [R, C] = asMatrix(src, "unpadCols");
  checkWords(out, "unpadCols");
  if (out.rows !== R || out.cols > C) {
    throw new GpuError("unpadCols", `cannot copy ${src} into ${out}`);
  }
  indexOp({
    op: "unpadCols",
    mode: "gather",
    plain: out,
    indexed: src,
    rowIdx: null,
    colIdx: null,
    rows: R,
    cols: out.cols,
  });
  return out;
}

/**
 * Rows `idx` of `a`: `out[i, :] = a[idx[i], :]` (`[len(idx), C]`). Works on tensors larger than
 * one binding (embedding lookups).
 *
 * @param a `[R, C]` (f32, u32 or i32)
 * @param idx u32 row indices
 * @example Usage
 * ```ts ignore
 * const x = gatherRows(embedding, tokenIds); // [T, d]
 * ```
 */
export function gatherRows(a: Tensor, idx: Tensor): Tensor {
  const [, C] = asMatrix(a, "gatherRows");
  checkIdx(idx, "gatherRows");
  const out = new Tensor(a.rt, [idx.size, C], a.dtype, `${a.name}_rows`);
  return gatherInto(out, {
    op: "gatherRows",
    indexed: a,
    rowIdx: idx,
    colIdx: null,
    rows: idx.size,
    cols: C,
  });
}

/**
 * Columns `idx` of `a`: `out[:, j] = a[:, idx[j]]` (`[R, len(idx)]`).
 *
 * @param a `[R, C]`
 * @param idx u32 column indices
 * @example Usage
 * ```ts ignore
 * const wKept = gatherCols(w, keptCols);
 * ```
 */
export function gatherCols(a: Tensor, idx: Tensor): Tensor {
  return submatrix(a, null, idx);
}

/**
 * `a[rowIdx][:, colIdx]` as a new `[len(rowIdx), len(colIdx)]` tensor; a null index keeps all
 * rows (or columns).
 *
 * @param a `[R, C]`
 * @param rowIdx u32 row indices, or null for all rows
 * @param colIdx u32 column indices, or null for all columns
 * @example Usage
 * ```ts ignore
 * const gSub = submatrix(G, keptRows, keptRows);
 * ```
 */
export function submatrix(a: Tensor, rowIdx: Tensor | null, colIdx: Tensor | null): Tensor {
  const [R, C] = asMatrix(a, "submatrix");
  checkIdx(rowIdx, "submatrix");
  checkIdx(colIdx, "submatrix");
  const rows = rowIdx ? rowIdx.size : R, cols = colIdx ? colIdx.size : C;
  const out = new Tensor(a.rt, [rows, cols], a.dtype, `${a.name}_sub`);
  return gatherInto(out, {
    op: "submatrix",
    indexed: a,
    rowIdx,
    colIdx,
    rows,
    cols,
  });
}

/**
 * `dst[rowIdx[i], colIdx[j]] = src[i, j]` in place (a null index means all rows/columns in
 * order). Duplicate indices write in an unspecified order.
 *
 * @param dst `[R, C]`, modified
 * @param src `[len(rowIdx), len(colIdx)]`
 * @param rowIdx u32 row indices into dst, or null
 * @param colIdx u32 column indices into dst, or null
 * @example Usage
 * ```ts ignore
 * scatterSubmatrix(W, wSubUpdated, keptRows, keptCols);
 * ```
 */
export function scatterSubmatrix(
  dst: Tensor,
  src: Tensor,
  rowIdx: Tensor | null,
  colIdx: Tensor | null,
): Tensor {
  const [R, C] = asMatrix(dst, "scatterSubmatrix");
  checkWords(src, "scatterSubmatrix");
  checkIdx(rowIdx, "scatterSubmatrix");
  checkIdx(colIdx, "scatterSubmatrix");
  const rows = rowIdx ? rowIdx.size : R, cols = colIdx ? colIdx.size : C;
  if (src.size !== rows * cols) {
    throw new GpuError("scatterSubmatrix", `source ${src} must have ${rows}×${cols} elements`);
  }
  indexOp({
    op: "scatterSubmatrix",
    mode: "scatter",
    plain: src,
    indexed: dst,
    rowIdx,
    colIdx,
    rows,
    cols,
  });
  return dst;
}

/**
 * Sets rows `idx` of `a` to `value` in place (e.g. zeroing pruned rows).
 *
 * @param a `[R, C]` f32, modified
 * @param idx u32 row indices
 * @param value the value to write
 * @example Usage
 * ```ts ignore
 * setRows(W, prunedRows, 0);
 * ```
 */
export function setRows(a: Tensor, idx: Tensor, value: number): Tensor {
  const [, C] = asMatrix(a, "setRows");
  checkIdx(idx, "setRows");
  indexOp({
    op: "setRows",
    mode: "scatter",
    plain: null,
    indexed: a,
    rowIdx: idx,
    colIdx: null,
    rows: idx.size,
    cols: C,
    value,
  });
  return a;
}

/**
 * Sets columns `idx` of `a` to `value` in place.
 *
 * @param a `[R, C]` f32, modified
 * @param idx u32 column indices
 * @param value the value to write
 * @example Usage
 * ```ts ignore
 * setCols(W, prunedCols, 0);
 * ```
 */
export function setCols(a: Tensor, idx: Tensor, value: number): Tensor {
  const [R] = asMatrix(a, "setCols");
  checkIdx(idx, "setCols");
  indexOp({
    op: "setCols",
    mode: "scatter",
    plain: null,
    indexed: a,
    rowIdx: null,
    colIdx: idx,
    rows: R,
    cols: idx.size,
    value,
  });
  return a;
}

/** Transposes the `nb × nr × nc` block whose corners the parameters give (see transposeBlocks). */
const TRANSPOSE_WGSL = `
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
struct P { n: u32, nr: u32, nc: u32, R: u32, C: u32, srcOff: u32, dstOff: u32, p0: u32 };
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let i = gid.x + gid.y * nw.x * ${WG}u;
  if (i >= p.n) { return; }
  let per = p.nr * p.nc;
  let b = i / per;
  let rem = i - b * per;
  let r = rem / p.nc;
  let c = rem - r * p.nc;
  let mat = b * p.R * p.C;
  dst[p.dstOff + mat + c * p.R + r] = src[p.srcOff + mat + r * p.C + c];
}`;

/** Matrices `[b0, b0 + nb)`, rows `[r0, r0 + nr)` and columns `[c0, c0 + nc)` of a transpose. */
interface TransposeBlock {
  b0: number;
  nb: number;
  r0: number;
  nr: number;
  c0: number;
  nc: number;
}

/**
 * Cuts the transpose of `B` matrices `[R, C]` into blocks whose source window
 * (`(nb−1)·R·C + (nr−1)·C + nc` words) and destination window (`(nb−1)·R·C + (nc−1)·R + nr`
 * words) each fit one binding: everything at once when the tensor fits, else whole matrices
 * when one fits, else blocks of whole source rows by as many columns as the destination allows.
 */
function transposeBlocks(rt: Runtime, B: number, R: number, C: number, fits: boolean) {
  const blocks: TransposeBlock[] = [];
  if (fits) return [{ b0: 0, nb: B, r0: 0, nr: R, c0: 0, nc: C }];
  const lim = windowLimit(rt), per = R * C;
  if (per <= lim) {
    const nb = Math.floor(lim / per);
    for (let b0 = 0; b0 < B; b0 += nb) {
      blocks.push({ b0, nb: Math.min(nb, B - b0), r0: 0, nr: R, c0: 0, nc: C });
    }
    return blocks;
  }
  const nr = Math.max(1, Math.min(R, Math.floor(lim / C)));
  const nc = Math.max(1, Math.min(C, lim - (nr - 1) * C, Math.floor((lim - nr) / R) + 1));
  for (let b0 = 0; b0 < B; b0++) {
    for (let r0 = 0; r0 < R; r0 += nr) {
      for (let c0 = 0; c0 < C; c0 += nc) {
        blocks.push({ b0, nb: 1, r0, nr: Math.min(nr, R - r0), c0, nc: Math.min(nc, C - c0) });
      }
    }
  }
  return blocks;
}

/**
 * The transpose of a matrix, or of each matrix of a 3-D batch: `[.., R, C]` → `[.., C, R]`.
 * Works on tensors larger than one storage binding (one dispatch per block that fits).
 *
 * @param a the tensor (2-D or 3-D, any 4-byte dtype)
 * @example Usage
 * ```ts ignore
 * const wt = transpose(w);
 * ```
 */
export function transpose(a: Tensor): Tensor {
  if (a.shape.length < 2 || a.shape.length > 3) {
    throw new GpuError("transpose", `${a} must be 2-D or 3-D`);
  }
  checkWords(a, "transpose");
  const [R, C] = a.shape.slice(-2);
  const B = a.shape.length === 3 ? a.shape[0] : 1;
  const shape = a.shape.length === 3 ? [B, C, R] : [C, R];
  const out = new Tensor(a.rt, shape, a.dtype, `${a.name}_T`);
  if (a.size === 0) return out;
  const rt = a.rt, per = R * C;
  const k = rt.kernel("transpose_blocks", TRANSPOSE_WGSL);
  for (const { b0, nb, r0, nr, c0, nc } of transposeBlocks(rt, B, R, C, fitsBinding(a))) {
    const src = window(rt, a, b0 * per + r0 * C + c0, (nb - 1) * per + (nr - 1) * C + nc);
    const dst = window(rt, out, b0 * per + c0 * R + r0, (nb - 1) * per + (nc - 1) * R + nr);
    const n = nb * nr * nc;
    rt.dispatch(
      k,
      [src.range, dst.range],
      packParams(n, nr, nc, R, C, src.off, dst.off, 0),
      grid(Math.ceil(n / WG)),
    );
  }
  return out;
}

function square(a: Tensor, what: string): number {
  if (a.shape.length !== 2 || a.shape[0] !== a.shape[1]) {
    throw new GpuError(what, `${a} must be a square matrix`);
  }
  checkWords(a, what);
  return a.shape[0];
}

/** What a diagonal kernel does with entry `i` (at word `i·stride` of the matrix). */
type DiagonalMode = "get" | "add" | "addVec" | "set";

function diagonalSource(mode: DiagonalMode): string {
  const decl = [
    mode === "get"
      ? "@group(0) @binding(0) var<storage, read> m: array<u32>;"
      : "@group(0) @binding(0) var<storage, read_write> m: array<f32>;",
  ];
  if (mode === "get") decl.push("@group(0) @binding(1) var<storage, read_write> d: array<u32>;");
  if (mode === "addVec") decl.push("@group(0) @binding(1) var<storage, read> v: array<f32>;");
  const body = {
    get: "d[p.i0 + i] = m[k];",
    add: "m[k] = m[k] + p.value;",
    addVec: "m[k] = m[k] + v[(p.i0 + i) % p.len];",
    set: "m[k] = p.value;",
  }[mode];
  return `${decl.join("\n")}
struct P { n: u32, stride: u32, off: u32, i0: u32, len: u32, p0: u32, p1: u32, value: f32 };
@group(0) @binding(${decl.length}) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let i = gid.x + gid.y * nw.x * ${WG}u;
  if (i >= p.n) { return; }
  let k = p.off + i * p.stride;
  ${body}
}`;
}

/**
 * Records `mode` on the entries `t[i·stride]`, `i < count` (a diagonal): one dispatch when `t`
 * fits one binding, else one per window of consecutive entries that fits.
 */
function diagonalOp(
  t: Tensor,
  count: number,
  stride: number,
  mode: DiagonalMode,
  extra: { out?: Tensor; vec?: Tensor; value?: number } = {},
): void {
  if (count === 0) return;
  const rt = t.rt;
  const kernel = rt.kernel(`diagonal_${mode}`, diagonalSource(mode));
  const step = fitsBinding(t) ? count : Math.floor((windowLimit(rt) - 1) / stride) + 1;
  for (let i0 = 0; i0 < count; i0 += step) {
    const n = Math.min(step, count - i0);
    const w = window(rt, t, i0 * stride, (n - 1) * stride + 1);
    const bindings = [w.range];
    if (extra.out) bindings.push(extra.out.range());
    if (extra.vec) bindings.push(extra.vec.range());
    const params = packParams(
      n,
      stride,
      w.off,
      i0,
      extra.vec?.size ?? 1,
      0,
      0,
      f32(extra.value ?? 0),
    );
    rt.dispatch(kernel, bindings, params, grid(Math.ceil(n / WG)));
  }
}

/**
 * The diagonal of a square matrix as a vector `[n]` (any 4-byte dtype; works on matrices larger
 * than one storage binding).
 *
 * @param a `[n, n]`
 * @example Usage
 * ```ts ignore
 * const d = diag(G);
 * ```
 */
export function diag(a: Tensor): Tensor {
  const n = square(a, "diag");
  const out = new Tensor(a.rt, [n], a.dtype, `diag(${a.name})`);
  diagonalOp(a, n, n + 1, "get", { out });
  return out;
}

/**
 * Adds `v` to the diagonal of a square f32 matrix in place: a number is added to every diagonal
 * entry, a tensor of `n` values entry by entry (a tensor of 1 value is broadcast). Works on
 * matrices larger than one storage binding.
 *
 * @param a `[n, n]` f32, modified
 * @param v the number or vector to add
 * @example Usage
 * ```ts ignore
 * addDiag(A, 0.01 * meanDiag); // damping
 * ```
 */
export function addDiag(a: Tensor, v: number | Tensor): Tensor {
  const n = square(a, "addDiag");
  for (const t of typeof v === "number" ? [a] : [a, v]) {
    if (t.dtype !== "f32") throw new GpuError("addDiag", `${t} must be f32`);
  }
  if (n === 0) return a;
  if (typeof v === "number") {
    diagonalOp(a, n, n + 1, "add", { value: v });
    return a;
  }
  if (v.size !== n && v.size !== 1) {
    throw new GpuError(
      "addDiag",
      `${v} must have ${n} (or 1) elements to add to the diagonal of ${a}`,
    );
  }
  diagonalOp(a, n, n + 1, "addVec", { vec: v });
  return a;
}

/**
 * An `[n, m]` identity matrix (ones on the main diagonal). With a runtime first it returns the
 * tensor directly; with sizes only it resolves the shared runtime first.
 *
 * @param rt the runtime
 * @param n rows
 * @param m columns (default n)
 * @example Usage
 * ```ts ignore
 * const I = eye(rt, 4);        // sync, [4, 4]
 * const J = await eye(3, 5);   // [3, 5]
 * ```
 */
export function eye(rt: Runtime, n: number, m?: number): Tensor;
/**
 * An `[n, m]` identity matrix on the shared runtime.
 *
 * @param n rows
 * @param m columns (default n)
 */
export function eye(n: number, m?: number): Promise<Tensor>;
/** Implementation of both {@link eye} overloads. */
export function eye(x: Runtime | number, n?: number, m?: number): Tensor | Promise<Tensor> {
  if (typeof x === "number") {
    return Tensor.zeros([x, n ?? x], "eye").then((t) => fillEye(t));
  }
  if (n === undefined) throw new GpuError("eye", "missing size");
  return fillEye(Tensor.emptySync(x, [n, m ?? n], "f32", "eye"));
}

function fillEye(t: Tensor): Tensor {
  const [r, c] = t.shape;
  diagonalOp(t, Math.min(r, c), c + 1, "set", { value: 1 });
  return t;
}

/**
 * The `n×n` identity on the shared runtime.
 *
 * @param n the size
 * @example Usage
 * ```ts ignore
 * const I = await identity(8);
 * ```
 */
export function identity(n: number): Promise<Tensor> {
  return eye(n);
}
