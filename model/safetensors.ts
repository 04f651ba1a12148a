/**
 * safetensors: our own reader and writer of Hugging Face's tensor file format.
 *
 * Layout: 8-byte little-endian header length `N`, `N` bytes of UTF-8 JSON
 * (`{"__metadata__": {...}, "<name>": {"dtype", "shape", "data_offsets": [begin, end]}, ...}`),
 * then the raw little-endian tensor bytes; `data_offsets` are relative to the end of the header.
 * The reader validates the whole header before any tensor is read and reads tensor by tensor
 * with positioned reads, never the whole file. The writer produces the layout of the reference
 * library (header padded with spaces to a multiple of 8, `__metadata__` first, names sorted,
 * contiguous offsets) and writes atomically (temporary name in the same folder, then rename).
 *
 * @module
 */
import type { WeightSource } from "./types.ts";

/**
 * An error in a safetensors file or checkpoint folder; the message names the file and tensor.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { openSafetensors, SafetensorsError } from "@llm-surgeon/toolkit";
 * await assert.rejects(openSafetensors("/no/such/model.safetensors"), (e) => {
 *   assert.ok(e instanceof SafetensorsError);
 *   assert.equal(e.file, "/no/such/model.safetensors");
 *   assert.equal(e.tensor, null); // the whole file is the problem
 *   return true;
 * });
 * ```
 */
export class SafetensorsError extends Error {
  /** File (or folder) the error is about. */
  readonly file: string;
  /** Tensor the error is about, if any. */
  readonly tensor: string | null;
  /**
   * Creates the error; the message is prefixed with the file and tensor.
   * @param file file or folder path
   * @param tensor tensor name, or null when the error concerns the whole file
   * @param message what is wrong
   */
  constructor(file: string, tensor: string | null, message: string) {
    super(`${file}${tensor !== null ? `: tensor "${tensor}"` : ""}: ${message}`);
    this.name = "SafetensorsError";
    this.file = file;
    this.tensor = tensor;
  }
}

/** Element size in bytes of every dtype the safetensors format defines. */
const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
};

/** Dtypes {@link SafetensorsFile.read} converts to f32. */
export const READABLE_DTYPES: readonly string[] = ["F32", "F16", "BF16", "F64", "I32", "I64"];

/** Largest header accepted (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

/**
 * Where one tensor lives in a safetensors file.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import type { TensorInfo } from "@llm-surgeon/toolkit";
 * // A [768, 768] BF16 matrix right after a [768] F32 vector.
 * const info: TensorInfo = { dtype: "BF16", shape: [768, 768], begin: 3072, end: 3072 + 768 * 768 * 2 };
 * assert.equal((info.end - info.begin) / 2, 768 * 768);
 * ```
 */
export interface TensorInfo {
  /** safetensors dtype string, e.g. `"F32"`, `"BF16"`. */
  dtype: string;
  /** Shape (empty for a scalar). */
  shape: number[];
  /** Start of the tensor's bytes, relative to the start of the data section. */
  begin: number;
  /** End (exclusive) of the tensor's bytes, relative to the start of the data section. */
  end: number;
}

/**
 * An open safetensors file: the validated header plus tensor-by-tensor reads.
 *
 * @example Usage
 * ```ts ignore
 * import { openSafetensors, type SafetensorsFile } from "@llm-surgeon/toolkit";
 * const f: SafetensorsFile = await openSafetensors("models/opt-125m/model.safetensors");
 * try {
 *   for (const [name, info] of f.tensors) console.log(name, info.dtype, info.shape);
 *   const bias = await f.read("model.decoder.layers.0.fc1.bias"); // as f32, whatever the dtype
 * } finally {
 *   f.close();
 * }
 * ```
 */
export interface SafetensorsFile {
  /** Path the file was opened from. */
  readonly path: string;
  /** The `__metadata__` string map (empty if absent). */
  readonly metadata: Record<string, string>;
  /** Every tensor in the file, by name, in header order. */
  readonly tensors: Map<string, TensorInfo>;
  /** Byte offset in the file where the data section starts (8 + header length). */
  readonly dataStart: number;
  /** Reads one tensor converted to f32 (F32, F16, BF16, F64, I32, I64). */
  read(name: string): Promise<Float32Array>;
  /** Reads one tensor's raw little-endian bytes, whatever its dtype. */
  readBytes(name: string): Promise<Uint8Array>;
  /** Closes the file handle. */
  close(): void;
}

