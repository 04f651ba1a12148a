/**
 * Model benchmarks: `forward_tokens_per_s_opt125m` (one `nll` of a 2048-token window) and
 * `backward_tokens_per_s_opt125m` (one `calibrate` pass: forward, loss, backward, taps with a
 * no-op handler) on a model with OPT-125m's shapes and random weights. Each reports the median
 * of `runs` timed runs after a warm-up on a 64-token window (which compiles every kernel).
 *
 * Run alone: `./deno run -A bench/model_bench.ts [--tokens 2048] [--runs 3]` prints one JSON
 * object per line. `--reference` instead prints the perplexities of the real models in
 * `../shared/data` (MANIFEST.md §8): TinyStories first 64 windows, WikiText-2 test first 64
 * windows and the full WikiText-2 test set (`--quick` skips the full set; `--model NAME` picks
 * one of `stories260K`, `babyllama-tok105`).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { gpu } from "../kernels/device.ts";
import { parseConfig } from "../model/config.ts";
import { fromWeights, loadModel } from "../model/load.ts";
import type { CausalLM, WeightSource } from "../model/types.ts";

/** One benchmark result line. */
export interface ModelBenchResult {
  /** Benchmark name. */
  bench: string;
  /** Tokens per pass. */
  n: number;
  /** Median wall time of one pass in milliseconds. */
  ms: number;
  /** Tokens per second. */
  tokens_per_s: number;
}

/** OPT-125m's config.json (facebook/opt-125m). */
const OPT125M = {
  model_type: "opt",
  vocab_size: 50272,
  hidden_size: 768,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  ffn_dim: 3072,
  max_position_embeddings: 2048,
  word_embed_proj_dim: 768,
  do_layer_norm_before: true,
  activation_function: "relu",
  enable_bias: true,
  layer_norm_elementwise_affine: true,
  tie_word_embeddings: true,
  bos_token_id: 2,
  eos_token_id: 2,
  pad_token_id: 1,
};

/** Random weights of the right shapes, generated on read (LCG uniforms, std ≈ 0.02; norms 1). */
function randomSource(shapes: Map<string, number[]>): WeightSource {
  return {
    names: () => [...shapes.keys()],
    has: (n) => shapes.has(n),
    shape: (n) => [...shapes.get(n)!],
    read: (n) => {
      const size = shapes.get(n)!.reduce((a, b) => a * b, 1);
      const out = new Float32Array(size);
      if (/layer_norm\.weight$/.test(n)) return Promise.resolve(out.fill(1));
      let s = (n.length * 2654435761) >>> 0;
      for (let i = 0; i < size; i++) {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        out[i] = (s / 4294967296 - 0.5) * 0.07;
      }
      return Promise.resolve(out);
    },
  };
}

function opt125mShapes(): Map<string, number[]> {
  const s = new Map<string, number[]>();
  const [d, f, V, P] = [768, 3072, 50272, 2050];
  const p = "model.decoder";
  s.set(`${p}.embed_tokens.weight`, [V, d]);
  s.set(`${p}.embed_positions.weight`, [P, d]);
  for (let l = 0; l < 12; l++) {
    const q = `${p}.layers.${l}`;
    for (const n of ["self_attn_layer_norm", "final_layer_norm"]) {
      s.set(`${q}.${n}.weight`, [d]);
      s.set(`${q}.${n}.bias`, [d]);
    }
    for (const m of ["q_proj", "k_proj", "v_proj", "out_proj"]) {
      s.set(`${q}.self_attn.${m}.weight`, [d, d]);
      s.set(`${q}.self_attn.${m}.bias`, [d]);
    }
    s.set(`${q}.fc1.weight`, [f, d]);
    s.set(`${q}.fc1.bias`, [f]);
    s.set(`${q}.fc2.weight`, [d, f]);
    s.set(`${q}.fc2.bias`, [d]);
  }
  s.set(`${p}.final_layer_norm.weight`, [d]);
  s.set(`${p}.final_layer_norm.bias`, [d]);
  return s;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/**
 * Median wall time of `runs` passes; when a pass is short (under 3 s, as on a real GPU, where the
 * first full-size pass may still compile a kernel variant) at least 3 passes.
 */
async function timeIt(runs: number, f: () => Promise<unknown>): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < runs || (ms[0] < 3000 && i < 3); i++) {
    const t = performance.now();
    await f();
    ms.push(performance.now() - t);
  }
  return median(ms);
}

