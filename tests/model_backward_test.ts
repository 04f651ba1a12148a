import assert from "node:assert/strict";
import { Tensor } from "../kernels/mod.ts";
import { fromWeights } from "../model/load.ts";
import { chunkLimits, DecoderLM } from "../model/transformer.ts";
import type { ModelConfig, PrunableLinear } from "../model/types.ts";
import { referenceLogits, referenceLoss } from "./_reference_nets.ts";
import {
  type HostTensor,
  randomWeights,
  tinyLlamaConfig,
  tinyOptConfig,
  weightSource,
} from "./_tiny_models.ts";
import { assertClose, matmulRef, relFrob, Rng } from "./_util.ts";

interface Tap {
  lin: PrunableLinear;
  a: Float32Array;
  g: Float32Array | null;
}

async function collect(
  model: Awaited<ReturnType<typeof fromWeights>>,
  ids: Int32Array,
  opts: Parameters<typeof model.calibrate>[2] = {},
) {
  const taps: Tap[] = [];
  const loss = await model.calibrate(ids, async (lin, a, g) => {
    taps.push({ lin, a: await a.read(), g: g ? await g.read() : null });
  }, opts);
  return { loss, taps };
}

/** Central difference of the reference loss in one weight entry (exact f32 steps of 2^-10). */
function fdWeight(
  cfg: ModelConfig,
  w: Map<string, HostTensor>,
  ids: Int32Array,
  name: string,
  idx: number,
) {
  const t = w.get(name)!;
  const h = 2 ** -10;
  const x = t.data[idx];
  t.data[idx] = x + h;
  const a = referenceLoss(cfg, w, ids);
  t.data[idx] = x - h;
  const b = referenceLoss(cfg, w, ids);
  t.data[idx] = x;
  return (a - b) / (2 * h);
}

const IDS = Int32Array.from([3, 17, 33, 8, 8, 39, 1, 12]);

for (
  const [label, cfg] of [
    ["OPT pre-LN", tinyOptConfig()],
    [
      "OPT post-LN + project_in/out, GELU",
      tinyOptConfig({
        do_layer_norm_before: false,
        word_embed_proj_dim: 8,
        activation_function: "gelu",
      }),
    ],
    ["Llama GQA", tinyLlamaConfig()],
    [
      "Llama with biases, tied, llama3 rope",
      tinyLlamaConfig({
        attention_bias: true,
        mlp_bias: true,
        tie_word_embeddings: true,
        rope_scaling: {
          rope_type: "llama3",
          factor: 4,
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 8,
        },
      }),
    ],
  ] as const
) {
  Deno.test(`${label}: calibrate taps give ∂L/∂y and ∂L/∂W = gᵀa matching finite differences`, async () => {
    const w = randomWeights(cfg, 5);
    const model = await fromWeights(cfg, weightSource(w));
    const T = IDS.length;
    try {
      const { loss, taps } = await collect(model, IDS);
      assertClose([loss], [referenceLoss(cfg, w, IDS)], 1e-5, 1e-6, "loss");
      assert.equal(taps.length, model.linears().length, "one tap per module");
      assert.deepEqual(
        new Set(taps.map((t) => t.lin.name)),
        new Set(model.linears().map((l) => l.name)),
      );
      const rng = new Rng(9);
      for (const { lin, a, g } of taps) {
        const [R, C] = [lin.outFeatures, lin.inFeatures + (lin.bias ? 1 : 0)];
        assert.equal(a.length, T * C, `${lin.name} a`);
        assert.ok(g && g.length === T * R, `${lin.name} g`);
        if (lin.bias) {
          for (let t = 0; t < T; t++) {
            assert.equal(a[t * C + C - 1], 1, `${lin.name} ones column`);
          }
        }
        // g at the last position is exactly 0
        for (let r = 0; r < R; r++) {
          assert.ok(g[(T - 1) * R + r] === 0, `${lin.name} g[T-1, ${r}] ≠ 0`);
        }
        // ∂L/∂y entries vs central differences of the reference with y perturbed
        const got: number[] = [], want: number[] = [];
        for (let s = 0; s < 5; s++) {
          const t = rng.int(T - 1), r = rng.int(R), eps = 1e-4;
          const lp = referenceLoss(cfg, w, IDS, { module: lin.name, t, r, eps });
          const lm = referenceLoss(cfg, w, IDS, { module: lin.name, t, r, eps: -eps });
          got.push(g[t * R + r]);
          want.push((lp - lm) / (2 * eps));
        }
        assert.ok(
          relFrob(got, want) <= 1e-3,
          `${lin.name} g: ${got} vs ${want} (${relFrob(got, want)})`,
        );
        // weight (and bias) gradient gᵀa vs central differences in W
        const gw = matmulRef(g, a, R, C, T, true, false);
        const gotW: number[] = [], wantW: number[] = [];
        for (let s = 0; s < 3; s++) {
          const r = rng.int(R), c = rng.int(C);
          gotW.push(gw[r * C + c]);
          wantW.push(
            c < lin.inFeatures
              ? fdWeight(cfg, w, IDS, `${lin.name}.weight`, r * lin.inFeatures + c)
              : fdWeight(cfg, w, IDS, `${lin.name}.bias`, r),
          );
        }
        assert.ok(
          relFrob(gotW, wantW) <= 1e-3,
          `${lin.name} dW: ${gotW} vs ${wantW} (${relFrob(gotW, wantW)})`,
        );
      }
    } finally {
      model.dispose();
    }
  });
}