function isLittleEndian(): boolean {
  return new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
}
const LITTLE_ENDIAN = isLittleEndian();

/** Reads exactly `buf.length` bytes at `pos`, or throws naming the file and tensor. */
async function readFullyAt(
  file: Deno.FsFile,
  pos: number,
  buf: Uint8Array,
  path: string,
  tensor: string | null,
): Promise<void> {
  await file.seek(pos, Deno.SeekMode.Start);
  let done = 0;
  while (done < buf.length) {
    const n = await file.read(buf.subarray(done));
    if (n === null || n === 0) {
      throw new SafetensorsError(
        path,
        tensor,
        `unexpected end of file at byte ${pos + done} (wanted ${buf.length} bytes from ${pos})`,
      );
    }
    done += n;
  }
}

let halfTable: Float32Array | null = null;

/** f32 value of every IEEE half bit pattern (built once, 256 KiB). */
function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    let v: number;
    if (exp === 0) v = frac * 2 ** -24;
    else if (exp === 31) v = frac === 0 ? Infinity : NaN;
    else v = (1 + frac / 1024) * 2 ** (exp - 15);
    table[h] = sign * v;
  }
  halfTable = table;
  return table;
}

/** Converts raw little-endian bytes of `dtype` to f32. */
function toFloat32(bytes: Uint8Array, dtype: string, path: string, name: string): Float32Array {
  if (!LITTLE_ENDIAN) {
    throw new SafetensorsError(path, name, "reading requires a little-endian host");
  }
  const buf = bytes.buffer as ArrayBuffer;
  const off = bytes.byteOffset;
  switch (dtype) {
    case "F32":
      return new Float32Array(buf, off, bytes.length / 4);
    case "F16": {
      const src = new Uint16Array(buf, off, bytes.length / 2);
      const table = halfToFloatTable();
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = table[src[i]];
      return out;
    }
    case "BF16": {
      const src = new Uint16Array(buf, off, bytes.length / 2);
      const out = new Float32Array(src.length);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
      return out;
    }
    case "F64":
      return Float32Array.from(new Float64Array(buf, off, bytes.length / 8));
    case "I32":
      return Float32Array.from(new Int32Array(buf, off, bytes.length / 4));
    case "I64": {
      const src = new BigInt64Array(buf, off, bytes.length / 8);
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = Number(src[i]);
      return out;
    }
    default:
      throw new SafetensorsError(
        path,
        name,
        `dtype ${dtype} cannot be converted to f32 (readable: ${READABLE_DTYPES.join(", ")})`,
      );
  }
}

