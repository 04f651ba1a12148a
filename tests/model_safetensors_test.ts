/** safetensors reader/writer: layout, dtype conversion, sharded checkpoints, hostile files. */
import assert from "node:assert/strict";
import {
  MAX_HEADER_BYTES,
  openCheckpoint,
  openSafetensors,
  SafetensorsError,
  type TensorToWrite,
  writeSafetensors,
} from "../model/safetensors.ts";
import { Rng } from "./_util.ts";

const DATA = new URL("../../shared/data/", import.meta.url);
const exists = (url: URL) => Deno.stat(url).then(() => true, () => false);

function randomTensor(rng: Rng, name: string, shape: number[]): TensorToWrite {
  const n = shape.reduce((a, b) => a * b, 1);
  return { name, shape, data: Float32Array.from(rng.normals(n)) };
}

/** A safetensors file from a raw header object (or string) and data bytes, built by hand. */
async function rawFile(
  dir: string,
  name: string,
  header: unknown,
  data: Uint8Array = new Uint8Array(0),
  headerLen?: bigint,
): Promise<string> {
  const json = new TextEncoder().encode(
    typeof header === "string" ? header : JSON.stringify(header),
  );
  const buf = new Uint8Array(8 + json.length + data.length);
  new DataView(buf.buffer).setBigUint64(0, headerLen ?? BigInt(json.length), true);
  buf.set(json, 8);
  buf.set(data, 8 + json.length);
  const path = `${dir}/${name}`;
  await Deno.writeFile(path, buf);
  return path;
}

