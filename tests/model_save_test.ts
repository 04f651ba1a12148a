/** saveHfFolder: atomic Hugging Face folder, bit-identical round trip, safe replacement. */
import assert from "node:assert/strict";
import { loadConfig } from "../model/config.ts";
import { openCheckpoint, openSafetensors, type TensorToWrite } from "../model/safetensors.ts";
import { SaveError, saveHfFolder } from "../model/save.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { Rng } from "./_util.ts";

const DATA = new URL("../../shared/data/", import.meta.url);
const exists = (url: URL) => Deno.stat(url).then(() => true, () => false);

const CONFIG = {
  model_type: "opt",
  hidden_size: 8,
  num_attention_heads: 2,
  num_hidden_layers: 1,
  ffn_dim: 16,
  vocab_size: 10,
  torch_dtype: "float16",
};

function tensors(seed: number): TensorToWrite[] {
  const rng = new Rng(seed);
  const mk = (name: string, shape: number[]) => ({
    name,
    shape,
    data: Float32Array.from(rng.normals(shape.reduce((a, b) => a * b, 1))),
  });
  return [
    mk("model.decoder.layers.0.fc1.weight", [16, 8]),
    mk("model.decoder.embed_tokens.weight", [10, 8]),
  ];
}

async function readAll(dir: string): Promise<Map<string, Float32Array>> {
  const ck = await openCheckpoint(dir);
  const out = new Map<string, Float32Array>();
  for (const n of ck.names()) out.set(n, await ck.read(n));
  ck.close();
  return out;
}

function siblings(dir: string): string[] {
  const parent = dir.slice(0, dir.lastIndexOf("/"));
  return [...Deno.readDirSync(parent)].map((e) => e.name).sort();
}

Deno.test("save: writes config, F32 safetensors and tokenizer files; loads back bit-identically", async () => {
  const root = await Deno.makeTempDir();
  try {
    const src = `${root}/src`;
    await Deno.mkdir(src);
    await Deno.writeTextFile(`${src}/tokenizer_config.json`, '{"bos_token": "</s>"}');
    await Deno.writeTextFile(`${src}/generation_config.json`, '{"bos_token_id": 2}');
    await Deno.writeTextFile(`${src}/README.md`, "not copied");
    const out = `${root}/out`;
    const ts = tensors(1);
    const written = await saveHfFolder(out, {
      config: CONFIG,
      tensors: ts,
      sourceDir: src,
      metadata: { pruned: "0.5" },
    });
    assert.deepEqual(written.sort(), [
      "config.json",
      "generation_config.json",
      "model.safetensors",
      "tokenizer_config.json",
    ]);
    assert.deepEqual([...Deno.readDirSync(out)].map((e) => e.name).sort(), written.sort());
    const cfg = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
    assert.equal(cfg.torch_dtype, "float32");
    assert.equal(cfg.ffn_dim, 16);
    assert.equal((await loadConfig(out)).modelType, "opt");
    const back = await readAll(out);
    for (const t of ts) assert.deepEqual(back.get(t.name), t.data, t.name);
    const f = await openSafetensors(`${out}/model.safetensors`);
    assert.deepEqual(f.metadata, { format: "pt", pruned: "0.5" });
    f.close();
    assert.deepEqual(siblings(out), ["out", "src"], "no temporary folders left");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("save: replaces an existing model folder, streams async tensors, keeps the old one on failure", async () => {
  const root = await Deno.makeTempDir();
  try {
    const out = `${root}/model`;
    await saveHfFolder(out, { config: CONFIG, tensors: tensors(1) });
    await Deno.writeTextFile(`${out}/stale.txt`, "from the previous save");
    const second = tensors(2);
    const gen = async function* () {
      for (const t of second) yield t;
    };
    await saveHfFolder(out, { config: CONFIG, tensors: gen() });
    const back = await readAll(out);
    for (const t of second) assert.deepEqual(back.get(t.name), t.data);
    assert.deepEqual([...Deno.readDirSync(out)].map((e) => e.name).sort(), [
      "config.json",
      "model.safetensors",
    ]);

    const failing = async function* () {
      yield tensors(3)[0];
      throw new Error("GPU readback failed");
    };
    await assert.rejects(
      () => saveHfFolder(out, { config: CONFIG, tensors: failing() }),
      /GPU readback failed/,
    );
    const still = await readAll(out);
    for (const t of second) assert.deepEqual(still.get(t.name), t.data, "old folder intact");
    assert.deepEqual(siblings(out), ["model"], "no temporary folders left");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("save: refuses to replace a folder that is not a model folder", async () => {
  const root = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${root}/precious.txt`, "keep me");
    await assert.rejects(
      () => saveHfFolder(root, { config: CONFIG, tensors: tensors(1) }),
      (e: unknown) =>
        e instanceof SaveError && /not a model folder/.test(e.message) && e.message.includes(root),
    );
    assert.equal(await Deno.readTextFile(`${root}/precious.txt`), "keep me");
    await Deno.writeTextFile(`${root}/file`, "x");
    await assert.rejects(
      () => saveHfFolder(`${root}/file`, { config: CONFIG, tensors: [] }),
      /not a folder/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test({
  name: "save: a real model folder saved again loads identically (shared/data)",
  ignore: !await exists(new URL("models/hf/stories260K/model.safetensors", DATA)),
  fn: async () => {
    const src = new URL("models/hf/stories260K", DATA).pathname;
    const ck = await openCheckpoint(src);
    const ts: TensorToWrite[] = [];
    for (const n of ck.names()) ts.push({ name: n, shape: ck.shape(n), data: await ck.read(n) });
    ck.close();
    const root = await Deno.makeTempDir();
    try {
      const raw = JSON.parse(await Deno.readTextFile(`${src}/config.json`));
      await saveHfFolder(`${root}/m`, { config: raw, tensors: ts, sourceDir: src });
      assert.deepEqual(
        await Deno.readFile(`${root}/m/model.safetensors`),
        await Deno.readFile(`${src}/model.safetensors`),
      );
      const tok = await loadTokenizer(`${root}/m`);
      assert.deepEqual(
        Array.from(tok.encode("Once upon a time")),
        Array.from((await loadTokenizer(src)).encode("Once upon a time")),
      );
      assert.deepEqual(await loadConfig(`${root}/m`), {
        ...(await loadConfig(src)),
        raw: { ...raw, torch_dtype: "float32" },
      });
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});