function isNonNegInt(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

/** Validates a parsed header against the data section size; returns metadata and tensors. */
function parseHeader(
  header: unknown,
  dataSize: number,
  path: string,
): { metadata: Record<string, string>; tensors: Map<string, TensorInfo> } {
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    throw new SafetensorsError(path, null, "header is not a JSON object");
  }
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
        throw new SafetensorsError(path, null, "__metadata__ is not an object");
      }
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== "string") {
          throw new SafetensorsError(path, null, `__metadata__ value of "${k}" is not a string`);
        }
        metadata[k] = v;
      }
      continue;
    }
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
      throw new SafetensorsError(path, name, "header entry is not an object");
    }
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
      throw new SafetensorsError(
        path,
        name,
        `unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(DTYPE_BYTES).join(", ")})`,
      );
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
      throw new SafetensorsError(path, name, `invalid shape ${JSON.stringify(shape)}`);
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 || !isNonNegInt(offsets[0]) ||
      !isNonNegInt(offsets[1]) || offsets[0] > offsets[1]
    ) {
      throw new SafetensorsError(path, name, `invalid data_offsets ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (end > dataSize) {
      throw new SafetensorsError(
        path,
        name,
        `data_offsets [${begin}, ${end}] lie outside the data section (${dataSize} bytes)`,
      );
    }
    let elems = 1;
    for (const d of shape as number[]) elems *= d;
    const want = elems * DTYPE_BYTES[dtype];
    if (want !== end - begin) {
      throw new SafetensorsError(
        path,
        name,
        `shape [${shape.join(", ")}] of ${dtype} needs ${want} bytes but data_offsets span ` +
          `${end - begin}`,
      );
    }
    tensors.set(name, { dtype, shape: [...(shape as number[])], begin, end });
  }
  const spans = [...tensors].filter(([, t]) => t.end > t.begin).sort((a, b) =>
    a[1].begin - b[1].begin
  );
  for (let i = 1; i < spans.length; i++) {
    const [prevName, prev] = spans[i - 1];
    const [name, cur] = spans[i];
    if (cur.begin < prev.end) {
      throw new SafetensorsError(
        path,
        name,
        `data_offsets [${cur.begin}, ${cur.end}] overlap tensor "${prevName}" ` +
          `[${prev.begin}, ${prev.end}]`,
      );
    }
  }
  return { metadata, tensors };
}

/**
 * Opens a safetensors file and validates its header (sizes, dtypes, offsets, overlaps).
 *
 * @param path file path
 * @returns the open file; call `close()` when done
 * @throws SafetensorsError naming the file (and tensor) when the file is broken
 * @example Usage
 * ```ts ignore
 * import { openSafetensors } from "@llm-surgeon/toolkit";
 * const f = await openSafetensors("model.safetensors");
 * const w = await f.read("model.embed_tokens.weight");
 * f.close();
 * ```
 */
export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    throw new SafetensorsError(path, null, `cannot open: ${(e as Error).message}`);
  }
  try {
    const size = (await file.stat()).size;
    if (size < 8) {
      throw new SafetensorsError(path, null, `file has ${size} bytes, too short for a header`);
    }
    const lenBytes = new Uint8Array(8);
    await readFullyAt(file, 0, lenBytes, path, null);
    const headerLen = new DataView(lenBytes.buffer).getBigUint64(0, true);
    if (headerLen > BigInt(size - 8)) {
      throw new SafetensorsError(
        path,
        null,
        `header length ${headerLen} exceeds the file (${size} bytes)`,
      );
    }
    if (headerLen > BigInt(MAX_HEADER_BYTES)) {
      throw new SafetensorsError(
        path,
        null,
        `header length ${headerLen} exceeds the limit of ${MAX_HEADER_BYTES} bytes`,
      );
    }
    const n = Number(headerLen);
    const headerBytes = new Uint8Array(n);
    await readFullyAt(file, 8, headerBytes, path, null);
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
    } catch (e) {
      throw new SafetensorsError(path, null, `header is not valid JSON: ${(e as Error).message}`);
    }
    const dataStart = 8 + n;
    const { metadata, tensors } = parseHeader(header, size - dataStart, path);
    return new OpenFile(path, file, metadata, tensors, dataStart);
  } catch (e) {
    file.close();
    throw e;
  }
}

class OpenFile implements SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  readonly tensors: Map<string, TensorInfo>;
  readonly dataStart: number;
  #file: Deno.FsFile | null;
  /** Serialises seek+read pairs on the shared handle. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(
    path: string,
    file: Deno.FsFile,
    metadata: Record<string, string>,
    tensors: Map<string, TensorInfo>,
    dataStart: number,
  ) {
    this.path = path;
    this.#file = file;
    this.metadata = metadata;
    this.tensors = tensors;
    this.dataStart = dataStart;
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) {
      throw new SafetensorsError(
        this.path,
        name,
        `no such tensor (the file has ${this.tensors.size} tensors)`,
      );
    }
    return t;
  }

  readBytes(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    const run = async () => {
      if (!this.#file) throw new SafetensorsError(this.path, name, "file is closed");
      const buf = new Uint8Array(t.end - t.begin);
      await readFullyAt(this.#file, this.dataStart + t.begin, buf, this.path, name);
      return buf;
    };
    const p = this.#queue.then(run, run);
    this.#queue = p.catch(() => {});
    return p;
  }

  async read(name: string): Promise<Float32Array> {
    const t = this.info(name);
    if (!READABLE_DTYPES.includes(t.dtype)) {
      throw new SafetensorsError(
        this.path,
        name,
        `dtype ${t.dtype} cannot be converted to f32 (readable: ${READABLE_DTYPES.join(", ")})`,
      );
    }
    return toFloat32(await this.readBytes(name), t.dtype, this.path, name);
  }

  close(): void {
    this.#file?.close();
    this.#file = null;
  }
}

/** Joins a folder and a file name with a single slash. */
function join(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * A checkpoint folder opened for reading: a {@link WeightSource} that must be closed.
 *
 * @example Usage
 * ```ts ignore
 * import { type Checkpoint, openCheckpoint } from "@llm-surgeon/toolkit";
 * const ckpt: Checkpoint = await openCheckpoint("models/llama-sharded");
 * console.log(ckpt.files.length, ckpt.dtype("model.embed_tokens.weight")); // e.g. 2 "BF16"
 * ckpt.close();
 * ```
 */
export interface Checkpoint extends WeightSource {
  /** The safetensors files it reads from. */
  readonly files: string[];
  /** Dtype of `name` as stored (e.g. `"BF16"`). */
  dtype(name: string): string;
  /** Closes every file. */
  close(): void;
}

/** Python one-liner that converts a PyTorch-pickle checkpoint folder to safetensors. */
function conversionHint(dir: string): string {
  return `convert it once with Python: python -c "from transformers import ` +
    `AutoModelForCausalLM as M; M.from_pretrained('${dir}').save_pretrained('${dir}-safetensors', ` +
    `safe_serialization=True)" (then also copy the tokenizer files), and point the toolkit at ` +
    `the new folder`;
}

/**
 * Opens the weights of a Hugging Face model folder: `model.safetensors`, or a sharded
 * checkpoint (`model.safetensors.index.json` + shards). A path to a single `.safetensors` file
 * also works. A folder with only `pytorch_model.bin` is refused with a conversion hint.
 *
 * @param dir model folder (or one `.safetensors` file)
 * @example Usage
 * ```ts ignore
 * import { openCheckpoint } from "@llm-surgeon/toolkit";
 * const ckpt = await openCheckpoint("models/opt-125m");
 * console.log(ckpt.shape("model.decoder.embed_tokens.weight"));
 * ckpt.close();
 * ```
 */
export async function openCheckpoint(dir: string): Promise<Checkpoint> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(dir);
  } catch (e) {
    throw new SafetensorsError(dir, null, `cannot open checkpoint: ${(e as Error).message}`);
  }
  if (stat.isFile) return singleFileCheckpoint(await openSafetensors(dir));
  const indexPath = join(dir, "model.safetensors.index.json");
  if (await exists(indexPath)) return await shardedCheckpoint(dir, indexPath);
  const single = join(dir, "model.safetensors");
  if (await exists(single)) return singleFileCheckpoint(await openSafetensors(single));
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  const st = names.filter((n) => n.endsWith(".safetensors"));
  if (st.length === 1) return singleFileCheckpoint(await openSafetensors(join(dir, st[0])));
  if (names.some((n) => n.endsWith(".bin") || n.endsWith(".pt") || n.endsWith(".pth"))) {
    throw new SafetensorsError(
      dir,
      null,
      `only PyTorch pickle weights (pytorch_model.bin) found; this toolkit reads safetensors ` +
        `only: ${conversionHint(dir)}`,
    );
  }
  throw new SafetensorsError(
    dir,
    null,
    `no model.safetensors or model.safetensors.index.json in this folder` +
      (st.length > 1 ? ` (found ${st.join(", ")} but no index)` : ""),
  );
}

