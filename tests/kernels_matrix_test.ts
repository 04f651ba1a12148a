import assert from "node:assert/strict";
import {
  addDiag,
  diag,
  eye,
  gatherCols,
  gatherRows,
  identity,
  padCols,
  scatterSubmatrix,
  setCols,
  setRows,
  submatrix,
  transpose,
  unpadCols,
} from "../kernels/matrix.ts";
import { gpu } from "../kernels/device.ts";
import { Tensor } from "../kernels/tensor.ts";
import { Rng } from "./_util.ts";

const f = (x: ArrayLike<number>) => Float32Array.from(x);
const idx = (x: number[]) => Tensor.from(Uint32Array.from(x), [x.length], "u32");

Deno.test("transpose() swaps the last two axes of 2-D and 3-D tensors", async () => {
  const rng = new Rng(51);
  for (const shape of [[1, 1], [3, 17], [257, 2], [2, 3, 5]]) {
    const [R, C] = shape.slice(-2), B = shape.length === 3 ? shape[0] : 1;
    const x = f(rng.normals(B * R * C));
    const T = transpose(await Tensor.from(x, shape));
    assert.deepEqual(T.shape, shape.length === 3 ? [B, C, R] : [C, R]);
    const want = new Float32Array(x.length);
    for (let b = 0; b < B; b++) {
      for (let r = 0; r < R; r++) {
        for (let c = 0; c < C; c++) want[b * R * C + c * R + r] = x[b * R * C + r * C + c];
      }
    }
    assert.deepEqual(await T.read(), want);
  }
});

Deno.test("diag(), addDiag(), eye() and identity() handle the diagonal", async () => {
  const rt = await gpu();
  const n = 5, x = f(Array.from({ length: n * n }, (_, i) => i));
  const X = await Tensor.from(x, [n, n]);
  assert.deepEqual([...await diag(X).read()], [0, 6, 12, 18, 24]);
  addDiag(X, 0.5);
  addDiag(X, await Tensor.from(f([1, 2, 3, 4, 5])));
  assert.deepEqual([...await diag(X).read()], [1.5, 8.5, 15.5, 22.5, 29.5]);
  assert.equal((await X.read())[1], 1); // off-diagonal untouched
  const I = eye(rt, 3, 4);
  assert.deepEqual([...await I.read()], [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]);
  assert.deepEqual([...await (await identity(2)).read()], [1, 0, 0, 1]);
  assert.deepEqual((await eye(0)).shape, [0, 0]);
  assert.throws(() => diag(I), /must be a square matrix/);
  assert.throws(() => addDiag(X, I), /must have 5 \(or 1\) elements/);
});

Deno.test("gathers and submatrix() pick rows and columns by u32 indices", async () => {
  const R = 7, C = 9, x = f(Array.from({ length: R * C }, (_, i) => i * 1.5 - 20));
  const X = await Tensor.from(x, [R, C]);
  const rows = [6, 0, 3, 3], cols = [8, 1, 2];
  const at = (r: number, c: number) => x[r * C + c];
  assert.deepEqual(
    [...await gatherRows(X, await idx(rows)).read()],
    rows.flatMap((r) => [...x.slice(r * C, r * C + C)]),
  );
  assert.deepEqual(
    [...await gatherCols(X, await idx(cols)).read()],
    Array.from({ length: R }, (_, r) => cols.map((c) => at(r, c))).flat(),
  );
  const S = submatrix(X, await idx(rows), await idx(cols));
  assert.deepEqual(S.shape, [4, 3]);
  assert.deepEqual([...await S.read()], rows.flatMap((r) => cols.map((c) => at(r, c))));
  assert.deepEqual((await submatrix(X, await idx([]), null).read()).length, 0);
  // u32 data goes through unchanged.
  const U = await Tensor.from(Uint32Array.from([1, 2, 3, 4, 5, 6]), [3, 2], "u32");
  assert.deepEqual([...await gatherRows(U, await idx([2, 0])).readU32()], [5, 6, 1, 2]);
  await assert.rejects(async () => gatherRows(X, await Tensor.from(f([1]))), /must be u32/);
});

Deno.test("scatterSubmatrix(), setRows() and setCols() write in place", async () => {
  const R = 4, C = 5;
  const D = await Tensor.from(new Float32Array(R * C).fill(1), [R, C]);
  scatterSubmatrix(
    D,
    await Tensor.from(f([10, 20, 30, 40]), [2, 2]),
    await idx([3, 1]),
    await idx([0, 4]),
  );
  setRows(D, await idx([2]), -1);
  setCols(D, await idx([2]), 0);
  const want = [
    [1, 1, 0, 1, 1],
    [30, 1, 0, 1, 40],
    [-1, -1, 0, -1, -1],
    [10, 1, 0, 1, 20],
  ].flat();
  assert.deepEqual([...await D.read()], want);
  await assert.rejects(
    async () =>
      scatterSubmatrix(D, await Tensor.from(f([1, 2, 3])), await idx([0]), await idx([0, 1])),
    /must have 1×2 elements/,
  );
});

