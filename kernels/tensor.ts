/**
 * `Tensor`: a GPU buffer with a shape. Row-major, 4-byte elements (`f32`, or `u32`/`i32` for
 * token ids and indices), or IEEE half floats (`f16`) packed two to a 32-bit word, which halve
 * the memory of weights that are only ever read (kernels widen them to f32 as they load them;
 * see `toF16`/`toF32` in `cast.ts`). Tensors are freed explicitly with {@link Tensor.dispose}, or
 * in bulk with {@link scope}, which frees every tensor created inside it except those it returns
 * or {@link keep}s.
 *
 * The host conversions {@link halfBits} and {@link halfValues} define the f16 rounding that the
 * GPU casts reproduce bit for bit: round to nearest, ties to even; overflow to ±Infinity;
 * subnormal halves kept; NaN stays NaN with its sign and the top ten payload bits.
 *
 * @module
 */
import { type BufferRange, gpu, GpuError, type Runtime } from "./device.ts";

/**
 * Element types. `f32`, `u32` and `i32` are 4 bytes wide; `f16` is 2 bytes, stored in pairs per
 * 32-bit word (element `2w` in the low half of word `w`, `2w + 1` in the high half), so a
 * buffer of `n` halves holds `2·n` bytes rounded up to a multiple of 4.
 *
 * @example Usage
 * ```ts ignore
 * import { type DType, Tensor } from "@llm-surgeon/toolkit";
 * const dtype: DType = "i32";
 * const ids = await Tensor.from([2, 31414, 232], [3], dtype, "token ids");
 * console.log(ids.dtype); // "i32" (an Int32Array would have been detected too)
 * const w = await Tensor.from([0.1, 2, 65504], [3], "f16", "w");
 * console.log(await w.read()); // Float32Array [0.0999755859375, 2, 65504]
 * ```
 */
export type DType = "f32" | "u32" | "i32" | "f16";

/**
 * Bytes per element of a dtype: 2 for `f16`, 4 otherwise.
 *
 * @param dtype the element type
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { elementBytes } from "@llm-surgeon/toolkit";
 * assert.equal(elementBytes("f16"), 2);
 * assert.equal(elementBytes("u32"), 4);
 * ```
 */
export function elementBytes(dtype: DType): number {
  return dtype === "f16" ? 2 : 4;
}

/**
 * Bytes that `count` elements of `dtype` occupy in a buffer: `count · elementBytes(dtype)`
 * rounded up to a whole number of 32-bit words (an odd number of halves leaves a padding half).
 *
 * @param dtype the element type
 * @param count the number of elements
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { storageBytes } from "@llm-surgeon/toolkit";
 * assert.equal(storageBytes("f16", 3), 8);
 * assert.equal(storageBytes("f32", 3), 12);
 * ```
 */
export function storageBytes(dtype: DType, count: number): number {
  return Math.ceil((count * elementBytes(dtype)) / 4) * 4;
}

let halfToF32Bits: Uint32Array | null = null;

/** The f32 bit pattern of every half bit pattern (exact widening; built once, 256 KiB). */
function widenTable(): Uint32Array {
  if (halfToF32Bits) return halfToF32Bits;
  const table = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const man = h & 0x3ff;
    let bits: number;
    if (exp === 0x1f) bits = 0x7f800000 | (man << 13); // Inf, NaN (payload kept)
    else if (exp !== 0) bits = ((exp + 112) << 23) | (man << 13);
    else if (man === 0) bits = 0;
    else {
      // Subnormal half man·2⁻²⁴: normalise around its leading bit p (0…9).
      const p = 31 - Math.clz32(man);
      bits = ((p + 103) << 23) | ((man << (23 - p)) & 0x7fffff);
    }
    table[h] = (sign | bits) >>> 0;
  }
  halfToF32Bits = table;
  return table;
}