Deno.test("calibrate: forwardOnly taps (g = null) in forward order with the same inputs; maxOutgrad clamps", async () => {
  const cfg = tinyOptConfig();
  const w = randomWeights(cfg, 6);
  const model = await fromWeights(cfg, weightSource(w));
  try {
    const full = await collect(model, IDS);
    const fwd = await collect(model, IDS, { forwardOnly: true });
    assertClose([fwd.loss], [full.loss], 1e-6, 1e-7, "loss");
    assert.deepEqual(fwd.taps.map((t) => t.lin.name), model.linears().map((l) => l.name));
    const byName = new Map(full.taps.map((t) => [t.lin.name, t]));
    for (const t of fwd.taps) {
      assert.equal(t.g, null);
      assertClose(t.a, byName.get(t.lin.name)!.a, 1e-6, 1e-6, `${t.lin.name} a`);
    }
    const m = 1e-3;
    const clamped = await collect(model, IDS, { maxOutgrad: m });
    for (const t of clamped.taps) {
      const ref = byName.get(t.lin.name)!.g!;
      assertClose(
        t.g!,
        ref.map((v) => Math.max(-m, Math.min(m, v))),
        1e-5,
        1e-9,
        `${t.lin.name} clamped g`,
      );
    }
  } finally {
    model.dispose();
  }
});

Deno.test("calibrate: lowestLayer stops the backward there, with the same taps above it", async () => {
  const cfg = tinyLlamaConfig({ num_hidden_layers: 3 });
  const model = await fromWeights(cfg, weightSource(randomWeights(cfg, 8)));
  try {
    const full = await collect(model, IDS); // (the first call also builds cached tables)
    const live = model.linears()[0].weight.rt.liveBytes;
    const part = await collect(model, IDS, { lowestLayer: 2 });
    assert.equal(part.loss, full.loss);
    const above = full.taps.filter((t) => t.lin.layer >= 2);
    assert.deepEqual(part.taps.map((t) => t.lin.name), above.map((t) => t.lin.name));
    part.taps.forEach((t, i) => {
      assert.deepEqual(t.a, above[i].a, `${t.lin.name} a`);
      assert.deepEqual(t.g, above[i].g, `${t.lin.name} g`);
    });
    assert.equal(model.linears()[0].weight.rt.liveBytes, live, "nothing left behind");
    await assert.rejects(
      () => model.calibrate(IDS, () => {}, { lowestLayer: -1 }),
      /lowestLayer must be a non-negative integer, got -1/,
    );
  } finally {
    model.dispose();
  }
});

Deno.test("calibrate: sampled Fisher is seeded, zero at the last position, and differs from the empirical Fisher", async () => {
  const cfg = tinyLlamaConfig();
  const model = await fromWeights(cfg, weightSource(randomWeights(cfg, 7)));
  try {
    const emp = await collect(model, IDS);
    const s1 = await collect(model, IDS, { fisherSamples: 2, seed: 42 });
    const s2 = await collect(model, IDS, { fisherSamples: 2, seed: 42 });
    const s3 = await collect(model, IDS, { fisherSamples: 2, seed: 43 });
    assert.equal(s1.loss, s2.loss);
    assert.ok(Number.isFinite(s1.loss) && s1.loss > 0);
    let diffEmp = 0, diffSeed = 0;
    for (let i = 0; i < s1.taps.length; i++) {
      const R = s1.taps[i].lin.outFeatures;
      const g = s1.taps[i].g!;
      assert.deepEqual(g, s2.taps[i].g, "same seed, same taps");
      for (let r = 0; r < R; r++) assert.ok(g[(IDS.length - 1) * R + r] === 0, `g[T-1, ${r}] ≠ 0`);
      diffEmp += relFrob(g, emp.taps[i].g!);
      diffSeed += relFrob(g, s3.taps[i].g!);
    }
    assert.ok(diffEmp > 0.1 && diffSeed > 0.01, `sampled taps differ (${diffEmp}, ${diffSeed})`);
    await assert.rejects(
      () => model.calibrate(IDS, () => {}, { fisherSamples: 2, properSampledFisher: true }),
      /properSampledFisher .* is not implemented/,
    );
  } finally {
    model.dispose();
  }
});