Deno.test("padCols() and unpadCols() round-trip with zero fill", async () => {
  const x = f([1, 2, 3, 4, 5, 6]);
  const P = padCols(await Tensor.from(x, [2, 3]), 5);
  assert.deepEqual([...await P.read()], [1, 2, 3, 0, 0, 4, 5, 6, 0, 0]);
  const back = unpadCols(P, await Tensor.zeros([2, 3]));
  assert.deepEqual(await back.read(), x);
});

Deno.test("gatherRows() looks up rows of a matrix larger than one storage binding", async () => {
  const rt = await gpu();
  const C = 16, R = Math.ceil(rt.maxBinding / 4 / C) + 3;
  const x = new Float32Array(R * C);
  for (let r = 0; r < R; r++) x[r * C] = r; // first column holds the row number
  for (let i = 0; i < x.length; i++) if (i % C) x[i] = i % C;
  const E = await Tensor.from(x, [R, C], "f32", "embedding");
  const ids = [R - 1, 0, 1_500_000, R - 2, 17];
  const out = await gatherRows(E, await idx(ids)).read();
  for (const [i, r] of ids.entries()) {
    assert.equal(out[i * C], r);
    assert.equal(out[i * C + 7], 7);
  }
  E.dispose();
});

/** Deterministic values in [-1, 1), cheap enough for tens of millions of elements. */
function pattern(n: number, seed: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (Math.imul(i ^ seed, 2654435761) >>> 0) / 2 ** 31 - 1;
  return x;
}

