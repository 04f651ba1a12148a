/**
 * Layout helpers for row-major matrices: transpose, diagonal access, identity, and the row/column
 * gathers and scatters the pruner needs (sub-matrices over kept indices, zeroing pruned rows).
 *
 * Gathers and scatters share one kernel generator ({@link gatherRows}, {@link gatherCols},
 * {@link submatrix}, {@link scatterSubmatrix}, {@link setRows}, {@link setCols}, {@link padCols});
 * it works on the raw 4-byte words, so it serves f32, u32 and i32 tensors alike, and it splits
 * tensors larger than one storage binding (e.g. an OPT embedding looked up by token ids) into
 * row chunks. Indices are `u32` tensors; an index outside the matrix is skipped (the output
 * element keeps its previous value, zero for a new tensor).
 *
 * @module
 */
import { GpuError, grid, packParams, type Runtime } from "./device.ts";
import { Tensor } from "./tensor.ts";

const WG = 256;

function asMatrix(t: Tensor, what: string): [number, number] {
  if (t.shape.length < 1) throw new GpuError(what, `${t} must be at least 1-D`);
  return [t.rows, t.cols];
}

function checkIdx(idx: Tensor | null, what: string): void {
  if (idx && idx.dtype !== "u32") throw new GpuError(what, `index tensor ${idx} must be u32`);
}

function f32Bits(x: number): number {
  return new Uint32Array(new Float32Array([x]).buffer)[0];
}

/** Rows per chunk so that `rows·ld` words fit one binding. */
function chunkRows(rt: Runtime, ld: number): number {
  const lim = Math.floor(rt.maxBinding / 4) - rt.offsetAlign / 4;
  return Math.max(1, Math.floor(lim / Math.max(ld, 1)));
}

function window(
  rt: Runtime,
  t: Tensor,
  start: number,
  count: number,
): { range: ReturnType<Tensor["range"]>; off: number } {
  const align = rt.offsetAlign / 4;
  const s0 = Math.floor(start / align) * align;
  const n = Math.max(1, Math.min(start + count, t.size) - s0);
  return { range: t.range(s0, n), off: start - s0 };
}

