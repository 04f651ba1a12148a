import assert from "node:assert/strict";
import { gpu } from "../kernels/device.ts";
import { halfBits, halfValues, storageBytes, Tensor } from "../kernels/tensor.ts";
import { toF16, toF32 } from "../kernels/cast.ts";
import { Rng } from "./_util.ts";

/** Every half bit pattern, 0…65535. */
const ALL_HALVES = Uint16Array.from({ length: 65536 }, (_, i) => i);

/** f32 values given by their bit patterns (NaN payloads kept: no JS number in between). */
function f32FromBits(bits: number[] | Uint32Array): Float32Array {
  return new Float32Array(Uint32Array.from(bits).buffer);
}

function bitsOfF32(x: Float32Array): Uint32Array {
  return new Uint32Array(x.buffer, x.byteOffset, x.length);
}

/** V8's own f32 → f16 rounding (`Float16Array`), an independent reference for non-NaN values. */
function builtinHalf(x: number): number {
  return new Uint16Array(new Float16Array([x]).buffer)[0];
}

/**
 * f32 values around every rounding decision of the f32 → f16 conversion: exact halves, the
 * midpoints between neighbouring halves (ties), one f32 ulp either side of each midpoint, the
 * overflow boundary and the subnormal/zero boundary, plus signed zeros, infinities and NaNs.
 */
function edgeValues(): Float32Array {
  const out: number[] = [];
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const push = (bits: number) => out.push(bits >>> 0);
  for (let h = 0; h < 0x7c00; h += 7) { // every 7th positive finite half, and the next one up
    const lo = halfValues(Uint16Array.of(h))[0], hi = halfValues(Uint16Array.of(h + 1))[0];
    f[0] = lo;
    push(u[0]);
    f[0] = (lo + hi) / 2; // exact in f32: a half has 11 significant bits
    const mid = u[0];
    for (const d of [-1, 0, 1]) {
      push(mid + d);
      push((mid + d) | 0x80000000);
    }
  }
  // Overflow: 65504 is the largest half, 65520 the tie to Infinity.
  for (const v of [65504, 65519, 65519.99609375, 65520, 65536, 1e10, 3.4028234663852886e38]) {
    f[0] = v;
    push(u[0]);
    push(u[0] | 0x80000000);
  }
  // Underflow: 2⁻²⁵ is the tie between 0 and the smallest subnormal 2⁻²⁴.
  for (const v of [2 ** -24, 2 ** -25, 2 ** -25 * 1.0000001, 2 ** -26, 1.5 * 2 ** -24, 1e-30]) {
    f[0] = v;
    push(u[0]);
    push(u[0] | 0x80000000);
  }
  // ±0, f32 subnormals, ±Infinity, quiet and signalling NaNs with and without high payload bits.
  for (const b of [0, 0x80000000, 1, 0x007fffff, 0x7f800000, 0xff800000]) push(b);
  for (const b of [0x7fc00000, 0xffc00000, 0x7f800001, 0x7fa00000, 0x7f802000, 0xff801fff]) push(b);
  return f32FromBits(out);
}

Deno.test("halfBits() rounds like the built-in Float16Array on edge and random f32 values", () => {
  const rng = new Rng(21);
  const random = Uint32Array.from({ length: 100_000 }, () => Math.floor(rng.next() * 2 ** 32));
  for (const values of [edgeValues(), f32FromBits(random)]) {
    const got = halfBits(values);
    const bits = bitsOfF32(values);
    for (let i = 0; i < values.length; i++) {
      const x = values[i];
      if (Number.isNaN(x)) {
        // NaN: sign and the top ten payload bits kept; never turned into Infinity.
        const want = ((bits[i] >>> 16) & 0x8000) | 0x7c00 | ((bits[i] >>> 13) & 0x3ff);
        assert.equal(got[i], (want & 0x3ff) === 0 ? want | 0x200 : want, `NaN ${bits[i]}`);
      } else {
        assert.equal(got[i], builtinHalf(x), `f32 ${x} (bits 0x${bits[i].toString(16)})`);
      }
    }
  }
  // Plain numbers are rounded to f32 first (as a Float32Array would hold them): this one becomes
  // the tie 1 + 2⁻¹¹ in f32 and then rounds to even, where rounding the float64 directly would
  // give the next half up.
  const x = 1 + 2 ** -11 + 2 ** -30;
  assert.deepEqual([...halfBits([x])], [0x3c00]);
  assert.equal(builtinHalf(x), 0x3c01);
});

