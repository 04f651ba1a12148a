/**
 * The GPU runtime: one shared `GPUDevice`, a cache of compiled kernels, and a recorder that
 * batches every dispatch into one command buffer until somebody needs a result on the host.
 *
 * Why batching: on the software adapter every host↔device synchronisation costs ~10 ms
 * (PLATFORM.md §4), so algorithms with many steps (blocked Cholesky, solves, a transformer
 * layer) record all their dispatches and read back at most once. `dispatch` only records;
 * `flush` submits without waiting; `sync` (and every read-back) waits.
 *
 * Errors: shader compile errors, validation errors, out-of-memory and device loss surface as
 * {@link GpuError}s that name the operation (and, for compile errors, the WGSL line).
 *
 * @module
 */

/**
 * An error raised by the GPU runtime; `op` names the kernel or operation that failed.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { GpuError } from "@llm-surgeon/toolkit";
 * const err = new GpuError("kernel gemm_tiled", "dispatch 70000×1×1 exceeds 65535 workgroups");
 * assert.equal(err.op, "kernel gemm_tiled");
 * assert.equal(err.message, "kernel gemm_tiled: dispatch 70000×1×1 exceeds 65535 workgroups");
 * ```
 */
export class GpuError extends Error {
  /** The operation (kernel name, buffer name, …) that failed. */
  readonly op: string;
  /**
   * Creates an error for operation `op`.
   *
   * @param op the operation that failed
   * @param message what went wrong
   */
  constructor(op: string, message: string) {
    super(`${op}: ${message}`);
    this.name = "GpuError";
    this.op = op;
  }
}

/**
 * A compiled compute kernel: a pipeline and its bind group layout.
 *
 * @example Usage
 * ```ts ignore
 * import { gpu, type Kernel } from "@llm-surgeon/toolkit";
 * const rt = await gpu();
 * const k: Kernel = rt.kernel("noop", "@compute @workgroup_size(1) fn main() {}");
 * console.log(k.name); // "noop"; compiled once, cached by name
 * ```
 */
export interface Kernel {
  /** The name given to {@link Runtime.kernel}; used in error messages. */
  readonly name: string;
  /** The compute pipeline. */
  readonly pipeline: GPUComputePipeline;
  /** Layout of bind group 0. */
  readonly layout: GPUBindGroupLayout;
}

/**
 * A binding: a byte range of a GPU buffer.
 *
 * @example Usage
 * ```ts ignore
 * import { type BufferRange, Tensor } from "@llm-surgeon/toolkit";
 * const t = await Tensor.from(new Float32Array(1024));
 * const tail: BufferRange = t.range(512); // elements 512…1023
 * console.log(tail.offset, tail.size); // 2048 2048 (bytes)
 * ```
 */
export interface BufferRange {
  /** The buffer. */
  buffer: GPUBuffer;
  /** Byte offset (a multiple of the adapter's storage offset alignment). */
  offset: number;
  /** Byte size of the range. */
  size: number;
}

/**
 * Facts about the adapter the runtime chose, for logs and configuration choices.
 *
 * @example Usage
 * ```ts ignore
 * import { type AdapterFacts, gpu } from "@llm-surgeon/toolkit";
 * const facts: AdapterFacts = (await gpu()).adapter;
 * if (facts.isSoftware) console.error(`running on ${facts.description}: keep sizes small`);
 * ```
 */
export interface AdapterFacts {
  /** Human-readable adapter description (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)"). */
  description: string;
  /** Vendor string as reported by the adapter. */
  vendor: string;
  /**
   * True for CPU/software adapters such as Mesa's lavapipe: kernels pick their CPU tunings
   * (large register blocks, no workgroup memory). The environment variable
   * `LLM_SURGEON_TUNING=gpu` (or `software`) overrides it, so the GPU tunings can be tested on a
   * software adapter.
   */
  isSoftware: boolean;
  /**
   * True when the adapter silently ends every loop of a shader invocation after 65,535 loop
   * iterations in total (Mesa's llvmpipe; docs/CONTRIBUTING.md). Kernels split their work so no
   * invocation comes near it. Unaffected by `LLM_SURGEON_TUNING`.
   */
  loopLimited: boolean;
  /** Whether `shader-f16` was enabled on the device. */
  f16: boolean;
}