function checkpointFrom(
  files: SafetensorsFile[],
  where: Map<string, SafetensorsFile>,
  label: string,
): Checkpoint {
  const get = (name: string): TensorInfo => {
    const f = where.get(name);
    const t = f?.tensors.get(name);
    if (!t) {
      throw new SafetensorsError(
        label,
        name,
        `no such tensor in the checkpoint (${where.size} tensors)`,
      );
    }
    return t;
  };
  return {
    files: files.map((f) => f.path),
    names: () => [...where.keys()],
    has: (name) => where.has(name),
    shape: (name) => [...get(name).shape],
    dtype: (name) => get(name).dtype,
    read: (name) => {
      get(name);
      return where.get(name)!.read(name);
    },
    close: () => files.forEach((f) => f.close()),
  };
}

function singleFileCheckpoint(f: SafetensorsFile): Checkpoint {
  const where = new Map<string, SafetensorsFile>();
  for (const name of f.tensors.keys()) where.set(name, f);
  return checkpointFrom([f], where, f.path);
}

async function shardedCheckpoint(dir: string, indexPath: string): Promise<Checkpoint> {
  let index: unknown;
  try {
    index = JSON.parse(await Deno.readTextFile(indexPath));
  } catch (e) {
    throw new SafetensorsError(indexPath, null, `cannot read index: ${(e as Error).message}`);
  }
  const map = (index as { weight_map?: unknown })?.weight_map;
  if (map === null || typeof map !== "object" || Array.isArray(map)) {
    throw new SafetensorsError(indexPath, null, "index has no weight_map object");
  }
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
    if (
      typeof shard !== "string" || shard.includes("/") || shard.includes("\\") ||
      shard.startsWith(".")
    ) {
      throw new SafetensorsError(
        indexPath,
        name,
        `invalid shard file name ${JSON.stringify(shard)}`,
      );
    }
    if (!byShard.has(shard)) byShard.set(shard, []);
    byShard.get(shard)!.push(name);
  }
  const files: SafetensorsFile[] = [];
  const where = new Map<string, SafetensorsFile>();
  try {
    for (const [shard, names] of byShard) {
      const f = await openSafetensors(join(dir, shard));
      files.push(f);
      for (const name of names) {
        if (!f.tensors.has(name)) {
          throw new SafetensorsError(
            f.path,
            name,
            `listed in ${indexPath} but missing from the shard`,
          );
        }
        where.set(name, f);
      }
    }
  } catch (e) {
    files.forEach((f) => f.close());
    throw e;
  }
  return checkpointFrom(files, where, dir);
}