Deno.test("halfValues() widens all 65,536 half bit patterns exactly and round-trips", () => {
  const wide = halfValues(ALL_HALVES);
  const ref = new Float16Array(ALL_HALVES.buffer);
  for (let h = 0; h < 65536; h++) {
    if (Number.isNaN(ref[h])) assert.ok(Number.isNaN(wide[h]), `half 0x${h.toString(16)}`);
    else assert.ok(Object.is(wide[h], ref[h]), `half 0x${h.toString(16)}: ${wide[h]}`);
  }
  assert.deepEqual(halfBits(wide), ALL_HALVES);
});

Deno.test("toF16() and toF32() match the host conversions bit for bit", async () => {
  // Every half widened, then back: both directions on all 65,536 patterns.
  const h = await Tensor.from(ALL_HALVES, [256, 256], "f16", "all halves");
  assert.equal(h.dtype, "f16");
  const w = toF32(h);
  assert.deepEqual(w.shape, [256, 256]);
  assert.equal(w.dtype, "f32");
  assert.deepEqual(await w.readU32(), bitsOfF32(halfValues(ALL_HALVES)));
  const back = toF16(w, { name: "round trip" });
  assert.deepEqual(await back.readHalfBits(), ALL_HALVES);
  // f32 values at every rounding decision, and random bit patterns; odd lengths.
  const rng = new Rng(22);
  const random = Uint32Array.from({ length: 30_001 }, () => Math.floor(rng.next() * 2 ** 32));
  for (const values of [edgeValues(), f32FromBits(random)]) {
    const n = values.length % 2 === 0 ? values.length - 1 : values.length;
    const x = await Tensor.from(values.subarray(0, n), [n]);
    const got = await toF16(x).readHalfBits();
    assert.deepEqual(got, halfBits(values.subarray(0, n)));
    x.dispose();
  }
  for (const t of [h, w, back]) t.dispose();
});

Deno.test("toF16()/toF32() write into a given output, copy same-dtype inputs, refuse others", async () => {
  const x = await Tensor.from([1.5, -2.25, 3e-6], [3], "f32", "x");
  const out = await Tensor.empty([3], "f16", "x16");
  assert.equal(toF16(x, { out }), out);
  assert.deepEqual([...(await out.read())], [...halfValues(halfBits([1.5, -2.25, 3e-6]))]);
  const copy = toF16(out);
  assert.notEqual(copy, out);
  assert.deepEqual(await copy.readHalfBits(), await out.readHalfBits());
  const wide = await Tensor.empty([3], "f32");
  toF32(out, { out: wide });
  assert.deepEqual(await wide.read(), await out.read());
  const ids = await Tensor.from(new Uint32Array([1, 2]), [2], "u32", "ids");
  const f2 = await Tensor.empty([2], "f32", "f2");
  assert.throws(() => toF16(ids), /toF16\(ids\): expects an f32 or f16 tensor.*u32/);
  assert.throws(() => toF16(x, { out: wide }), /output .* must be f16 with 3 elements/);
  assert.throws(() => toF32(out, { out: f2 }), /output .* must be f32 with 3 elements/);
  for (const t of [x, out, copy, wide, ids, f2]) t.dispose();
});