const PARAM_SLOT = 256; // bytes per uniform slot (>= minUniformBufferOffsetAlignment everywhere)
const PARAM_PAGE = 64 * 1024;

/** Smallest released buffer the software-adapter pool keeps (4 MiB). */
export const POOL_MIN_BYTES = 4 * 2 ** 20;
/** Most bytes the software-adapter pool keeps (1 GiB). */
export const POOL_MAX_BYTES = 2 ** 30;

/**
 * The shared GPU runtime. Get it with {@link gpu}.
 *
 * @example A kernel of your own
 * ```ts ignore
 * import { gpu, packParams, Tensor } from "@llm-surgeon/toolkit";
 * const rt = await gpu();
 * // Storage bindings first, then the parameter block as a uniform; entry point `main`.
 * const double = rt.kernel("double", `
 *   @group(0) @binding(0) var<storage, read_write> x: array<f32>;
 *   @group(0) @binding(1) var<uniform> p: vec4<u32>;
 *   @compute @workgroup_size(64)
 *   fn main(@builtin(global_invocation_id) id: vec3<u32>) {
 *     if (id.x < p.x) { x[id.x] = 2.0 * x[id.x]; }
 *   }`);
 * const t = await Tensor.from([1, 2, 3]);
 * rt.dispatch(double, [t.range()], packParams(t.size), [Math.ceil(t.size / 64)]);
 * console.log(await t.read()); // Float32Array [2, 4, 6] (the read-back waits for the GPU)
 * ```
 */
export class Runtime {
  /** The device. */
  readonly device: GPUDevice;
  /** The adapter facts. */
  readonly adapter: AdapterFacts;
  /** See {@link Runtime.maxBinding}. */
  #maxBinding: number;
  /** `minStorageBufferOffsetAlignment` of the device, in bytes. */
  readonly offsetAlign: number;

  #kernels = new Map<string, Kernel>();
  #sources = new Map<string, string>();
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #pageBuf: GPUBuffer | null = null;
  #pageView: DataView | null = null;
  #pageUsed = 0;
  #pages: GPUBuffer[] = [];
  #toDestroy: GPUBuffer[] = [];
  #errors: Promise<GpuError | null>[] = [];
  #lost: GpuError | null = null;
  #live = 0;
  #peak = 0;
  /** Released large buffers kept for reuse, by size (software adapters only; see createBuffer). */
  #pool = new Map<number, GPUBuffer[]>();
  #pooled = 0;
  #dispatches = 0;
  #syncs = 0;

  /** Wraps a device; use {@link gpu} to get the shared runtime instead. */
  constructor(device: GPUDevice, adapter: AdapterFacts) {
    this.device = device;
    this.adapter = adapter;
    this.#maxBinding = Math.min(device.limits.maxStorageBufferBindingSize, bindingCap());
    this.offsetAlign = device.limits.minStorageBufferOffsetAlignment;
    device.lost.then((info) => {
      this.#lost = new GpuError("device", `GPU device lost (${info.reason}): ${info.message}`);
    });
  }

  /**
   * The largest storage binding kernels use, in bytes: the device's
   * `maxStorageBufferBindingSize`, or less when the environment variable
   * `LLM_SURGEON_MAX_BINDING` (bytes) asks for less. The test task sets 128 MiB, the software
   * adapter's limit, so the tests of tensors larger than one binding stay the same size on GPUs
   * whose limit is 2–4 GiB.
   */
  get maxBinding(): number {
    return this.#maxBinding;
  }

  /**
   * Lowers {@link maxBinding} until the returned function is called, so that tests can run the
   * paths for tensors larger than one binding at small sizes. Kernels read the limit when they
   * record work, so the change applies to work recorded in between.
   *
   * @param bytes the new limit: a positive multiple of 256, at most the current one
   * @returns a function that restores the previous limit
   * @example Usage
   * ```ts ignore
   * const restore = (await gpu()).limitBinding(1 << 20); // 1 MiB bindings
   * try { … } finally { restore(); }
   * ```
   */
  limitBinding(bytes: number): () => void {
    if (!Number.isInteger(bytes) || bytes <= 0 || bytes % 256 !== 0 || bytes > this.#maxBinding) {
      throw new GpuError(
        "limitBinding",
        `the limit must be a positive multiple of 256 bytes, at most ${this.#maxBinding}; got ${bytes}`,
      );
    }
    const previous = this.#maxBinding;
    this.#maxBinding = bytes;
    return () => {
      this.#maxBinding = previous;
    };
  }