/**
 * Runs the model benchmarks and emits one result per benchmark.
 *
 * @param emit receives each result
 * @param opts tokens per window (default 2048) and timed runs (default 1)
 * @example Usage
 * ```ts ignore
 * await run((r) => console.log(JSON.stringify(r)));
 * ```
 */
export async function run(
  emit: (r: ModelBenchResult) => void,
  opts: { tokens?: number; runs?: number } = {},
): Promise<void> {
  const T = opts.tokens ?? 2048;
  const runs = opts.runs ?? 1;
  await gpu();
  const model = await fromWeights(
    parseConfig(OPT125M, "opt-125m shapes"),
    randomSource(opt125mShapes()),
  );
  try {
    const ids = Int32Array.from({ length: T }, (_, i) => (i * 7919 + 3) % 50272);
    // warm-up on a short window: compiles every kernel without a full-size pass
    await model.nll(ids.subarray(0, 64));
    await model.calibrate(ids.subarray(0, 64), () => {});
    const fwd = await timeIt(runs, () => model.nll(ids));
    emit({ bench: "forward_tokens_per_s_opt125m", n: T, ms: fwd, tokens_per_s: T / (fwd / 1000) });
    const bwd = await timeIt(runs, () => model.calibrate(ids, () => {}));
    emit({ bench: "backward_tokens_per_s_opt125m", n: T, ms: bwd, tokens_per_s: T / (bwd / 1000) });
  } finally {
    model.dispose();
  }
}

/** Perplexity over windows: exp(mean of per-window mean NLL). */
async function perplexity(
  model: CausalLM,
  ids: Int32Array,
  L: number,
  maxWindows: number,
): Promise<number> {
  const K = Math.min(Math.floor(ids.length / L), maxWindows);
  let s = 0;
  for (let k = 0; k < K; k++) s += await model.nll(ids.subarray(k * L, (k + 1) * L));
  return Math.exp(s / K);
}

/**
 * Perplexities of the real models in `../shared/data` (MANIFEST.md §8): TinyStories (first 64
 * windows), WikiText-2 test (first 64 windows, and all windows unless `quick`).
 */
export async function referencePerplexities(
  emit: (r: Record<string, unknown>) => void,
  quick = false,
  models: string[] = ["stories260K", "babyllama-tok105"],
): Promise<void> {
  const data = new URL("../../shared/data/", import.meta.url).pathname;
  const lines = Deno.readTextFileSync(`${data}wikitext-2-raw/wiki.test.raw`).split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  const rows = lines.map((l) => (l.trim() === "" ? "" : l + "\n"));
  const wiki = rows.join("\n\n");
  const stories = Deno.readTextFileSync(`${data}tinystories/valid.txt`).split("<|endoftext|>")
    .map((s) => s.trim()).filter((s) => s !== "");
  for (const name of models) {
    const model = await loadModel(`${data}models/hf/${name}`);
    const L = model.maxSeqLen;
    const tok = model.tokenizer!;
    const ts: number[] = [];
    for (const s of stories) {
      ts.push(...tok.encode(s));
      if (ts.length >= 64 * L) break;
    }
    const t0 = performance.now();
    emit({
      model: name,
      data: "tinystories_64",
      L,
      ppl: await perplexity(model, Int32Array.from(ts), L, 64),
    });
    const wikiIds = tok.encode(wiki); // BOS once at the start (SparseGPT protocol)
    emit({ model: name, data: "wikitext2_test_first_ids", ids: [...wikiIds.subarray(0, 12)] });
    emit({
      model: name,
      data: "wikitext2_test_64",
      L,
      ids: wikiIds.length,
      ppl: await perplexity(model, wikiIds, L, 64),
    });
    if (!quick) {
      emit({
        model: name,
        data: "wikitext2_test_full",
        L,
        ppl: await perplexity(model, wikiIds, L, Infinity),
      });
    }
    emit({ model: name, seconds: (performance.now() - t0) / 1000 });
    model.dispose();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      tokens: { type: "string", default: "2048" },
      runs: { type: "string", default: "1" },
      reference: { type: "boolean", default: false },
      quick: { type: "boolean", default: false },
      model: { type: "string", multiple: true },
    },
  });
  const print = (r: unknown) => console.log(JSON.stringify(r));
  if (values.reference) await referencePerplexities(print, values.quick, values.model);
  else await run(print, { tokens: Number(values.tokens), runs: Number(values.runs) });
}