Deno.test("LoRA adapters: forward adds B·(A·x) and the taps' g matches finite differences of W + B·A", async () => {
  const cfg = tinyOptConfig();
  const w = randomWeights(cfg, 8);
  const model = await fromWeights(cfg, weightSource(w));
  const rng = new Rng(3);
  try {
    const lin = model.linears().find((l) => l.name === "model.decoder.layers.0.self_attn.q_proj")!;
    const lin2 = model.linears().find((l) => l.name === "model.decoder.layers.1.fc2")!;
    const eff = new Map([...w].map(([k, v]) => [k, { shape: v.shape, data: v.data.slice() }]));
    for (const L of [lin, lin2]) {
      const r = 3;
      const A = Float32Array.from(rng.normals(r * L.inFeatures, 0.3));
      const B = Float32Array.from(rng.normals(L.outFeatures * r, 0.3));
      L.adapter = {
        A: await Tensor.from(A, [r, L.inFeatures]),
        B: await Tensor.from(B, [L.outFeatures, r]),
      };
      const ba = matmulRef(B, A, L.outFeatures, L.inFeatures, r);
      const W = eff.get(`${L.name}.weight`)!.data;
      for (let i = 0; i < W.length; i++) W[i] += ba[i];
    }
    const z = await model.logits(IDS);
    assert.ok(relFrob(z, referenceLogits(cfg, eff, IDS)) <= 1e-4, "logits with adapters");
    const { taps } = await collect(model, IDS);
    for (const t of taps) {
      const R = t.lin.outFeatures;
      const got: number[] = [], want: number[] = [];
      for (let s = 0; s < 3; s++) {
        const tt = rng.int(IDS.length - 1), r = rng.int(R), eps = 1e-4;
        got.push(t.g![tt * R + r]);
        const lp = referenceLoss(cfg, eff, IDS, { module: t.lin.name, t: tt, r, eps });
        const lm = referenceLoss(cfg, eff, IDS, { module: t.lin.name, t: tt, r, eps: -eps });
        want.push((lp - lm) / (2 * eps));
      }
      assert.ok(
        relFrob(got, want) <= 1e-3,
        `${t.lin.name} g with adapters (${relFrob(got, want)})`,
      );
    }
  } finally {
    model.dispose();
  }
});

Deno.test("chunked paths (table pieces, logits row chunks, head chunks) and recomputed activations agree", async () => {
  for (const cfg of [tinyOptConfig({ word_embed_proj_dim: 8 }), tinyLlamaConfig()]) {
    const w = randomWeights(cfg, 10);
    const plain = await fromWeights(cfg, weightSource(w));
    const z0 = await plain.logits(IDS);
    const base = await collect(plain, IDS);
    plain.dispose();
    const saved = { elems: chunkLimits.elems, budget: DecoderLM.activationBudget };
    chunkLimits.elems = 150;
    DecoderLM.activationBudget = 0;
    try {
      const chunked = await fromWeights(cfg, weightSource(w));
      assert.ok((chunked.net.head.pieces.length) > 1, "head stored in pieces");
      assertClose(await chunked.logits(IDS), z0, 1e-5, 1e-5, `${cfg.modelType} logits`);
      const c = await collect(chunked, IDS);
      assertClose([c.loss], [base.loss], 1e-6, 1e-7, "loss");
      for (let i = 0; i < c.taps.length; i++) {
        assertClose(c.taps[i].g!, base.taps[i].g!, 1e-4, 1e-7, `${c.taps[i].lin.name} g`);
        assertClose(c.taps[i].a, base.taps[i].a, 1e-5, 1e-6, `${c.taps[i].lin.name} a`);
      }
      chunked.dispose();
    } finally {
      chunkLimits.elems = saved.elems;
      DecoderLM.activationBudget = saved.budget;
    }
  }
});
