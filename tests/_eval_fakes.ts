/**
 * Fakes for the evaluation tests: a character tokenizer with BOS and a CPU "model" whose
 * next-token distribution is a fixed function of the previous token.
 */
import { Tensor } from "../kernels/tensor.ts";
import type { CausalLM, ModuleKind, PrunableLinear, TextTokenizer } from "../model/types.ts";
import type { SparsityReport, SurgeonDeps } from "../examples/surgeon.ts";
import { Rng } from "./_util.ts";

/** Character-level tokenizer: BOS = 1, then one id per UTF-16 unit (code % 250 + 3). */
export class CharTokenizer implements TextTokenizer {
  readonly bosId = 1;
  readonly eosId = 2;
  readonly vocabSize = 253;
  readonly chatTemplate = null;
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): Int32Array {
    const bos = opts.addSpecialTokens === false ? 0 : 1;
    const out = new Int32Array(text.length + bos);
    if (bos) out[0] = 1;
    for (let i = 0; i < text.length; i++) out[i + bos] = (text.charCodeAt(i) % 250) + 3;
    return out;
  }
  decode(ids: ArrayLike<number>): string {
    return Array.from(ids, (i) => (i >= 3 ? String.fromCharCode(i - 3) : "")).join("");
  }
}

/** A CPU model: logits at a position are `logitsOf(previous token)`; nll as the CausalLM contract. */
export class CpuBigramModel {
  constructor(
    readonly vocab: number,
    readonly logitsOf: (tok: number) => Float64Array,
    readonly maxSeqLen = 16,
  ) {}
  calls = 0;
  nll(ids: Int32Array): Promise<number> {
    this.calls++;
    let s = 0;
    for (let t = 0; t + 1 < ids.length; t++) {
      const z = this.logitsOf(ids[t]);
      let m = -Infinity;
      for (const v of z) m = Math.max(m, v);
      let se = 0;
      for (const v of z) se += Math.exp(v - m);
      s += m + Math.log(se) - z[ids[t + 1]];
    }
    return Promise.resolve(s / (ids.length - 1));
  }
}

const HIDDEN = 6;

/**
 * A tiny CPU language model over {@link CharTokenizer} ids whose prunable linears are GPU tensors:
 * h = E[tok] (fixed), u = relu(fc1·h + b1), z = Eᵀ·(fc2·u) + Eᵀh. Pruning its linears changes its
 * perplexity, so run-folder and resume tests see real effects.
 */
export async function fakeModel(layers = 2, seed = 1): Promise<CausalLM> {
  const rng = new Rng(seed);
  const tok = new CharTokenizer();
  const V = tok.vocabSize;
  const E = Float64Array.from(rng.normals(V * HIDDEN, 0.7));
  const lins: PrunableLinear[] = [];
  for (let l = 0; l < layers; l++) {
    for (
      const [kind, R, C, bias] of [["fc1", 8, HIDDEN, true], ["fc2", HIDDEN, 8, false]] as const
    ) {
      lins.push({
        name: `model.decoder.layers.${l}.${kind}`,
        layer: l,
        kind: kind as ModuleKind,
        outFeatures: R,
        inFeatures: C,
        weight: await Tensor.from(
          Float32Array.from(rng.normals(R * C, 0.5)),
          [R, C],
          "f32",
          `${kind}${l}`,
        ),
        bias: bias
          ? await Tensor.from(Float32Array.from(rng.normals(R, 0.1)), [R], "f32", `b${l}`)
          : null,
        adapter: null,
      });
    }
  }
  const nll = async (ids: Int32Array): Promise<number> => {
    const w = await Promise.all(lins.map((x) => x.weight.read()));
    const b = await Promise.all(lins.map((x) => x.bias?.read() ?? null));
    let total = 0;
    for (let t = 0; t + 1 < ids.length; t++) {
      let h = Array.from(E.subarray(ids[t] * HIDDEN, ids[t] * HIDDEN + HIDDEN));
      for (let i = 0; i < lins.length; i += 2) {
        const u = Array.from({ length: 8 }, (_, r) => {
          let s = b[i]![r];
          for (let c = 0; c < HIDDEN; c++) s += w[i][r * HIDDEN + c] * h[c];
          return Math.max(0, s);
        });
        h = h.map((hc, r) => {
          let s = hc;
          for (let c = 0; c < 8; c++) s += w[i + 1][r * 8 + c] * u[c];
          return s;
        });
      }
      const z = Array.from({ length: V }, (_, j) => {
        let s = 0;
        for (let c = 0; c < HIDDEN; c++) s += E[j * HIDDEN + c] * h[c];
        return s;
      });
      const m = Math.max(...z);
      total += m + Math.log(z.reduce((a, v) => a + Math.exp(v - m), 0)) - z[ids[t + 1]];
    }
    return total / (ids.length - 1);
  };
  return {
    family: "opt",
    config: {} as CausalLM["config"],
    tokenizer: tok,
    maxSeqLen: 24,
    sourceDir: null,
    linears: () => lins,
    logits: () => Promise.reject(new Error("fake model: no logits")),
    nll,
    calibrate: () => Promise.reject(new Error("fake model: no calibrate")),
    generate: () => Promise.reject(new Error("fake model: no generate")),
    save: async (dir: string) => {
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeTextFile(`${dir}/config.json`, '{"model_type":"opt"}');
    },
    dispose: () => lins.forEach((x) => (x.weight.dispose(), x.bias?.dispose())),
  };
}

