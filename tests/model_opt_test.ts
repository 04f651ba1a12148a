import assert from "node:assert/strict";
import { fromWeights, loadModel } from "../model/load.ts";
import { assertLogitsClose, referenceLogits, referenceLoss } from "./_reference_nets.ts";
import { makeTinyModelDir, randomWeights, tinyOptConfig, weightSource } from "./_tiny_models.ts";
import { assertClose } from "./_util.ts";

const IDS = Int32Array.from([2, 5, 17, 33, 8, 8, 39, 0, 12, 21, 4]);

for (
  const [label, over] of [
    ["pre-LN, ReLU, tied head", {}],
    ["post-LN with project_in/out (opt-350m layout)", {
      do_layer_norm_before: false,
      word_embed_proj_dim: 8,
    }],
    ["pre-LN with project_in/out, GELU, no affine LN, untied head", {
      word_embed_proj_dim: 12,
      activation_function: "gelu",
      layer_norm_elementwise_affine: false,
      tie_word_embeddings: false,
    }],
  ] as const
) {
  Deno.test(`OPT ${label}: logits and nll match the float64 reference`, async () => {
    const cfg = tinyOptConfig(over);
    const w = randomWeights(cfg, 11);
    const model = await fromWeights(cfg, weightSource(w));
    try {
      assertLogitsClose(await model.logits(IDS), referenceLogits(cfg, w, IDS), label);
      const nll = await model.nll(IDS);
      assertClose([nll], [referenceLoss(cfg, w, IDS)], 1e-5, 1e-6, "nll");
    } finally {
      model.dispose();
    }
  });
}

Deno.test("OPT: token ids outside the vocabulary and too many positions are refused with a clear error", async () => {
  const cfg = tinyOptConfig();
  const model = await fromWeights(cfg, weightSource(randomWeights(cfg, 1)));
  try {
    await assert.rejects(
      () => model.nll(Int32Array.from([2, 40])),
      /ids\[1\] = 40 is outside the vocabulary \[0, 40\)/,
    );
    await assert.rejects(
      () => model.nll(new Int32Array(33)),
      /33 positions exceed max_position_embeddings 32/,
    );
  } finally {
    model.dispose();
  }
});

Deno.test("OPT: a weight with the wrong shape is named in the error", async () => {
  const cfg = tinyOptConfig();
  const w = randomWeights(cfg, 1);
  w.set("model.decoder.layers.1.fc1.weight", { shape: [24, 15], data: new Float32Array(24 * 15) });
  await assert.rejects(
    () => fromWeights(cfg, weightSource(w)),
    /model\.decoder\.layers\.1\.fc1\.weight has shape \[24, 15\], the config implies \[24, 16\]/,
  );
});

Deno.test("loadModel reads a saved tiny folder (weights + tokenizer); save() round-trips bit-identically", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tiny-opt-" });
  try {
    const { config, weights } = await makeTinyModelDir(`${dir}/src`, "opt", 4, {
      do_layer_norm_before: false,
      word_embed_proj_dim: 8,
    });
    const model = await loadModel(`${dir}/src`);
    assert.ok(model.tokenizer, "tokenizer loaded");
    const ids = model.tokenizer!.encode("hello world");
    assert.equal(ids[0], 2, "OPT prepends </s> = 2");
    assertClose(
      [await model.nll(ids)],
      [referenceLoss(config, weights, ids)],
      1e-5,
      1e-6,
      "nll from folder",
    );
    // prune something in place, save, reload
    const lin = model.linears()[3];
    lin.weight.write(new Float32Array(lin.weight.size));
    await model.save(`${dir}/out`);
    const back = await loadModel(`${dir}/out`);
    const names = (m: typeof model) => m.linears().map((l) => l.name);
    assert.deepEqual(names(back), names(model));
    for (let i = 0; i < model.linears().length; i++) {
      assert.deepEqual(
        await back.linears()[i].weight.read(),
        await model.linears()[i].weight.read(),
      );
    }
    assert.deepEqual(await back.logits(ids), await model.logits(ids));
    assert.ok(back.tokenizer, "tokenizer files copied");
    const files = [...Deno.readDirSync(`${dir}/out`)].map((e) => e.name).sort();
    assert.ok(
      files.includes("config.json") && files.includes("model.safetensors") &&
        files.includes("tokenizer.json"),
      `${files}`,
    );
    model.dispose();
    back.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