  /** Bytes currently held by live buffers created through {@link createBuffer}. */
  get liveBytes(): number {
    return this.#live;
  }

  /**
   * The largest {@link liveBytes} since the runtime was created or since {@link resetPeak}: what a
   * piece of work needed at most (buffers only; the driver's own memory is not counted).
   *
   * @example Usage
   * ```ts ignore
   * rt.resetPeak();
   * await pruneShot(model, curv, 0.3, { structure: "rowcol" });
   * console.log(`peak ${(rt.peakBytes / 2 ** 30).toFixed(2)} GiB`);
   * ```
   */
  get peakBytes(): number {
    return this.#peak;
  }

  /** Restarts {@link peakBytes} from the bytes live now. */
  resetPeak(): void {
    this.#peak = this.#live;
  }

  /** Counters for diagnostics: dispatches recorded and host syncs performed so far. */
  get stats(): { dispatches: number; syncs: number; kernels: number } {
    return { dispatches: this.#dispatches, syncs: this.#syncs, kernels: this.#kernels.size };
  }

  /**
   * Creates a storage buffer of `bytes` bytes (rounded up to 16), counted in {@link liveBytes}.
   * Out-of-memory is reported at the next sync, naming `label`.
   */
  createBuffer(bytes: number, label: string): GPUBuffer {
    this.#checkLost();
    const size = Math.max(16, Math.ceil(bytes / 16) * 16);
    const reused = this.#pool.get(size)?.pop();
    if (reused) {
      // A pooled buffer: cleared in order with the recorded work, so it reads as zeros like a
      // new one (a memset; a fresh allocation of this size costs page faults as well).
      this.#pooled -= size;
      this.#endPass();
      this.#commandEncoder().clearBuffer(reused);
      this.#addLive(size);
      return reused;
    }
    if (size > this.device.limits.maxBufferSize) {
      throw new GpuError(
        label,
        `buffer of ${size} bytes exceeds the device's maxBufferSize ${this.device.limits.maxBufferSize}`,
      );
    }
    this.device.pushErrorScope("out-of-memory");
    this.device.pushErrorScope("validation");
    const buffer = this.device.createBuffer({
      label,
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    this.#watch(label, "creating a buffer of " + size + " bytes");
    this.#watch(label, "creating a buffer of " + size + " bytes (out of memory)");
    this.#addLive(size);
    return buffer;
  }

  /** Counts `size` more live bytes, raising the peak with them. */
  #addLive(size: number): void {
    this.#live += size;
    if (this.#live > this.#peak) this.#peak = this.#live;
  }

  /** Destroys a buffer once the work recorded so far no longer needs it. */
  #destroyAfterWork(buffer: GPUBuffer): void {
    if (this.#encoder) this.#toDestroy.push(buffer);
    else buffer.destroy();
  }

  /**
   * Releases a buffer made by {@link createBuffer}; destruction waits for pending work. On
   * software adapters a buffer of at least {@link POOL_MIN_BYTES} is kept for reuse instead (up to
   * {@link POOL_MAX_BYTES} in all): there a new large buffer costs page faults and zeroing on the
   * host (measured: ≈ 90 ms for 200 MB, against ≈ 20 ms to clear a reused one). Pooled buffers
   * are not counted in {@link liveBytes}; {@link pooledBytes} reports them.
   */
  releaseBuffer(buffer: GPUBuffer): void {
    const size = buffer.size;
    this.#live -= size;
    if (
      this.adapter.isSoftware && size >= POOL_MIN_BYTES && this.#pooled + size <= POOL_MAX_BYTES
    ) {
      const list = this.#pool.get(size) ?? [];
      list.push(buffer);
      this.#pool.set(size, list);
      this.#pooled += size;
      return;
    }
    this.#destroyAfterWork(buffer);
  }

  /** Bytes of released buffers kept for reuse (software adapters; see {@link releaseBuffer}). */
  get pooledBytes(): number {
    return this.#pooled;
  }

  /** Destroys the pooled buffers (after pending work), returning their memory. */
  drainPool(): void {
    for (const list of this.#pool.values()) list.forEach((b) => this.#destroyAfterWork(b));
    this.#pool.clear();
    this.#pooled = 0;
  }

  /**
   * Compiles (once) and returns the kernel named `name`. The WGSL must declare its bindings in
   * group 0 as `@binding(0..n-1)` storage buffers, optionally followed by one uniform binding
   * for parameters, and an entry point `main`. Names must be unique per distinct source.
   */
  kernel(name: string, wgsl: string): Kernel {
    const hit = this.#kernels.get(name);
    if (hit) {
      if (this.#sources.get(name) !== wgsl) {
        throw new GpuError(
          `kernel ${name}`,
          "another WGSL source was already compiled under this name (kernel names must be unique)",
        );
      }
      return hit;
    }
    this.#checkLost();
    this.device.pushErrorScope("validation");
    const module = this.device.createShaderModule({ label: name, code: wgsl });
    const compile = module.getCompilationInfo().then((info) => {
      const errs = info.messages.filter((m) => m.type === "error");
      if (errs.length === 0) return null;
      const lines = wgsl.split("\n");
      const text = errs.map((m) =>
        `line ${m.lineNum}: ${m.message}\n    ${(lines[m.lineNum - 1] ?? "").trim()}`
      ).join("\n");
      return new GpuError(`kernel ${name}`, `WGSL compile error\n${text}`);
    });
    this.#errors.push(compile);
    const pipeline = this.device.createComputePipeline({
      label: name,
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    this.#watch(`kernel ${name}`, "creating the pipeline");
    const k = { name, pipeline, layout: pipeline.getBindGroupLayout(0) };
    this.#kernels.set(name, k);
    this.#sources.set(name, wgsl);
    return k;
  }

  /**
   * Records one dispatch of `kernel` with the given storage bindings (in binding order) and an
   * optional parameter block (bound after the storage bindings as a uniform buffer).
   */
  dispatch(
    kernel: Kernel,
    bindings: BufferRange[],
    params: ArrayBuffer | null,
    groups: [number, number?, number?],
  ): void {
    this.#checkLost();
    const [gx, gy = 1, gz = 1] = groups;
    if (gx === 0 || gy === 0 || gz === 0) return;
    const lim = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (gx > lim || gy > lim || gz > lim) {
      throw new GpuError(
        kernel.name,
        `dispatch ${gx}×${gy}×${gz} exceeds ${lim} workgroups per dimension`,
      );
    }
    const entries: GPUBindGroupEntry[] = bindings.map((b, i) => ({
      binding: i,
      resource: { buffer: b.buffer, offset: b.offset, size: b.size },
    }));
    if (params) {
      const slot = this.#paramSlot(params);
      entries.push({
        binding: bindings.length,
        resource: { buffer: slot.buffer, offset: slot.offset, size: params.byteLength },
      });
    }
    this.device.pushErrorScope("validation");
    const group = this.device.createBindGroup({ layout: kernel.layout, entries });
    this.#watch(kernel.name, "binding its buffers");
    const pass = this.#computePass();
    pass.setPipeline(kernel.pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(gx, gy, gz);
    this.#dispatches++;
  }

  /** Records a buffer-to-buffer copy (both offsets and the size multiples of 4). */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    if (bytes === 0) return;
    const enc = this.#commandEncoder();
    this.#endPass();
    enc.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /** Writes host data into a buffer, ordered after all work recorded so far. */
  write(dst: GPUBuffer, dstOffset: number, data: ArrayBufferView): void {
    this.#checkLost();
    if (this.#encoder) this.flush();
    this.device.queue.writeBuffer(
      dst,
      dstOffset,
      data.buffer as ArrayBuffer,
      data.byteOffset,
      data.byteLength,
    );
  }

  /** Submits everything recorded so far without waiting for it. */
  flush(): void {
    this.#endPass();
    if (!this.#encoder) return;
    for (const p of this.#pages) p.unmap();
    if (this.#pageBuf) this.#pageBuf.unmap();
    this.device.pushErrorScope("validation");
    this.device.queue.submit([this.#encoder.finish()]);
    this.#watch("submit", "executing recorded work");
    this.#encoder = null;
    for (const p of this.#pages) p.destroy();
    if (this.#pageBuf) this.#pageBuf.destroy();
    this.#pages = [];
    this.#pageBuf = null;
    this.#pageView = null;
    for (const b of this.#toDestroy) b.destroy();
    this.#toDestroy = [];
  }

  /** Submits recorded work, waits for the device to finish, and throws any pending error. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.#syncs++;
    await this.checkErrors();
  }

  /** Throws the first error reported since the last check (compile, validation, OOM, loss). */
  async checkErrors(): Promise<void> {
    this.#checkLost();
    if (this.#errors.length === 0) return;
    const errs = this.#errors;
    this.#errors = [];
    const found = (await Promise.all(errs)).filter((e) => e !== null);
    if (found.length > 0) throw found[0];
  }

  /**
   * Copies `bytes` bytes at `offset` of `src` to the host. Submits pending work and waits: this is
   * the one expensive await of the runtime.
   */
  async readBytes(src: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    this.#checkLost();
    const size = Math.max(4, Math.ceil(bytes / 4) * 4);
    const staging = this.device.createBuffer({
      label: "readback",
      size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    if (bytes > 0) this.copy(src, offset, staging, 0, size);
    this.flush();
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (e) {
      await this.checkErrors();
      throw new GpuError("read", `mapping the read-back buffer failed: ${e}`);
    }
    this.#syncs++;
    const out = new ArrayBuffer(bytes);
    new Uint8Array(out).set(new Uint8Array(staging.getMappedRange(), 0, bytes));
    staging.unmap();
    staging.destroy();
    await this.checkErrors();
    return out;
  }

  #checkLost(): void {
    if (this.#lost) throw this.#lost;
  }

  #watch(op: string, what: string): void {
    const p = this.device.popErrorScope().then((e) =>
      e ? new GpuError(op, `${what} failed: ${e.message}`) : null
    );
    this.#errors.push(p);
  }

  #commandEncoder(): GPUCommandEncoder {
    if (!this.#encoder) this.#encoder = this.device.createCommandEncoder();
    return this.#encoder;
  }

  #computePass(): GPUComputePassEncoder {
    if (!this.#pass) this.#pass = this.#commandEncoder().beginComputePass();
    return this.#pass;
  }

  #endPass(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
  }

  #paramSlot(params: ArrayBuffer): { buffer: GPUBuffer; offset: number } {
    if (params.byteLength > PARAM_SLOT) {
      throw new GpuError("params", "parameter block over 256 bytes");
    }
    if (!this.#pageBuf || this.#pageUsed + PARAM_SLOT > PARAM_PAGE) {
      if (this.#pageBuf) this.#pages.push(this.#pageBuf);
      this.#pageBuf = this.device.createBuffer({
        label: "params",
        size: PARAM_PAGE,
        usage: GPUBufferUsage.UNIFORM,
        mappedAtCreation: true,
      });
      this.#pageView = new DataView(this.#pageBuf.getMappedRange());
      this.#pageUsed = 0;
    }
    const offset = this.#pageUsed;
    new Uint8Array(this.#pageView!.buffer, offset, params.byteLength).set(new Uint8Array(params));
    this.#pageUsed += PARAM_SLOT;
    return { buffer: this.#pageBuf, offset };
  }
}

let shared: Promise<Runtime> | null = null;

/**
 * Returns the shared GPU runtime, creating the device on first use with the adapter's maximum
 * limits (and `shader-f16` where available).
 *
 * @example Usage
 * ```ts ignore
 * const rt = await gpu();
 * console.log(rt.adapter.description);
 * ```
 */
export function gpu(): Promise<Runtime> {
  if (!shared) {
    shared = createRuntime().catch((e) => {
      shared = null;
      throw e;
    });
  }
  return shared;
}

async function createRuntime(): Promise<Runtime> {
  if (typeof navigator === "undefined" || !("gpu" in navigator) || !navigator.gpu) {
    throw new GpuError("device", "WebGPU is not available in this runtime (needs Deno 2.x).");
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    throw new GpuError(
      "device",
      "no WebGPU adapter found. Without a GPU install Mesa's software Vulkan driver " +
        "(Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`, or run ./setup.sh) and set " +
        "DENO_WEBGPU_BACKEND=vulkan (the ./deno wrapper does).",
    );
  }
  const requiredLimits: Record<string, number> = {};
  const lim = adapter.limits as unknown as Record<string, number>;
  for (const key in lim) {
    const v = lim[key];
    if (typeof v === "number") requiredLimits[key] = v;
  }
  const features: GPUFeatureName[] = [];
  if (adapter.features.has("shader-f16")) features.push("shader-f16");
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures: features });
  const info = adapter.info;
  const description = info.description || info.device || "unknown adapter";
  const software = Boolean(info.isFallbackAdapter) ||
    /llvmpipe|lavapipe|swiftshader/i.test(description);
  return new Runtime(device, {
    description,
    vendor: info.vendor,
    isSoftware: tuningOverride() ?? software,
    loopLimited: /llvmpipe|lavapipe/i.test(description),
    f16: features.includes("shader-f16"),
  });
}

/** `LLM_SURGEON_MAX_BINDING` in bytes (a positive multiple of 256), or +∞ when unset. */
function bindingCap(): number {
  let v: string | undefined;
  try {
    v = Deno.env.get("LLM_SURGEON_MAX_BINDING");
  } catch {
    return Infinity;
  }
  if (v === undefined || v === "") return Infinity;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0 || n % 256 !== 0) {
    throw new GpuError(
      "device",
      `LLM_SURGEON_MAX_BINDING must be a positive multiple of 256 bytes, got "${v}"`,
    );
  }
  return n;
}

/** `LLM_SURGEON_TUNING` as a software flag: true for `software`, false for `gpu`, else null. */
function tuningOverride(): boolean | null {
  let v: string | undefined;
  try {
    v = Deno.env.get("LLM_SURGEON_TUNING");
  } catch {
    return null; // no --allow-env: the adapter decides
  }
  if (v === undefined || v === "") return null;
  if (v === "gpu") return false;
  if (v === "software") return true;
  throw new GpuError("device", `LLM_SURGEON_TUNING must be "gpu" or "software", got "${v}"`);
}

/**
 * Packs uniform parameters: integers as u32 (or i32 if negative), {@link f32} values as f32.
 * The block is padded to a whole number of 16-byte vec4s (at least one).
 *
 * @param values the parameters, in the order the kernel's uniform struct declares them
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { f32, packParams } from "@llm-surgeon/toolkit";
 * const buf = packParams(768, -1, f32(0.5));
 * assert.equal(buf.byteLength, 16);
 * const view = new DataView(buf);
 * assert.equal(view.getUint32(0, true), 768);
 * assert.equal(view.getInt32(4, true), -1);
 * assert.equal(view.getFloat32(8, true), 0.5);
 * ```
 */
export function packParams(...values: (number | F32)[]): ArrayBuffer {
  const n = Math.max(4, Math.ceil(values.length / 4) * 4);
  const buf = new ArrayBuffer(n * 4);
  const view = new DataView(buf);
  values.forEach((v, i) => {
    if (v instanceof F32) view.setFloat32(i * 4, v.value, true);
    else if (v < 0) view.setInt32(i * 4, v, true);
    else view.setUint32(i * 4, v, true);
  });
  return buf;
}

/**
 * A value to be packed as f32 by {@link packParams}.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { F32, packParams } from "@llm-surgeon/toolkit";
 * // Without the wrapper 2 would be packed as the integer 2.
 * const buf = packParams(new F32(2));
 * assert.equal(new DataView(buf).getFloat32(0, true), 2);
 * ```
 */
export class F32 {
  /** The value. */
  readonly value: number;
  /**
   * Wraps `value`.
   *
   * @param value the float value
   */
  constructor(value: number) {
    this.value = value;
  }
}

/**
 * Marks `x` as an f32 parameter for {@link packParams}.
 *
 * @param x the value
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { f32 } from "@llm-surgeon/toolkit";
 * assert.equal(f32(1e-5).value, 1e-5);
 * ```
 */
export function f32(x: number): F32 {
  return new F32(x);
}

/**
 * Splits `n` workgroups into a 2-D grid that respects the per-dimension limit (65535).
 * Kernels recover the linear index as `wid.y * num_workgroups.x + wid.x`.
 *
 * @param n the number of workgroups
 * @returns `[x, y]` with `x·y ≥ n` and both ≤ 65535
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { grid } from "@llm-surgeon/toolkit";
 * assert.deepEqual(grid(100), [100, 1]);
 * assert.deepEqual(grid(100_000), [50_000, 2]);
 * ```
 */
export function grid(n: number): [number, number] {
  if (n <= 65535) return [Math.max(n, 0), 1];
  const y = Math.ceil(n / 65535);
  return [Math.ceil(n / y), y];
}
