import assert from "node:assert/strict";
import { add, axpby, chunkElems, fill, map, mul, scale } from "../kernels/elementwise.ts";
import { gpu } from "../kernels/device.ts";
import { Tensor } from "../kernels/tensor.ts";
import { assertClose, Rng } from "./_util.ts";

Deno.test("map() evaluates expressions with scalars, broadcasting and an aliased output", async () => {
  const rng = new Rng(61);
  const R = 17, C = 3;
  const x = Float32Array.from(rng.normals(R * C)), y = Float32Array.from(rng.normals(R * C));
  const row = Float32Array.from(rng.normals(C));
  const X = await Tensor.from(x, [R, C]),
    Y = await Tensor.from(y, [R, C]),
    B = await Tensor.from(row);
  assertClose(
    await map("a * s0 + b * s1", [X, Y], [2, -0.5]).read(),
    x.map((v, i) => 2 * v - 0.5 * y[i]),
    1e-6,
    1e-6,
  );
  assertClose(
    await map("a + b", [X, B]).read(),
    x.map((v, i) => v + row[i % C]),
    1e-6,
    1e-6,
    "broadcast row",
  );
  assertClose(await map("max(a, 0.0)", [X]).read(), x.map((v) => Math.max(v, 0)), 0, 0, "relu");
  const Z = X.clone();
  map("o * 3.0 + a", [Y], [], { out: Z });
  assertClose(await Z.read(), x.map((v, i) => 3 * v + y[i]), 1e-6, 1e-6, "in place");
  map("a - s0", [Z], [1], { out: Z }); // the output is also the input
  assertClose(await Z.read(), x.map((v, i) => 3 * v + y[i] - 1), 1e-6, 1e-6, "aliased input");
  const idx = await map("f32(i)", [], [], { out: await Tensor.zeros([5]) }).read();
  assert.deepEqual([...idx], [0, 1, 2, 3, 4]);
  const two = await Tensor.from([1, 2]);
  assert.throws(() => map("a + b", [X, two]), /does not broadcast/);
});

Deno.test("fill(), axpby(), add(), mul() and scale() match their definitions", async () => {
  const a = Float32Array.from([1, -2, 3.5, 0]), b = Float32Array.from([0.5, 4, -1, 2]);
  const A = await Tensor.from(a), B = await Tensor.from(b);
  assert.deepEqual([...await axpby(2, A, -1, B).read()], [1.5, -8, 8, -2]);
  assert.deepEqual([...await add(A, B).read()], [1.5, 2, 2.5, 2]);
  assert.deepEqual([...await mul(A, B).read()], [0.5, -8, -3.5, 0]);
  assert.deepEqual([...await scale(A, -2).read()], [-2, 4, -7, -0]);
  fill(A, 7.25);
  assert.deepEqual([...await A.read()], [7.25, 7.25, 7.25, 7.25]);
  const E = await Tensor.zeros([0]);
  assert.equal(fill(E, 1).size, 0);
});

Deno.test("map() splits a tensor larger than one storage binding into chunks", async () => {
  const rt = await gpu();
  const chunk = chunkElems(rt);
  assert.ok(chunk * 4 <= rt.maxBinding && chunk % (rt.offsetAlign / 4) === 0);
  const n = chunk + 1000;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = i % 1024;
  const X = await Tensor.from(x);
  // `i` is the global element index in every chunk; a broadcast input follows it too.
  const B = await Tensor.from([0, 100, 200]);
  const Y = map("a * 2.0 + s0 + f32(i % 7u) + b", [X, B], [1]);
  for (const i of [0, 5, chunk - 1, chunk, chunk + 1, n - 1]) {
    const want = 2 * (i % 1024) + 1 + (i % 7) + 100 * (i % 3);
    assert.equal(await Y.item(i), want, `element ${i}`);
  }
  B.dispose();
  X.dispose();
  Y.dispose();
});

Deno.test("map() refuses f16 tensors instead of reading their packed halves as words", async () => {
  const h = await Tensor.from([1, 2, 3], [3], "f16", "halves");
  assert.throws(() => map("a + 1.0", [h]), /halves.*f16/);
  const x = await Tensor.from([1, 2, 3]);
  assert.throws(() => map("a", [x], [], { out: h }), /halves.*f16/);
  h.dispose();
  x.dispose();
});