Deno.test("f16 tensors: upload, odd sizes, partial reads and writes, copies, reshapes", async () => {
  const rt = await gpu();
  const values = [0.1, -1, 65504, 70000, 2 ** -24, -0, 3.14159];
  const t = await Tensor.from(values, [7], "f16", "w");
  assert.equal(t.byteSize, 16);
  assert.equal(storageBytes("f16", 7), 16);
  assert.equal(t.elementBytes, 2);
  const want = halfValues(halfBits(values));
  assert.deepEqual(await t.read(), want);
  assert.equal(await t.item(3), Infinity);
  assert.deepEqual(await t.readRange(1, 3), want.subarray(1, 4));
  assert.deepEqual(await t.readRange(3, 4), want.subarray(3, 7));
  await assert.rejects(() => t.readU32(), /readU32 of an f16 tensor/);
  await assert.rejects(() => t.readRange(5, 3), /outside size 7/);
  // Raw half bits are taken as they are.
  const raw = await Tensor.from(new Uint16Array([0x3c00, 0xfc00, 0x0001]), [3]);
  assert.equal(raw.dtype, "f16");
  assert.deepEqual([...(await raw.read())], [1, -Infinity, 2 ** -24]);
  // Writes: even start; an odd length only at the end of the tensor.
  t.write([5, 6], 2);
  t.write(new Uint16Array([0x4000]), 6);
  want.set(halfValues(halfBits([5, 6])), 2);
  want[6] = 2;
  assert.deepEqual(await t.read(), want);
  assert.throws(() => t.write([1, 2], 1), /start must be even/);
  assert.throws(() => t.write([1], 2), /length even unless it ends the tensor/);
  assert.throws(() => t.write([1, 2], 6), /overflows size 7/);
  const f = await Tensor.from([1, 2]);
  assert.throws(() => f.write(new Uint16Array([1, 2])), /f16 bit patterns, but the tensor is f32/);
  // Reshape, clone and copies keep the halves (including the odd last one).
  const r = t.reshape([7, 1]);
  assert.equal(r.dtype, "f16");
  assert.deepEqual(await r.read(), want);
  const c = await Tensor.empty([9], "f16", "c");
  c.copyFrom(t, 2, 4, 5); // odd count ending at c's last element
  assert.deepEqual(await c.readRange(4, 5), want.subarray(2, 7));
  assert.deepEqual([...(await c.readRange(0, 4))], [0, 0, 0, 0]);
  assert.throws(() => c.copyFrom(t, 1, 0, 2), /starts must be even/);
  assert.throws(() => c.copyFrom(t, 0, 0, 3), /odd count 3 must end/);
  assert.throws(() => c.copyFrom(f, 0, 0, 2), /cannot copy f32 elements .* into f16/);
  // Bindings: byte offsets count 2 bytes per half.
  const big = await Tensor.empty([rt.offsetAlign + 3], "f16");
  const half = rt.offsetAlign / 2;
  assert.deepEqual(
    [big.range(half).offset, big.range(half).size],
    [rt.offsetAlign, storageBytes("f16", half + 3)],
  );
  assert.throws(() => big.range(2), /binding offset 4 bytes is not/);
  for (const x of [t, raw, f, r, c, big]) x.dispose();
});

Deno.test("toF16()/toF32() cast tensors larger than one storage binding", async () => {
  const rt = await gpu();
  // Over the binding limit as f32 (the f16 side fits): both casts need two chunks.
  const n = rt.maxBinding / 4 + 1001;
  const bits = new Uint16Array(n);
  for (let i = 0; i < n; i++) bits[i] = (i * 40503) & 0xffff;
  const h = await Tensor.from(bits, [n], "f16", "embedding f16");
  const w = toF32(h);
  assert.ok(w.byteSize > rt.maxBinding);
  const back = toF16(w);
  h.dispose();
  const align = rt.offsetAlign / 4;
  const chunk = 2 * Math.floor(rt.maxBinding / 8 / align) * align; // elements per chunk
  for (const start of [0, chunk - 3, n - 7]) {
    const want = halfValues(bits.subarray(start, start + 7));
    const got = await w.readRange(start, 7);
    assert.deepEqual(new Uint32Array(got.buffer), new Uint32Array(want.buffer), `f32 @${start}`);
    const gotH = await back.readRange(start, 7);
    assert.deepEqual(new Uint32Array(gotH.buffer), new Uint32Array(want.buffer), `f16 @${start}`);
  }
  w.dispose();
  back.dispose();
});