/**
 * One tensor to write.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import type { TensorToWrite } from "@llm-surgeon/toolkit";
 * const t: TensorToWrite = { name: "lm_head.bias", shape: [2, 3], data: new Float32Array(6) };
 * assert.equal(t.shape.reduce((a, b) => a * b, 1), t.data.length);
 * ```
 */
export interface TensorToWrite {
  /** Tensor name (unique, not `__metadata__`). */
  name: string;
  /** Shape; its product must equal `data.length`. */
  shape: number[];
  /** Values, written as F32. */
  data: Float32Array;
}

/** Builds the padded header bytes for tensors written in the given order. */
function buildHeader(
  entries: { name: string; shape: number[]; bytes: number }[],
  metadata: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const e of entries) {
    header[e.name] = { dtype: "F32", shape: e.shape, data_offsets: [offset, offset + e.bytes] };
    offset += e.bytes;
  }
  let json = JSON.stringify(header);
  const len = new TextEncoder().encode(json).length;
  json += " ".repeat((8 - (len % 8)) % 8);
  const body = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + body.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(body.length), true);
  out.set(body, 8);
  return out;
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}

function checkTensor(path: string, t: TensorToWrite, seen: Set<string>): void {
  if (typeof t.name !== "string" || t.name === "" || t.name === "__metadata__") {
    throw new SafetensorsError(path, String(t.name), "invalid tensor name");
  }
  if (seen.has(t.name)) throw new SafetensorsError(path, t.name, "duplicate tensor name");
  seen.add(t.name);
  if (!Array.isArray(t.shape) || !t.shape.every(isNonNegInt)) {
    throw new SafetensorsError(path, t.name, `invalid shape ${JSON.stringify(t.shape)}`);
  }
  if (!(t.data instanceof Float32Array)) {
    throw new SafetensorsError(path, t.name, "data is not a Float32Array");
  }
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (n !== t.data.length) {
    throw new SafetensorsError(
      path,
      t.name,
      `shape [${t.shape.join(", ")}] has ${n} elements but data has ${t.data.length}`,
    );
  }
}

function bytesOf(data: Float32Array): Uint8Array {
  return new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
}

