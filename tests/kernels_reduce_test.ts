import assert from "node:assert/strict";
import { countNonFinite, countZeros, norm, reduce, type ReduceOp } from "../kernels/reduce.ts";
import { gpu } from "../kernels/device.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertClose, Rng } from "./_util.ts";

/** float64 reference of reduce() on a row-major [R, C] array. */
function reduceRef(
  x: ArrayLike<number>,
  R: number,
  C: number,
  op: ReduceOp,
  axis: string,
): number[] {
  const f = (v: number) => (op === "sumsq" ? v * v : op === "absmax" ? Math.abs(v) : v);
  const comb = (a: number, b: number) =>
    op === "max" || op === "absmax" ? Math.max(a, b) : op === "min" ? Math.min(a, b) : a + b;
  const init = op === "max" ? -Infinity : op === "min" ? Infinity : 0;
  const outLen = axis === "all" ? 1 : axis === "rows" ? R : C;
  const out = new Array(outLen).fill(init);
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C; c++) {
      const o = axis === "all" ? 0 : axis === "rows" ? r : c;
      out[o] = comb(out[o], f(x[r * C + c]));
    }
  }
  return out;
}

Deno.test("reduce() matches a float64 reference for every op and axis on odd shapes", async () => {
  const rng = new Rng(21);
  for (const [R, C] of [[1, 1], [3, 17], [257, 5], [100, 1], [2, 9000], [700, 3]]) {
    const x = rng.normals(R * C);
    const X = await Tensor.from(Float32Array.from(x), [R, C]);
    for (const op of ["sum", "sumsq", "max", "min", "absmax"] as const) {
      for (const axis of ["all", "rows", "cols"] as const) {
        const got = await reduce(X, op, axis).read();
        const want = reduceRef(Float32Array.from(x), R, C, op, axis);
        assertClose(got, want, 1e-5, 1e-4, `${op}/${axis} on ${R}×${C}`);
      }
    }
    X.dispose();
  }
});

Deno.test("reduce() of empty tensors gives the identity", async () => {
  const E = await Tensor.from(new Float32Array(0), [4, 0]);
  assert.deepEqual([...await reduce(E, "sum", "rows").read()], [0, 0, 0, 0]);
  assert.deepEqual([...await reduce(E, "max").read()], [-Infinity]);
  assert.deepEqual([...await reduce(E, "min", "cols").read()], []);
  E.dispose();
});

Deno.test("norm(), countZeros() and countNonFinite() are exact on known contents", async () => {
  const n = 70_001;
  const x = new Float32Array(n);
  let ss = 0, zeros = 0;
  for (let i = 0; i < n; i++) {
    x[i] = i % 7 === 0 ? 0 : (i % 13) - 6.5;
    ss += x[i] * x[i];
    if (x[i] === 0) zeros++;
  }
  x[5] = -0;
  zeros += 1;
  const X = await Tensor.from(x);
  assertClose(await norm(X).read(), [Math.sqrt(ss)], 1e-5, 0, "norm");
  assert.equal((await countZeros(X).readU32())[0], zeros);
  assert.equal((await countNonFinite(X).readU32())[0], 0);
  X.write(new Float32Array([NaN, Infinity, -Infinity]), 10);
  assert.equal((await countNonFinite(X).readU32())[0], 3);
  X.dispose();
});

Deno.test("reduce() handles a tensor larger than one storage binding", async () => {
  const rt = await gpu();
  const C = 8, R = Math.ceil((rt.maxBinding / 4 + 64) / C);
  const x = new Float32Array(R * C);
  for (let i = 0; i < x.length; i++) x[i] = (i % 5) - 2; // sums known in closed form
  x[x.length - 3] = 1000;
  const X = await Tensor.from(x, [R, C]);
  assert.equal((await reduce(X, "max").read())[0], 1000);
  assert.equal((await countZeros(X).readU32())[0], x.filter((v) => v === 0).length);
  const cols = await reduce(X, "sum", "cols").read();
  const want = new Float64Array(C);
  for (let i = 0; i < x.length; i++) want[i % C] += x[i];
  assertClose(cols, want, 1e-6, 1e-3, "column sums");
  const rows = await reduce(X, "absmax", "rows").read();
  assert.equal(rows[R - 1], 1000);
  assert.equal(rows[0], Math.max(...x.slice(0, C).map(Math.abs)));
  X.dispose();
});

Deno.test("countZeros() and countNonFinite() stay exact past 2²⁴ (u32 sums in every pass)", async () => {
  // Summing the per-segment counts as f32 bit patterns (denormals) was exact below 2²⁴ on
  // llvmpipe and gave 0 on GPUs that flush denormals; past 2²⁴ it is inexact everywhere.
  const n = (1 << 24) + 8; // n − 3 zeros: odd, not an f32 multiple of the binade spacing
  const X = await Tensor.zeros([n]);
  X.write(new Float32Array([1, NaN, Infinity]), n - 3);
  assert.equal((await countZeros(X).readU32())[0], n - 3);
  assert.equal((await countNonFinite(X).readU32())[0], 2);
  X.dispose();
});

Deno.test("reduce(cols) of a short, wide matrix larger than one binding (blocks under 256 rows)", async () => {
  const rt = await gpu();
  const R = 17, C = Math.ceil(rt.maxBinding / 4 / R) + 5;
  const x = new Float32Array(R * C);
  for (let i = 0; i < x.length; i++) x[i] = (i % 7) - 3 + Math.floor(i / C);
  const X = await Tensor.from(x, [R, C]);
  const got = await reduce(X, "sum", "cols").read();
  for (const c of [0, 1, 12345, C >> 1, C - 1]) {
    let want = 0;
    for (let r = 0; r < R; r++) want += x[r * C + c];
    assert.equal(got[c], want, `column ${c}`);
  }
  X.dispose();
});