/** The half bit pattern nearest to the f32 with bits `x` (ties to even; see the module doc). */
function halfOfF32Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const man = x & 0x7fffff;
  if (exp === 0xff) {
    if (man === 0) return sign | 0x7c00;
    const payload = man >>> 13;
    return sign | 0x7c00 | (payload === 0 ? 0x200 : payload);
  }
  if (exp >= 143) return sign | 0x7c00; // ≥ 2¹⁶: beyond the largest half even before rounding
  if (exp >= 113) {
    // Normal half: rounding may carry into the exponent, and from 65520 up into Infinity.
    const base = ((exp - 112) << 10) | (man >>> 13);
    const rest = man & 0x1fff;
    const up = rest > 0x1000 || (rest === 0x1000 && (base & 1) === 1) ? 1 : 0;
    return sign | (base + up);
  }
  if (exp < 102) return sign; // below 2⁻²⁵: rounds to ±0
  // Subnormal half: the value in units of 2⁻²⁴ is the 24-bit significand shifted right by s.
  const sig = man | 0x800000;
  const s = 126 - exp; // 14…24
  const k = sig >>> s;
  const rest = sig & ((1 << s) - 1);
  const half = 1 << (s - 1);
  const up = rest > half || (rest === half && (k & 1) === 1) ? 1 : 0;
  return sign | (k + up);
}

/**
 * Rounds values to IEEE half precision and returns the half bit patterns. Each value is first
 * an f32 (as stored in a `Float32Array`), then rounded to the nearest half, ties to even;
 * magnitudes from 65520 up become ±Infinity, tiny values become subnormal halves or ±0, and NaN
 * stays NaN (sign and top ten payload bits kept). `toF16` in `cast.ts` does the same on the GPU.
 *
 * @param values the values (numbers are rounded to f32 first)
 * @returns one half bit pattern per value
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { halfBits } from "@llm-surgeon/toolkit";
 * assert.deepEqual([...halfBits([1, -2, 65520, 2 ** -24])], [0x3c00, 0xc000, 0x7c00, 0x0001]);
 * ```
 */
export function halfBits(values: ArrayLike<number>): Uint16Array {
  const f = values instanceof Float32Array ? values : Float32Array.from(values);
  const bits = new Uint32Array(f.buffer, f.byteOffset, f.length);
  const out = new Uint16Array(f.length);
  for (let i = 0; i < out.length; i++) out[i] = halfOfF32Bits(bits[i]);
  return out;
}

/**
 * Widens half bit patterns to f32 values (exact: every half is an f32; NaN payloads kept).
 *
 * @param bits half bit patterns
 * @returns the values
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { halfValues } from "@llm-surgeon/toolkit";
 * assert.deepEqual([...halfValues(new Uint16Array([0x3c00, 0xc000, 0x7c00, 0x0001]))], [
 *   1,
 *   -2,
 *   Infinity,
 *   2 ** -24,
 * ]);
 * ```
 */
export function halfValues(bits: Uint16Array): Float32Array {
  const table = widenTable();
  const out = new Float32Array(bits.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) outBits[i] = table[bits[i]];
  return out;
}

/**
 * Host data accepted by {@link Tensor.from} and {@link Tensor.write}: numbers (converted to the
 * tensor's dtype), or for `f16` tensors also a `Uint16Array` of raw half bit patterns (as an F16
 * safetensors file stores them).
 *
 * @example Usage
 * ```ts ignore
 * import { type HostData, Tensor } from "@llm-surgeon/toolkit";
 * const bits: HostData = new Uint16Array([0x3c00, 0xc000]); // 1, −2 as halves
 * const t = await Tensor.from(bits, [2]); // dtype "f16" inferred from the Uint16Array
 * ```
 */
export type HostData = ArrayLike<number> | Float32Array | Uint32Array | Int32Array | Uint16Array;

type Scope = Set<Tensor>;
const scopes: Scope[] = [];

