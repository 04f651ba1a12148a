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