async function assertStError(
  fn: () => Promise<unknown>,
  file: string,
  tensor: string | null,
  words: RegExp,
): Promise<void> {
  await assert.rejects(fn, (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${e}`);
    assert.ok(e.message.includes(file), `message should name the file: ${e.message}`);
    if (tensor !== null) {
      assert.ok(e.message.includes(`"${tensor}"`), `message should name ${tensor}: ${e.message}`);
    }
    assert.match(e.message, words);
    return true;
  });
}

Deno.test("safetensors: write/read round trip is bit-identical, layout as the reference library", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rng = new Rng(3);
    const tensors = [
      randomTensor(rng, "z.weight", [7, 5]),
      randomTensor(rng, "a.bias", [3]),
      randomTensor(rng, "m.scalar", []),
      randomTensor(rng, "e.empty", [0, 4]),
      randomTensor(rng, "b.big", [33, 17]),
    ];
    tensors[1].data[0] = -0;
    tensors[1].data[1] = Infinity;
    const path = `${dir}/t.safetensors`;
    await writeSafetensors(path, tensors, { note: "hi" });
    const bytes = await Deno.readFile(path);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal((8 + n) % 8, 0, "data must start 8-byte aligned");
    const headerText = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    assert.ok(headerText.startsWith('{"__metadata__":{"format":"pt","note":"hi"}'), headerText);
    assert.match(headerText, /^[^ ]*} *$/, "padding is trailing spaces");
    const header = JSON.parse(headerText);
    const names = Object.keys(header).slice(1);
    assert.deepEqual(names, [...names].sort());
    let expectOffset = 0;
    for (const name of names) {
      assert.equal(header[name].dtype, "F32");
      assert.equal(header[name].data_offsets[0], expectOffset, `${name} offsets contiguous`);
      expectOffset = header[name].data_offsets[1];
    }
    assert.equal(bytes.length, 8 + n + expectOffset);
    const f = await openSafetensors(path);
    assert.deepEqual(f.metadata, { format: "pt", note: "hi" });
    // concurrent reads on one handle must not interleave
    const back = await Promise.all(tensors.map((t) => f.read(t.name)));
    tensors.forEach((t, i) => {
      assert.deepEqual(f.tensors.get(t.name)!.shape, t.shape);
      assert.deepEqual(
        new Uint8Array(back[i].buffer, back[i].byteOffset, back[i].byteLength),
        new Uint8Array(t.data.buffer),
        t.name,
      );
    });
    f.close();
    const left = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.deepEqual(left, ["t.safetensors"], "no temporary files left");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safetensors: an async iterable is written byte-identically to an array", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rng = new Rng(9);
    const tensors = [
      randomTensor(rng, "q", [4, 6]),
      randomTensor(rng, "c", [9]),
      randomTensor(rng, "k", [2, 2]),
    ];
    await writeSafetensors(`${dir}/a.safetensors`, tensors);
    const gen = async function* () {
      for (const t of tensors) yield t;
    };
    await writeSafetensors(`${dir}/b.safetensors`, gen());
    assert.deepEqual(
      await Deno.readFile(`${dir}/b.safetensors`),
      await Deno.readFile(`${dir}/a.safetensors`),
    );
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "a.safetensors",
      "b.safetensors",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safetensors: F16, BF16, F64, I32 and I64 are converted to f32", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rng = new Rng(5);
    // F16: reference values from the platform's Float16Array (independent of our table).
    const halfVals = [
      0,
      -0,
      1,
      -2.5,
      65504,
      6e-8,
      1e-5,
      Infinity,
      -Infinity,
      ...rng.normals(40, 100),
    ];
    const half = new Float16Array(halfVals);
    const halfBits = new Uint16Array(half.buffer);
    // BF16: well-known bit patterns.
    const bf = new Uint16Array([0x3f80, 0xc000, 0x4049, 0x0000, 0x7f80, 0x0001]);
    const bfExpect = [1, -2, 3.140625, 0, Infinity, 9.183549615799121e-41];
    const f64 = Float64Array.from(rng.normals(5));
    const i32 = Int32Array.from([-7, 0, 123456, 2 ** 31 - 1]);
    const i64 = BigInt64Array.from([-3n, 50272n, 2n ** 40n]);
    const parts = [
      ["h", "F16", [halfVals.length], new Uint8Array(halfBits.buffer)],
      ["b", "BF16", [2, 3], new Uint8Array(bf.buffer)],
      ["d", "F64", [5], new Uint8Array(f64.buffer)],
      ["i", "I32", [4], new Uint8Array(i32.buffer)],
      ["l", "I64", [3], new Uint8Array(i64.buffer)],
    ] as const;
    const header: Record<string, unknown> = {};
    let off = 0;
    const chunks: Uint8Array[] = [];
    for (const [name, dtype, shape, bytes] of parts) {
      header[name] = { dtype, shape, data_offsets: [off, off + bytes.length] };
      off += bytes.length;
      chunks.push(bytes);
    }
    const data = new Uint8Array(off);
    let at = 0;
    for (const c of chunks) {
      data.set(c, at);
      at += c.length;
    }
    const path = await rawFile(dir, "mixed.safetensors", header, data);
    const f = await openSafetensors(path);
    const h = await f.read("h");
    for (let i = 0; i < half.length; i++) {
      assert.ok(Object.is(h[i], Math.fround(half[i])), `F16[${i}]: ${h[i]} vs ${half[i]}`);
    }
    assert.deepEqual(Array.from(await f.read("b")), bfExpect.map(Math.fround));
    assert.deepEqual(Array.from(await f.read("d")), Array.from(f64, Math.fround));
    assert.deepEqual(Array.from(await f.read("i")), Array.from(i32, Math.fround));
    assert.deepEqual(Array.from(await f.read("l")), [-3, 50272, 2 ** 40]);
    assert.equal(f.tensors.get("b")!.dtype, "BF16");
    f.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safetensors: hostile or broken files give errors naming the file and tensor", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const ok = { w: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };
    const eight = new Uint8Array(8);
    let p = `${dir}/short.safetensors`;
    await Deno.writeFile(p, new Uint8Array(5));
    await assertStError(() => openSafetensors(p), p, null, /too short/);

    p = await rawFile(dir, "len.safetensors", ok, eight, 10_000n);
    await assertStError(() => openSafetensors(p), p, null, /exceeds the file/);
    p = await rawFile(dir, "huge.safetensors", ok, eight, 2n ** 62n);
    await assertStError(() => openSafetensors(p), p, null, /exceeds the file/);
    // a header length within a (sparse) file but above the limit: refused before allocating
    p = await rawFile(dir, "limit.safetensors", ok, eight, BigInt(MAX_HEADER_BYTES + 8));
    await Deno.truncate(p, MAX_HEADER_BYTES + 64);
    await assertStError(() => openSafetensors(p), p, null, /exceeds the limit/);

    p = await rawFile(dir, "json.safetensors", '{"w": {"dtype": "F32",', eight);
    await assertStError(() => openSafetensors(p), p, null, /not valid JSON/);
    p = await rawFile(dir, "array.safetensors", "[1,2]", eight);
    await assertStError(() => openSafetensors(p), p, null, /not a JSON object/);
    p = await rawFile(dir, "meta.safetensors", { __metadata__: { a: 1 }, ...ok }, eight);
    await assertStError(() => openSafetensors(p), p, null, /__metadata__/);

    const cases: [string, Record<string, unknown>, RegExp][] = [
      ["range", { w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, /outside the data/],
      ["dtype", { w: { dtype: "F17", shape: [2], data_offsets: [0, 8] } }, /unknown dtype/],
      ["mismatch", { w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, /needs 12 bytes/],
      ["shape", { w: { dtype: "F32", shape: [-2], data_offsets: [0, 8] } }, /invalid shape/],
      ["fshape", { w: { dtype: "F32", shape: [1.5], data_offsets: [0, 8] } }, /invalid shape/],
      ["offs", { w: { dtype: "F32", shape: [2], data_offsets: [8, 0] } }, /invalid data_offsets/],
      ["entry", { w: 5 }, /not an object/],
    ];
    for (const [name, header, words] of cases) {
      p = await rawFile(dir, `${name}.safetensors`, header, eight);
      await assertStError(() => openSafetensors(p), p, "w", words);
    }
    p = await rawFile(dir, "overlap.safetensors", {
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      w: { dtype: "F32", shape: [1], data_offsets: [4, 8] },
    }, eight);
    await assertStError(() => openSafetensors(p), p, "w", /overlap tensor "a"/);

    p = await rawFile(dir, "u8.safetensors", {
      w: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
      bytes: { dtype: "U8", shape: [4], data_offsets: [4, 8] },
    }, eight);
    const f = await openSafetensors(p);
    await assertStError(() => f.read("nope"), p, "nope", /no such tensor/);
    await assertStError(() => f.read("bytes"), p, "bytes", /cannot be converted/);
    assert.deepEqual(Array.from(await f.readBytes("bytes")), [0, 0, 0, 0]);
    f.close();

    await assertStError(
      () =>
        writeSafetensors(`${dir}/bad.safetensors`, [{
          name: "x",
          shape: [3],
          data: new Float32Array(2),
        }]),
      `${dir}/bad.safetensors`,
      "x",
      /3 elements but data has 2/,
    );
    await assertStError(
      () =>
        writeSafetensors(`${dir}/dup.safetensors`, [
          { name: "x", shape: [1], data: new Float32Array(1) },
          { name: "x", shape: [1], data: new Float32Array(1) },
        ]),
      `${dir}/dup.safetensors`,
      "x",
      /duplicate/,
    );
    const leftovers = [...Deno.readDirSync(dir)].filter((e) => e.name.includes(".tmp-"));
    assert.deepEqual(leftovers, [], "failed writes leave no temporary files");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safetensors: checkpoints — single file, sharded index, pickle-only folder", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rng = new Rng(11);
    const a = [randomTensor(rng, "l0.w", [3, 4]), randomTensor(rng, "l0.b", [3])];
    const b = [randomTensor(rng, "l1.w", [2, 3])];
    await Deno.mkdir(`${dir}/sharded`);
    await writeSafetensors(`${dir}/sharded/model-00001-of-00002.safetensors`, a);
    await writeSafetensors(`${dir}/sharded/model-00002-of-00002.safetensors`, b);
    const index = {
      metadata: { total_size: 80 },
      weight_map: {
        "l0.w": "model-00001-of-00002.safetensors",
        "l0.b": "model-00001-of-00002.safetensors",
        "l1.w": "model-00002-of-00002.safetensors",
      },
    };
    await Deno.writeTextFile(`${dir}/sharded/model.safetensors.index.json`, JSON.stringify(index));
    const ck = await openCheckpoint(`${dir}/sharded`);
    assert.deepEqual(ck.names().sort(), ["l0.b", "l0.w", "l1.w"]);
    assert.deepEqual(ck.shape("l1.w"), [2, 3]);
    assert.deepEqual(await ck.read("l1.w"), b[0].data);
    assert.deepEqual(await ck.read("l0.b"), a[1].data);
    assert.equal(ck.has("l2.w"), false);
    assert.throws(() => ck.shape("l2.w"), /"l2\.w"/);
    ck.close();

    (index.weight_map as Record<string, string>)["l9.w"] = "model-00002-of-00002.safetensors";
    await Deno.writeTextFile(`${dir}/sharded/model.safetensors.index.json`, JSON.stringify(index));
    await assertStError(
      () => openCheckpoint(`${dir}/sharded`),
      "model-00002-of-00002",
      "l9.w",
      /missing/,
    );

    await Deno.mkdir(`${dir}/single`);
    await writeSafetensors(`${dir}/single/model.safetensors`, b);
    const one = await openCheckpoint(`${dir}/single`);
    assert.deepEqual(one.names(), ["l1.w"]);
    one.close();

    await Deno.mkdir(`${dir}/pickle`);
    await Deno.writeFile(`${dir}/pickle/pytorch_model.bin`, new Uint8Array(16));
    await assertStError(
      () => openCheckpoint(`${dir}/pickle`),
      `${dir}/pickle`,
      null,
      /safe_serialization=True/,
    );
    await Deno.mkdir(`${dir}/empty`);
    await assertStError(
      () => openCheckpoint(`${dir}/empty`),
      `${dir}/empty`,
      null,
      /no model\.safetensors/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "safetensors: a real checkpoint re-written by us is byte-identical (shared/data)",
  ignore: !await exists(new URL("models/hf/stories260K/model.safetensors", DATA)),
  fn: async () => {
    const path = new URL("models/hf/stories260K/model.safetensors", DATA).pathname;
    const f = await openSafetensors(path);
    assert.equal(f.tensors.size, 47);
    const tensors: TensorToWrite[] = [];
    let params = 0;
    for (const [name, t] of f.tensors) {
      const data = await f.read(name);
      for (const v of data) assert.ok(Number.isFinite(v), `${name} has a non-finite value`);
      params += data.length;
      tensors.push({ name, shape: t.shape, data });
    }
    assert.equal(params, 260_032, "parameter count from MANIFEST.md §8");
    const dir = await Deno.makeTempDir();
    try {
      await writeSafetensors(`${dir}/m.safetensors`, tensors.reverse(), f.metadata);
      assert.deepEqual(await Deno.readFile(`${dir}/m.safetensors`), await Deno.readFile(path));
    } finally {
      f.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