interface IndexOp {
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

/** Runs a gather/scatter, chunking both sides by rows to stay within the binding limit. */
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
  const itChunk = hasPlain ? chunkRows(rt, o.cols) : o.rows;
  const ixChunk = chunkRows(rt, idxLd);
  for (let i0 = 0; i0 < o.rows; i0 += itChunk) {
    const ni = Math.min(itChunk, o.rows - i0);
    const pw = hasPlain ? window(rt, o.plain!, i0 * o.cols, ni * o.cols) : null;
    for (let x0 = 0; x0 < idxRows; x0 += ixChunk) {
      const nx = Math.min(ixChunk, idxRows - x0);
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
    }
  }
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
  indexOp({
    mode: "gather",
    plain: out,
    indexed: a,
    rowIdx: null,
    colIdx: null,
    rows: R,
    cols,
  });
  return out;
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
  if (out.rows !== R || out.cols > C) {
    throw new GpuError("unpadCols", `cannot copy ${src} into ${out}`);
  }
  indexOp({
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
  indexOp({
    mode: "gather",
    plain: out,
    indexed: a,
    rowIdx: idx,
    colIdx: null,
    rows: idx.size,
    cols: C,
  });
  return out;
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
  indexOp({
    mode: "gather",
    plain: out,
    indexed: a,
    rowIdx,
    colIdx,
    rows,
    cols,
  });
  return out;
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
  checkIdx(rowIdx, "scatterSubmatrix");
  checkIdx(colIdx, "scatterSubmatrix");
  const rows = rowIdx ? rowIdx.size : R, cols = colIdx ? colIdx.size : C;
  if (src.size !== rows * cols) {
    throw new GpuError("scatterSubmatrix", `source ${src} must have ${rows}×${cols} elements`);
  }
  indexOp({
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

function simple(rt: Runtime, name: string, decl: string, body: string) {
  return rt.kernel(
    name,
    `${decl}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let i = gid.x + gid.y * nw.x * ${WG}u;
  ${body}
}`,
  );
}

/**
 * The transpose of a matrix, or of each matrix of a 3-D batch: `[.., R, C]` → `[.., C, R]`.
 *
 * @param a the tensor (2-D or 3-D, any 4-byte dtype, within one binding)
 * @example Usage
 * ```ts ignore
 * const wt = transpose(w);
 * ```
 */
export function transpose(a: Tensor): Tensor {
  if (a.shape.length < 2 || a.shape.length > 3) {
    throw new GpuError("transpose", `${a} must be 2-D or 3-D`);
  }
  const [R, C] = a.shape.slice(-2);
  const shape = a.shape.length === 3 ? [a.shape[0], C, R] : [C, R];
  const out = new Tensor(a.rt, shape, a.dtype, `${a.name}_T`);
  if (a.size === 0) return out;
  const k = simple(
    a.rt,
    "transpose",
    `@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
struct P { n: u32, R: u32, C: u32, p0: u32 };
@group(0) @binding(2) var<uniform> p: P;`,
    `if (i >= p.n) { return; }
  let per = p.R * p.C;
  let b = i / per;
  let rem = i - b * per;
  let r = rem / p.C;
  let c = rem - r * p.C;
  dst[b * per + c * p.R + r] = src[i];`,
  );
  a.rt.dispatch(
    k,
    [a.range(), out.range()],
    packParams(a.size, R, C, 0),
    grid(Math.ceil(a.size / WG)),
  );
  return out;
}

function square(a: Tensor, what: string): number {
  if (a.shape.length !== 2 || a.shape[0] !== a.shape[1]) {
    throw new GpuError(what, `${a} must be a square matrix`);
  }
  return a.shape[0];
}

/**
 * The diagonal of a square matrix as a vector `[n]`.
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
  if (n === 0) return out;
  const k = simple(
    a.rt,
    "diag",
    `@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
struct P { n: u32, p0: u32, p1: u32, p2: u32 };
@group(0) @binding(2) var<uniform> p: P;`,
    `if (i >= p.n) { return; }
  dst[i] = src[i * p.n + i];`,
  );
  a.rt.dispatch(k, [a.range(), out.range()], packParams(n, 0, 0, 0), grid(Math.ceil(n / WG)));
  return out;
}

/**
 * Adds `v` to the diagonal of a square f32 matrix in place: a number is added to every diagonal
 * entry, a tensor of `n` values entry by entry (a tensor of 1 value is broadcast).
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
  if (n === 0) return a;
  if (typeof v !== "number" && v.size !== n && v.size !== 1) {
    throw new GpuError(
      "addDiag",
      `${v} must have ${n} (or 1) elements to add to the diagonal of ${a}`,
    );
  }
  const isT = typeof v !== "number";
  const k = simple(
    a.rt,
    isT ? "addDiag_t" : "addDiag_s",
    `@group(0) @binding(0) var<storage, read_write> m: array<f32>;
${isT ? "@group(0) @binding(1) var<storage, read> v: array<f32>;" : ""}
struct P { n: u32, len: u32, s: f32, p2: u32 };
@group(0) @binding(${isT ? 2 : 1}) var<uniform> p: P;`,
    `if (i >= p.n) { return; }
  m[i * p.n + i] = m[i * p.n + i] + ${isT ? "v[i % p.len]" : "p.s"};`,
  );
  const bindings = [a.range()];
  if (isT) bindings.push(v.range());
  const params = new ArrayBuffer(16);
  const dv = new DataView(params);
  dv.setUint32(0, n, true);
  dv.setUint32(4, isT ? v.size : 1, true);
  dv.setFloat32(8, isT ? 0 : v, true);
  a.rt.dispatch(k, bindings, params, grid(Math.ceil(n / WG)));
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
  const d = Math.min(r, c);
  if (d === 0) return t;
  const k = simple(
    t.rt,
    "eye",
    `@group(0) @binding(0) var<storage, read_write> m: array<f32>;
struct P { d: u32, c: u32, p1: u32, p2: u32 };
@group(0) @binding(1) var<uniform> p: P;`,
    `if (i >= p.d) { return; }
  m[i * p.c + i] = 1.0;`,
  );
  t.rt.dispatch(k, [t.range()], packParams(d, c, 0, 0), grid(Math.ceil(d / WG)));
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