/** Exact element-wise equality with the first difference in the message. */
function assertSame(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  assert.equal(got.length, want.length, `${what}: length ${got.length} ≠ ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) assert.fail(`${what}[${i}] = ${got[i]}, expected ${want[i]}`);
  }
}

Deno.test("transpose() splits 2-D and 3-D tensors larger than one storage binding", async () => {
  const rt = await gpu();
  const lim = rt.maxBinding / 4;
  // 2-D blocks of rows × columns; whole matrices of a batch; rows of 16.8 M elements.
  for (const shape of [[5003, 6779], [5, 2600, 2700], [2, lim / 2 + 5]]) {
    const [R, C] = shape.slice(-2), B = shape.length === 3 ? shape[0] : 1, n = B * R * C;
    assert.ok(n > lim, `[${shape}] must exceed one binding`);
    const x = new Uint32Array(n);
    for (let i = 0; i < n; i++) x[i] = i; // every element distinct: a misplaced one shows
    const X = await Tensor.from(x, shape, "u32", "big");
    const T = transpose(X);
    const got = await T.readU32();
    const want = new Uint32Array(n);
    for (let b = 0; b < B; b++) {
      for (let r = 0; r < R; r++) {
        for (let c = 0; c < C; c++) want[b * R * C + c * R + r] = b * R * C + r * C + c;
      }
    }
    assertSame(got, want, `transpose [${shape}]`);
    X.dispose();
    T.dispose();
  }
});

Deno.test("diag(), addDiag(), eye() and identity() work on matrices over one binding", async () => {
  const rt = await gpu();
  const n = Math.floor(Math.sqrt(rt.maxBinding / 4)) + 2;
  const I = await identity(n);
  assert.ok(I.size * 4 > rt.maxBinding);
  const v = pattern(n, 7);
  const V = await Tensor.from(v);
  addDiag(I, V);
  addDiag(I, 0.25);
  const want = Float32Array.from(v, (x) => Math.fround(Math.fround(1 + x) + 0.25));
  const D = diag(I);
  assertSame(await D.read(), want, "diag(I + v + 0.25)");
  const all = await I.read();
  for (let i = 0; i < all.length; i++) {
    const r = Math.floor(i / n), c = i % n;
    if (all[i] !== (r === c ? want[r] : 0)) assert.fail(`I[${r}, ${c}] = ${all[i]}`);
  }
  const E = eye(rt, n, n + 5);
  const e = await E.read();
  for (let i = 0; i < e.length; i++) {
    const r = Math.floor(i / (n + 5)), c = i % (n + 5);
    if (e[i] !== (r === c ? 1 : 0)) assert.fail(`eye[${r}, ${c}] = ${e[i]}`);
  }
  for (const t of [I, V, D, E]) t.dispose();
});

Deno.test("gathers, scatters and padding work on a matrix over one binding", async () => {
  const rt = await gpu();
  const R = 1_048_600, C = 33;
  const x = pattern(R * C, 3);
  const E = await Tensor.from(x, [R, C], "f32", "embedding");
  assert.ok(E.size * 4 > rt.maxBinding);
  const P = padCols(E, 36);
  const p = await P.read();
  for (let i = 0; i < p.length; i++) {
    const r = Math.floor(i / 36), c = i % 36;
    if (p[i] !== (c < C ? x[r * C + c] : 0)) assert.fail(`padCols[${r}, ${c}] = ${p[i]}`);
  }
  const U = unpadCols(P, await Tensor.zeros([R, C]));
  assertSame(await U.read(), x, "unpadCols(padCols(E))");
  // Rows next to the split of a 33-column binding (1,016,800 rows), the first and the last.
  const rows = [R - 1, 0, 1_016_801, 1_016_799, 1_016_800, 524_288], cols = [32, 0, 17];
  const G = gatherCols(E, await idx(cols));
  const gWant = new Float32Array(R * cols.length);
  for (let r = 0; r < R; r++) cols.forEach((c, j) => (gWant[r * cols.length + j] = x[r * C + c]));
  assertSame(await G.read(), gWant, "gatherCols");
  const S = submatrix(E, await idx(rows), await idx(cols));
  assertSame(await S.read(), rows.flatMap((r) => cols.map((c) => x[r * C + c])), "submatrix");
  // In-place writes, mirrored on the host copy.
  const src = rows.flatMap((_, i) => cols.map((_, j) => 100 + i * 3 + j));
  scatterSubmatrix(E, await Tensor.from(f(src), [6, 3]), await idx(rows), await idx(cols));
  rows.forEach((r, i) => cols.forEach((c, j) => (x[r * C + c] = src[i * 3 + j])));
  const zeroRows = [R - 2, 1_016_800, 3];
  setRows(E, await idx(zeroRows), -2);
  for (const r of zeroRows) x.fill(-2, r * C, r * C + C);
  setCols(E, await idx([5, 31]), 0.5);
  for (let r = 0; r < R; r++) x[r * C + 5] = x[r * C + 31] = 0.5;
  assertSame(await E.read(), x, "scatterSubmatrix + setRows + setCols");
  for (const t of [E, P, U, G, S]) t.dispose();
});

Deno.test("gathers refuse a single row larger than one binding, naming the tensor", async () => {
  const rt = await gpu();
  const W = await Tensor.zeros([2, rt.maxBinding / 4 + 8], "wide");
  const ids = await idx([1]);
  const live = rt.liveBytes;
  assert.throws(
    () => gatherRows(W, ids),
    /gatherRows: a row of Tensor\(wide\S* \[\d+, 33554440\] f32\) .* larger than one storage binding/,
  );
  assert.equal(rt.liveBytes, live, "the refused output is freed");
  W.dispose();
  ids.dispose();
});

Deno.test("word kernels refuse f16 tensors, addDiag() non-f32 ones, instead of misreading them", async () => {
  const H = await Tensor.from([1, 2, 3, 4], [2, 2], "f16", "half");
  const ids = await idx([0]);
  assert.throws(() => transpose(H), /transpose: Tensor\(half .*f16 tensors are not supported/);
  assert.throws(() => diag(H), /diag: .*f16 tensors are not supported/);
  assert.throws(() => gatherRows(H, ids), /gatherRows: .*f16 tensors are not supported/);
  assert.throws(() => addDiag(H, 1), /addDiag: .*f16 tensors are not supported/);
  const U = ids.reshape([1, 1]);
  assert.throws(() => addDiag(U, 1), /addDiag: Tensor\(.* u32\) must be f32/);
  for (const t of [H, ids, U]) t.dispose();
});

Deno.test("tensors within one binding take one dispatch per call", async () => {
  const rt = await gpu();
  const X = await Tensor.from(f(new Rng(52).normals(45 * 45)), [45, 45]);
  const ids = await idx([3, 0, 44]);
  const dispatches = (fn: () => Tensor | void) => {
    const before = rt.stats.dispatches;
    const out = fn();
    const n = rt.stats.dispatches - before;
    if (out && out !== X) out.dispose();
    return n;
  };
  const calls: [string, () => Tensor | void][] = [
    ["transpose", () => transpose(X)],
    ["diag", () => diag(X)],
    ["addDiag", () => addDiag(X, 1)],
    ["eye", () => eye(rt, 45, 50)],
    ["padCols", () => padCols(X, 48)],
    ["gatherRows", () => gatherRows(X, ids)],
    ["submatrix", () => submatrix(X, ids, ids)],
    ["setCols", () => setCols(X, ids, 0)],
  ];
  for (const [name, fn] of calls) assert.equal(dispatches(fn), 1, name);
  await rt.sync();
  X.dispose();
  ids.dispose();
});