/** A temporary file name next to `path`, unique per process and call. */
export function tempPathFor(path: string): string {
  return `${path}.tmp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
}

/**
 * Writes F32 tensors to a safetensors file atomically (temporary file in the same folder, then
 * rename). The header lists `__metadata__` first (with `format: "pt"` unless given), then the
 * tensors sorted by name with contiguous offsets, padded with spaces to a multiple of 8 bytes.
 * An array is streamed tensor by tensor; an async iterable is first spooled to a temporary
 * data file next to `path` (its shapes are not known up front), then copied behind the header.
 *
 * @param path destination file
 * @param tensors the tensors (names unique)
 * @param metadata extra `__metadata__` strings
 * @example Usage
 * ```ts ignore
 * import { writeSafetensors } from "@llm-surgeon/toolkit";
 * await writeSafetensors("w.safetensors", [{ name: "w", shape: [2], data: new Float32Array([1, 2]) }]);
 * ```
 */
export async function writeSafetensors(
  path: string,
  tensors: TensorToWrite[] | AsyncIterable<TensorToWrite> | Iterable<TensorToWrite>,
  metadata: Record<string, string> = {},
): Promise<void> {
  if (!LITTLE_ENDIAN) {
    throw new SafetensorsError(path, null, "writing requires a little-endian host");
  }
  const meta: Record<string, string> = { format: "pt", ...metadata };
  for (const [k, v] of Object.entries(meta)) {
    if (typeof v !== "string") {
      throw new SafetensorsError(path, null, `metadata value of "${k}" is not a string`);
    }
  }
  if (Array.isArray(tensors)) return await writeArray(path, tensors, meta);
  if (Symbol.iterator in tensors) return await writeArray(path, [...tensors], meta);
  return await writeSpooled(path, tensors, meta);
}

async function writeArray(
  path: string,
  tensors: TensorToWrite[],
  metadata: Record<string, string>,
): Promise<void> {
  const seen = new Set<string>();
  for (const t of tensors) checkTensor(path, t, seen);
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header = buildHeader(
    sorted.map((t) => ({ name: t.name, shape: t.shape, bytes: t.data.byteLength })),
    metadata,
  );
  await atomicWrite(path, async (file) => {
    await writeAll(file, header);
    for (const t of sorted) await writeAll(file, bytesOf(t.data));
  });
}

async function writeSpooled(
  path: string,
  tensors: AsyncIterable<TensorToWrite>,
  metadata: Record<string, string>,
): Promise<void> {
  const spoolPath = tempPathFor(path) + ".data";
  const entries: { name: string; shape: number[]; bytes: number; at: number }[] = [];
  const seen = new Set<string>();
  try {
    const spool = await Deno.open(spoolPath, { write: true, create: true, truncate: true });
    try {
      let at = 0;
      for await (const t of tensors) {
        checkTensor(path, t, seen);
        await writeAll(spool, bytesOf(t.data));
        entries.push({ name: t.name, shape: [...t.shape], bytes: t.data.byteLength, at });
        at += t.data.byteLength;
      }
    } finally {
      spool.close();
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const header = buildHeader(entries, metadata);
    const src = await Deno.open(spoolPath, { read: true });
    try {
      await atomicWrite(path, async (file) => {
        await writeAll(file, header);
        const chunk = new Uint8Array(1 << 22);
        for (const e of entries) {
          let done = 0;
          while (done < e.bytes) {
            const n = Math.min(chunk.length, e.bytes - done);
            await readFullyAt(src, e.at + done, chunk.subarray(0, n), spoolPath, e.name);
            await writeAll(file, chunk.subarray(0, n));
            done += n;
          }
        }
      });
    } finally {
      src.close();
    }
  } finally {
    await Deno.remove(spoolPath).catch(() => {});
  }
}

/**
 * Runs `fill` on a temporary file next to `path`, then renames it over `path`; the temporary
 * file is removed on failure.
 *
 * @param path destination
 * @param fill writes the contents
 */
export async function atomicWrite(
  path: string,
  fill: (file: Deno.FsFile) => Promise<void>,
): Promise<void> {
  const tmp = tempPathFor(path);
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    try {
      await fill(file);
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}