/**
 * A dense row-major GPU array.
 *
 * @example Usage
 * ```ts ignore
 * import { Tensor } from "@llm-surgeon/toolkit";
 * const w = await Tensor.from([1, 2, 3, 4, 5, 6], [2, 3], undefined, "w");
 * console.log(w.rows, w.cols, w.size, String(w)); // 2 3 6 "Tensor(w [2, 3] f32)"
 * console.log(await w.read()); // Float32Array [1, 2, 3, 4, 5, 6]
 * const v = w.reshape([3, 2]); // a copy with the new shape
 * console.log(v.shape); // [3, 2]
 * w.dispose(); // frees w's buffer; v keeps its own
 * v.dispose();
 * ```
 */
export class Tensor {
  /** The runtime that owns the buffer. */
  readonly rt: Runtime;
  /** The shape; the product of its entries is {@link size}. */
  readonly shape: readonly number[];
  /** Number of elements. */
  readonly size: number;
  /** Element type. */
  readonly dtype: DType;
  /** Name used in error messages. */
  readonly name: string;
  #buffer: GPUBuffer | null;

  /** Use {@link Tensor.empty}, {@link Tensor.from} or {@link Tensor.zeros} instead. */
  constructor(rt: Runtime, shape: readonly number[], dtype: DType, name: string) {
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) {
        throw new GpuError(name, `invalid shape [${shape.join(", ")}]`);
      }
    }
    this.rt = rt;
    this.shape = [...shape];
    this.size = shape.reduce((a, b) => a * b, 1);
    this.dtype = dtype;
    this.name = name;
    this.#buffer = rt.createBuffer(storageBytes(dtype, this.size), name);
    if (scopes.length > 0) scopes[scopes.length - 1].add(this);
  }

  /** An uninitialised (zero-filled by WebGPU) tensor. */
  static async empty(
    shape: readonly number[],
    dtype: DType = "f32",
    name = "tensor",
  ): Promise<Tensor> {
    return new Tensor(await gpu(), shape, dtype, name);
  }

  /** Synchronous variant of {@link empty} for code that already holds the runtime. */
  static emptySync(
    rt: Runtime,
    shape: readonly number[],
    dtype: DType = "f32",
    name = "tensor",
  ): Tensor {
    return new Tensor(rt, shape, dtype, name);
  }

  /** A zero tensor (WebGPU zero-initialises new buffers). */
  static zeros(shape: readonly number[], name = "zeros"): Promise<Tensor> {
    return Tensor.empty(shape, "f32", name);
  }

  /**
   * Uploads host data. `data` may be a typed array or a plain number array; its length must equal
   * the product of `shape`. The dtype defaults from the array type (`Uint32Array` → u32,
   * `Int32Array` → i32, `Uint16Array` → f16 raw half bits, anything else f32). With dtype `f16`,
   * numbers are rounded as {@link halfBits} does and a `Uint16Array` is taken as half bits.
   */
  static async from(
    data: HostData,
    shape: readonly number[] = [data.length],
    dtype?: DType,
    name = "tensor",
  ): Promise<Tensor> {
    return Tensor.fromSync(await gpu(), data, shape, dtype, name);
  }

  /** Synchronous variant of {@link from}. */
  static fromSync(
    rt: Runtime,
    data: HostData,
    shape: readonly number[] = [data.length],
    dtype?: DType,
    name = "tensor",
  ): Tensor {
    const dt: DType = dtype ??
      (data instanceof Uint32Array
        ? "u32"
        : data instanceof Int32Array
        ? "i32"
        : data instanceof Uint16Array
        ? "f16"
        : "f32");
    const t = new Tensor(rt, shape, dt, name);
    if (data.length !== t.size) {
      t.dispose();
      throw new GpuError(
        name,
        `data length ${data.length} does not match shape [${shape.join(", ")}]`,
      );
    }
    t.write(data);
    return t;
  }

  /** The underlying buffer; throws if the tensor was disposed. */
  get buffer(): GPUBuffer {
    if (!this.#buffer) throw new GpuError(this.name, "use of a disposed tensor");
    return this.#buffer;
  }

  /** Whether {@link dispose} was called. */
  get disposed(): boolean {
    return this.#buffer === null;
  }

  /** Number of rows when viewed as a matrix (all but the last dimension). */
  get rows(): number {
    return this.shape.length === 0 ? 1 : this.size / (this.shape[this.shape.length - 1] || 1);
  }

  /** Size of the last dimension. */
  get cols(): number {
    return this.shape.length === 0 ? 1 : this.shape[this.shape.length - 1];
  }

  /** Bytes per element: 2 for f16, else 4. */
  get elementBytes(): number {
    return elementBytes(this.dtype);
  }

  /** Bytes the elements occupy in the buffer (a multiple of 4; see {@link storageBytes}). */
  get byteSize(): number {
    return storageBytes(this.dtype, this.size);
  }

  /**
   * Binding for the elements `[start, start + count)`; the byte offset `start · elementBytes`
   * must be a multiple of the runtime's `offsetAlign`. For f16 the byte size is rounded up to a
   * whole word, so a range ending on an odd element also covers the next half (or the padding).
   */
  range(start = 0, count = this.size - start): BufferRange {
    const offset = start * this.elementBytes;
    if (offset % this.rt.offsetAlign !== 0) {
      throw new GpuError(
        this.name,
        `binding offset ${offset} bytes is not ${this.rt.offsetAlign}-aligned`,
      );
    }
    const bytes = storageBytes(this.dtype, count);
    if (bytes > this.rt.maxBinding) {
      throw new GpuError(
        this.name,
        `binding of ${bytes} bytes exceeds maxStorageBufferBindingSize ${this.rt.maxBinding}; ` +
          `the kernel must split it`,
      );
    }
    return { buffer: this.buffer, offset, size: Math.max(4, bytes) };
  }

  /**
   * Overwrites elements `[offset, offset + data.length)` from host data (ordered after previously
   * recorded work). f16 tensors take numbers (rounded as {@link halfBits} does) or a
   * `Uint16Array` of half bits; since the GPU writes whole words, an f16 write must start at an
   * even element and have an even length unless it runs to the end of the tensor.
   */
  write(data: HostData, offset = 0): void {
    let view: Float32Array | Uint32Array | Int32Array | Uint16Array;
    if (this.dtype === "f16") {
      view = data instanceof Uint16Array ? data : halfBits(data);
    } else if (data instanceof Uint16Array) {
      throw new GpuError(
        this.name,
        `a Uint16Array holds f16 bit patterns, but the tensor is ${this.dtype}`,
      );
    } else if (
      data instanceof Float32Array || data instanceof Uint32Array || data instanceof Int32Array
    ) {
      view = data;
    } else if (this.dtype === "f32") view = Float32Array.from(data);
    else if (this.dtype === "u32") view = Uint32Array.from(data);
    else view = Int32Array.from(data);
    if (offset < 0 || offset + view.length > this.size) {
      throw new GpuError(
        this.name,
        `write of ${view.length} elements at ${offset} overflows size ${this.size}`,
      );
    }
    // A zero-byte writeBuffer panics Deno 2.9.6 (ext/webgpu/queue.rs), so skip empty writes.
    if (view.length === 0) return;
    if (view instanceof Uint16Array) {
      // writeBuffer needs whole words: halves go in pairs, an odd tail only at the very end
      // (its partner is the buffer's padding half).
      if (offset % 2 !== 0 || (view.length % 2 !== 0 && offset + view.length !== this.size)) {
        throw new GpuError(
          this.name,
          `f16 write of ${view.length} halves at element ${offset}: halves are written in ` +
            `pairs, so the start must be even and the length even unless it ends the tensor`,
        );
      }
      if (view.length % 2 !== 0) {
        const padded = new Uint16Array(view.length + 1);
        padded.set(view);
        view = padded;
      }
    }
    this.rt.write(this.buffer, offset * this.elementBytes, view);
  }

  /** Reads the whole tensor back as f32 values (f16 widened exactly; waits for the GPU). */
  async read(): Promise<Float32Array> {
    return await this.readRange(0, this.size);
  }

  /** Reads a u32 or i32 tensor back as unsigned integers (f32 as its bit patterns). */
  async readU32(): Promise<Uint32Array> {
    if (this.dtype === "f16") {
      throw new GpuError(this.name, "readU32 of an f16 tensor: use readHalfBits() or read()");
    }
    return new Uint32Array(await this.rt.readBytes(this.buffer, 0, this.size * 4));
  }

  /** Reads an f16 tensor's raw half bit patterns (e.g. to save them as F16 safetensors). */
  async readHalfBits(): Promise<Uint16Array> {
    if (this.dtype !== "f16") {
      throw new GpuError(this.name, `readHalfBits needs an f16 tensor, got ${this.dtype}`);
    }
    return await this.#readHalves(0, this.size);
  }

  /** Reads `count` elements starting at `start`, as f32 values (f16 widened exactly). */
  async readRange(start: number, count: number): Promise<Float32Array> {
    if (start < 0 || count < 0 || start + count > this.size) {
      throw new GpuError(
        this.name,
        `read of elements [${start}, ${start + count}) is outside size ${this.size}`,
      );
    }
    if (this.dtype === "f16") return halfValues(await this.#readHalves(start, count));
    return new Float32Array(await this.rt.readBytes(this.buffer, start * 4, count * 4));
  }

  /** Half bit patterns `[start, start + count)`, read as the whole words that hold them. */
  async #readHalves(start: number, count: number): Promise<Uint16Array> {
    const w0 = Math.floor(start / 2), w1 = Math.ceil((start + count) / 2);
    const bytes = await this.rt.readBytes(this.buffer, w0 * 4, (w1 - w0) * 4);
    return new Uint16Array(bytes, (start - 2 * w0) * 2, count);
  }

  /** Reads a scalar (a tensor of size 1, or element `index`). */
  async item(index = 0): Promise<number> {
    return (await this.readRange(index, 1))[0];
  }

  /** Frees the GPU memory. Safe to call twice. */
  dispose(): void {
    if (!this.#buffer) return;
    this.rt.releaseBuffer(this.#buffer);
    this.#buffer = null;
    for (const s of scopes) s.delete(this);
  }

  /**
   * A tensor that shares nothing with this one but reinterprets the shape (same size). Copies on
   * the GPU (cheap relative to the 10 ms sync) so both can be disposed independently.
   */
  reshape(shape: readonly number[], name = this.name): Tensor {
    const size = shape.reduce((a, b) => a * b, 1);
    if (size !== this.size) {
      throw new GpuError(
        this.name,
        `cannot reshape [${this.shape}] (${this.size}) to [${shape}] (${size})`,
      );
    }
    const t = new Tensor(this.rt, shape, this.dtype, name);
    this.rt.copy(this.buffer, 0, t.buffer, 0, this.byteSize);
    return t;
  }

  /** A copy of this tensor. */
  clone(name = this.name): Tensor {
    return this.reshape(this.shape, name);
  }

  /**
   * Copies `count` elements from `src[srcStart..]` into `this[dstStart..]` (recorded, not
   * awaited). The bits are copied as they are, so both tensors must store elements of the same
   * width (f32, u32 and i32 mix; f16 only with f16). GPU copies move whole words: for f16 both
   * starts must be even, and an odd count must run to the end of this tensor.
   */
  copyFrom(src: Tensor, srcStart = 0, dstStart = 0, count = src.size - srcStart): void {
    if (
      srcStart < 0 || dstStart < 0 || count < 0 || srcStart + count > src.size ||
      dstStart + count > this.size
    ) {
      throw new GpuError(this.name, `copy of ${count} elements out of range`);
    }
    if (src.elementBytes !== this.elementBytes) {
      throw new GpuError(
        this.name,
        `cannot copy ${src.dtype} elements of ${src} into ${this.dtype}; cast with toF16/toF32`,
      );
    }
    if (this.dtype === "f16") {
      if (srcStart % 2 !== 0 || dstStart % 2 !== 0) {
        throw new GpuError(
          this.name,
          `f16 copy from ${src} at element ${srcStart} to ${dstStart}: starts must be even`,
        );
      }
      if (count % 2 !== 0 && dstStart + count !== this.size) {
        throw new GpuError(
          this.name,
          `f16 copy of an odd count ${count} must end at the last element of ${this}`,
        );
      }
    }
    const eb = this.elementBytes;
    this.rt.copy(
      src.buffer,
      srcStart * eb,
      this.buffer,
      dstStart * eb,
      storageBytes(this.dtype, count),
    );
  }

  /** `"[2, 3] f32 name"`, for messages. */
  toString(): string {
    return `Tensor(${this.name} [${this.shape.join(", ")}] ${this.dtype})`;
  }
}

/**
 * Removes `t` from the enclosing scopes so that it outlives them. Returns `t`.
 *
 * @param t a tensor or a list of tensors
 *
 * @example Usage
 * ```ts ignore
 * import { add, keep, scope, Tensor } from "@llm-surgeon/toolkit";
 * const cache: Tensor[] = [];
 * const y = await scope(async () => {
 *   const t = await Tensor.from([1, 2, 3]);
 *   cache.push(keep(add(t, t))); // survives the scope without being returned
 *   return add(t, t); // survives as the result
 * });
 * ```
 */
export function keep<T extends Tensor | Tensor[]>(t: T): T {
  const list = Array.isArray(t) ? t : [t];
  for (const x of list) for (const s of scopes) s.delete(x);
  return t;
}

function collect(value: unknown, out: Set<Tensor>, depth = 0): void {
  if (depth > 3 || value === null || typeof value !== "object") return;
  if (value instanceof Tensor) {
    out.add(value);
    return;
  }
  if (Array.isArray(value)) { for (const v of value) collect(v, out, depth + 1); }
  else if (Object.getPrototypeOf(value) === Object.prototype || value instanceof Map) {
    const vals = value instanceof Map ? [...value.values()] : Object.values(value);
    for (const v of vals) collect(v, out, depth + 1);
  }
}

function closeScope(s: Scope, result: unknown): void {
  scopes.pop();
  const survivors = new Set<Tensor>();
  collect(result, survivors);
  const parent = scopes[scopes.length - 1];
  for (const t of s) {
    if (survivors.has(t)) parent?.add(t);
    else t.dispose();
  }
}

/**
 * Runs `fn` and disposes every tensor created during it, except tensors found in its return
 * value (directly, or inside arrays and plain objects) and tensors passed to {@link keep}.
 * Scopes nest; do not interleave two async scopes.
 *
 * @example Usage
 * ```ts ignore
 * const y = await scope(async () => {
 *   const t = await Tensor.from([1, 2, 3]);   // freed at the end
 *   return add(t, t);                          // survives
 * });
 * ```
 */
export async function scope<T>(fn: () => Promise<T>): Promise<T> {
  const s: Scope = new Set();
  scopes.push(s);
  let result: T | undefined;
  try {
    result = await fn();
    return result;
  } finally {
    closeScope(s, result);
  }
}

/**
 * Synchronous {@link scope}.
 *
 * @param fn the work; tensors it creates are freed unless returned or kept
 *
 * @example Usage
 * ```ts ignore
 * import { add, mul, scopeSync } from "@llm-surgeon/toolkit";
 * // (a + b) · b without keeping the sum alive
 * const y = scopeSync(() => mul(add(a, b), b));
 * ```
 */
export function scopeSync<T>(fn: () => T): T {
  const s: Scope = new Set();
  scopes.push(s);
  let result: T | undefined;
  try {
    result = fn();
    return result;
  } finally {
    closeScope(s, result);
  }
}
