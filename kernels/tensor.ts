/**
 * `Tensor`: a GPU buffer with a shape. Row-major, 4-byte elements (`f32`, or `u32`/`i32` for
 * token ids and indices). Tensors are freed explicitly with {@link Tensor.dispose}, or in bulk
 * with {@link scope}, which frees every tensor created inside it except those it returns or
 * {@link keep}s.
 *
 * @module
 */
import { type BufferRange, gpu, GpuError, type Runtime } from "./device.ts";

/**
 * Element types. All are 4 bytes wide.
 *
 * @example Usage
 * ```ts ignore
 * import { type DType, Tensor } from "@llm-surgeon/toolkit";
 * const dtype: DType = "i32";
 * const ids = await Tensor.from([2, 31414, 232], [3], dtype, "token ids");
 * console.log(ids.dtype); // "i32" (an Int32Array would have been detected too)
 * ```
 */
export type DType = "f32" | "u32" | "i32";

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
    this.#buffer = rt.createBuffer(this.size * 4, name);
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
   * the product of `shape`.
   */
  static async from(
    data: ArrayLike<number> | Float32Array | Uint32Array | Int32Array,
    shape: readonly number[] = [data.length],
    dtype?: DType,
    name = "tensor",
  ): Promise<Tensor> {
    return Tensor.fromSync(await gpu(), data, shape, dtype, name);
  }

  /** Synchronous variant of {@link from}. */
  static fromSync(
    rt: Runtime,
    data: ArrayLike<number> | Float32Array | Uint32Array | Int32Array,
    shape: readonly number[] = [data.length],
    dtype?: DType,
    name = "tensor",
  ): Tensor {
    const dt: DType = dtype ??
      (data instanceof Uint32Array ? "u32" : data instanceof Int32Array ? "i32" : "f32");
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

  /** Binding for the elements `[start, start + count)`; `start` must be aligned (see runtime). */
  range(start = 0, count = this.size - start): BufferRange {
    const offset = start * 4;
    if (offset % this.rt.offsetAlign !== 0) {
      throw new GpuError(
        this.name,
        `binding offset ${offset} bytes is not ${this.rt.offsetAlign}-aligned`,
      );
    }
    if (count * 4 > this.rt.maxBinding) {
      throw new GpuError(
        this.name,
        `binding of ${
          count * 4
        } bytes exceeds maxStorageBufferBindingSize ${this.rt.maxBinding}; ` +
          `the kernel must split it`,
      );
    }
    return { buffer: this.buffer, offset, size: Math.max(4, count * 4) };
  }

  /** Overwrites the contents from host data (ordered after previously recorded work). */
  write(data: ArrayLike<number> | Float32Array | Uint32Array | Int32Array, offset = 0): void {
    let view: Float32Array | Uint32Array | Int32Array;
    if (data instanceof Float32Array || data instanceof Uint32Array || data instanceof Int32Array) {
      view = data;
    } else if (this.dtype === "f32") view = Float32Array.from(data);
    else if (this.dtype === "u32") view = Uint32Array.from(data);
    else view = Int32Array.from(data);
    if (offset + view.length > this.size) {
      throw new GpuError(
        this.name,
        `write of ${view.length} elements at ${offset} overflows size ${this.size}`,
      );
    }
    // writeBuffer needs a multiple of 4 bytes: always true for 4-byte elements. A zero-byte
    // writeBuffer panics Deno 2.9.6 (ext/webgpu/queue.rs), so skip empty writes.
    if (view.length === 0) return;
    this.rt.write(this.buffer, offset * 4, view);
  }

  /** Reads the whole tensor back (waits for the GPU). */
  async read(): Promise<Float32Array> {
    const bytes = await this.rt.readBytes(this.buffer, 0, this.size * 4);
    return new Float32Array(bytes);
  }

  /** Reads the tensor back as unsigned integers. */
  async readU32(): Promise<Uint32Array> {
    return new Uint32Array(await this.rt.readBytes(this.buffer, 0, this.size * 4));
  }

  /** Reads `count` elements starting at `start`. */
  async readRange(start: number, count: number): Promise<Float32Array> {
    return new Float32Array(await this.rt.readBytes(this.buffer, start * 4, count * 4));
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
    this.rt.copy(this.buffer, 0, t.buffer, 0, this.size * 4);
    return t;
  }

  /** A copy of this tensor. */
  clone(name = this.name): Tensor {
    return this.reshape(this.shape, name);
  }

  /** Copies `count` elements from `src[srcStart..]` into `this[dstStart..]` (recorded, not awaited). */
  copyFrom(src: Tensor, srcStart = 0, dstStart = 0, count = src.size - srcStart): void {
    if (srcStart + count > src.size || dstStart + count > this.size) {
      throw new GpuError(this.name, `copy of ${count} elements out of range`);
    }
    this.rt.copy(src.buffer, srcStart * 4, this.buffer, dstStart * 4, count * 4);
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
