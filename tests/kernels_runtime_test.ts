import assert from "node:assert/strict";
import { gpu, GpuError, packParams, POOL_MIN_BYTES } from "../kernels/device.ts";
import { scope, Tensor } from "../kernels/tensor.ts";
import { fill, map } from "../kernels/elementwise.ts";
import { matmul } from "../kernels/gemm.ts";
import { reduce } from "../kernels/reduce.ts";

Deno.test("1000 create/compute/dispose cycles return liveBytes to the start value", async () => {
  const rt = await gpu();
  await rt.sync();
  const start = rt.liveBytes;
  const w = await Tensor.from(Float32Array.from({ length: 35 }, (_, i) => i / 35), [7, 5]);
  let last = 0;
  for (let i = 0; i < 1000; i++) {
    if (i % 2 === 0) {
      // Scoped temporaries: everything but the returned tensor is freed.
      const y = await scope(async () => {
        const x = await Tensor.from(new Float32Array(21).fill(i % 3), [3, 7]);
        const h = matmul(x, w); // [3, 5]
        return reduce(map("a * a", [h]), "sum");
      });
      if (i % 100 === 0) last = await y.item();
      y.dispose();
    } else {
      const x = Tensor.emptySync(rt, [64]);
      const z = map("a + 1.0", [x]);
      x.dispose();
      z.dispose();
    }
    if (i % 250 === 249) await rt.sync();
  }
  w.dispose();
  await rt.sync();
  assert.equal(rt.liveBytes, start);
  assert.ok(Number.isFinite(last));
});

Deno.test("a WGSL compile error names the kernel and the line", async () => {
  const rt = await gpu();
  await rt.sync();
  const k = rt.kernel(
    "runtime_test_broken",
    `@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(1)
fn main() { x[0] = undefined_thing + 1.0; }`,
  );
  const t = await Tensor.zeros([4]);
  try {
    rt.dispatch(k, [t.range()], null, [1]);
  } catch {
    // Some backends refuse the bind group at once; the compile error still comes at sync.
  }
  await assert.rejects(() => rt.sync(), (e: unknown) => {
    assert.ok(e instanceof GpuError);
    assert.match(e.message, /kernel runtime_test_broken/);
    assert.match(e.message, /line 3/);
    return true;
  });
  await rt.checkErrors().catch(() => {});
  t.dispose();
});

Deno.test("an invalid binding fails with an error naming the kernel", async () => {
  const rt = await gpu();
  await rt.sync();
  const k = rt.kernel(
    "runtime_test_two_bindings",
    `@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b: array<f32>;
struct P { n: u32, p0: u32, p1: u32, p2: u32 };
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(1)
fn main() { b[0] = a[0] + f32(p.n); }`,
  );
  const a = await Tensor.zeros([4]);
  rt.dispatch(k, [a.range()], packParams(1, 0, 0, 0), [1]); // binding 1 is missing
  await assert.rejects(() => rt.sync(), /runtime_test_two_bindings: binding its buffers failed/);
  await rt.checkErrors().catch(() => {});
  // Tensors refuse ranges that a kernel cannot bind, naming the tensor.
  assert.throws(() => a.range(1, 2), /zeros: binding offset 4 bytes is not 32-aligned/);
  a.dispose();
  await rt.sync();
});

Deno.test("limitBinding() lowers the binding limit until restored, so split paths run at small sizes", async () => {
  const rt = await gpu();
  const before = rt.maxBinding;
  const x = await Tensor.from(Float32Array.from({ length: 300_000 }, (_, i) => i % 1000));
  const restore = rt.limitBinding(1 << 18); // 256 KiB: the 1.2 MB tensor needs 5 chunks
  try {
    assert.equal(rt.maxBinding, 1 << 18);
    assert.throws(() => x.range(), /exceeds maxStorageBufferBindingSize/);
    const y = map("a + f32(i % 3u)", [x]);
    for (const i of [0, 65535, 65536, 131071, 299_999]) {
      assert.equal(await y.item(i), (i % 1000) + (i % 3), `element ${i}`);
    }
    y.dispose();
    assert.throws(() => rt.limitBinding(before * 2), /at most/);
    assert.throws(() => rt.limitBinding(1000), /multiple of 256/);
  } finally {
    restore();
  }
  assert.equal(rt.maxBinding, before);
  x.range(); // fits again
  x.dispose();
});

Deno.test("kernel() refuses a second, different source under a name already compiled", async () => {
  const rt = await gpu();
  const src = (k: number) =>
    `@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(1) fn main() { x[0] = ${k}.0; }`;
  const a = rt.kernel("test_unique_name", src(1));
  assert.equal(rt.kernel("test_unique_name", src(1)), a);
  assert.throws(
    () => rt.kernel("test_unique_name", src(2)),
    /test_unique_name.*another WGSL source/,
  );
});

Deno.test("software adapters reuse released large buffers, cleared to zeros, outside liveBytes", async () => {
  const rt = await gpu();
  if (!rt.adapter.isSoftware) return; // the pool is for software adapters only
  rt.drainPool();
  const live = rt.liveBytes;
  const n = POOL_MIN_BYTES / 4; // one buffer of exactly the pooled minimum
  const a = await Tensor.from(new Float32Array(n).fill(7), [n]);
  const buffer = a.range().buffer;
  a.dispose();
  assert.equal(rt.liveBytes, live);
  assert.equal(rt.pooledBytes, POOL_MIN_BYTES);
  // The same size again: the same buffer, reading as zeros like a new one.
  const b = Tensor.emptySync(rt, [n], "f32", "reused");
  assert.equal(b.range().buffer, buffer);
  assert.equal(rt.pooledBytes, 0);
  const x = await b.read();
  assert.equal(x.length, n);
  assert.ok(x.every((v) => v === 0), "a reused buffer reads as zeros");
  // Work recorded before the release still sees the old contents: a copy of a, then a disposed
  // and b reused and written, in one submission.
  const c = await Tensor.from(Float32Array.from({ length: n }, (_, i) => i % 97), [n]);
  const copy = c.clone("copy of c");
  c.dispose();
  const d = Tensor.emptySync(rt, [n], "f32", "after c");
  fill(d, 3);
  const got = await copy.read();
  assert.ok(got.every((v, i) => v === i % 97), "the copy recorded before the reuse");
  assert.ok((await d.read()).every((v) => v === 3));
  // Small buffers are never pooled.
  const s = await Tensor.from(new Float32Array(16), [16]);
  s.dispose();
  assert.equal(rt.pooledBytes, 0);
  for (const t of [b, copy, d]) t.dispose();
  rt.drainPool();
  assert.equal(rt.pooledBytes, 0);
  assert.equal(rt.liveBytes, live);
});