/** Sparsity of the fake model's linears (weights only, as the pruner counts them). */
export async function fakeSparsity(model: CausalLM): Promise<SparsityReport> {
  const perKind: Record<string, [number, number]> = {};
  const perModule: SparsityReport["perModule"] = [];
  let zeros = 0, total = 0;
  for (const lin of model.linears()) {
    const w = await lin.weight.read();
    const z = w.filter((v) => v === 0).length;
    zeros += z;
    total += w.length;
    const k = (perKind[lin.kind] ??= [0, 0]);
    k[0] += z;
    k[1] += w.length;
    perModule.push({ name: lin.name, kind: lin.kind, layer: lin.layer, kept: 1 - z / w.length });
  }
  return {
    overall: zeros / total,
    perKind: Object.fromEntries(Object.entries(perKind).map(([k, [z, n]]) => [k, z / n])),
    perModule,
  };
}

/**
 * A deterministic stand-in for the pruner's schedule: shot k zeroes the globally smallest
 * magnitudes up to k·s/S and rescales the survivors by a factor that depends on the calibration
 * data and the current weights (so the result of a shot depends on every earlier shot, as in
 * the real method). `delayMs` per shot leaves room to kill the process mid-shot.
 */
export function fakeDeps(delayMs = 0): SurgeonDeps {
  return {
    loadModel: () => fakeModel(),
    sparsityStats: fakeSparsity,
    adapterName: () => Promise.resolve("fake adapter"),
    runSchedule: async (model, calibration, opts, hooks) => {
      for (let shot = opts.startShot + 1; shot <= opts.shots; shot++) {
        hooks.onProgress?.(`calibration pass shot ${shot}: ${calibration.length} sequences`);
        if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
        const lins = model.linears();
        const ws = await Promise.all(lins.map((l) => l.weight.read()));
        const mags = ws.flatMap((w) => Array.from(w, Math.abs)).sort((a, b) => a - b);
        const k = Math.floor((opts.sparsity * shot / opts.shots) * mags.length);
        const tau = k > 0 ? mags[k - 1] : -1;
        const calib = calibration[shot % calibration.length];
        let sum = 0;
        for (const w of ws) for (const v of w) sum += v;
        const scale = 1 + 0.01 * ((calib[0] % 5) + Math.tanh(sum));
        lins.forEach((l, i) =>
          l.weight.write(ws[i].map((v) => (Math.abs(v) <= tau ? 0 : v * scale)))
        );
        if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
        await hooks.onShot?.(shot, { threshold: tau, seconds: { curvature: 0.01, prune: 0.02 } });
      }
    },
  };
}

/** A model folder that passes the command line's checks, and a data folder with WikiText-2 text. */
export async function makeFixtures(root: string): Promise<{ model: string; data: string }> {
  const model = `${root}/model`, data = `${root}/data`;
  await Deno.mkdir(model, { recursive: true });
  await Deno.writeTextFile(`${model}/config.json`, '{"model_type":"opt"}');
  await Deno.writeFile(`${model}/model.safetensors`, new Uint8Array(0));
  await Deno.mkdir(`${data}/wikitext-2-raw`, { recursive: true });
  const line = (i: number) => ` The ${i % 3 ? "cat" : "dog"} sat on mat number ${i} . \n`;
  const text = (n: number, o: number) =>
    Array.from({ length: n }, (_, i) => (i % 4 === 3 ? " \n" : line(i + o))).join("");
  await Deno.writeTextFile(`${data}/wikitext-2-raw/wiki.valid.raw`, text(40, 0));
  await Deno.writeTextFile(`${data}/wikitext-2-raw/wiki.test.raw`, text(12, 100));
  return { model, data };
}
