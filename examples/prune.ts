/**
 * The README's main job: a short structured LLM Surgeon demonstration. With no arguments it
 * downloads `facebook/opt-125m` and WikiText-2 from the Hugging Face Hub, removes 20 % of the
 * prunable weights as whole rows and columns in 2 shots (8 calibration windows of 512 tokens),
 * and reports WikiText-2 perplexity on the first 16 test windows after each shot. Any flag of
 * `examples/surgeon.ts` overrides these settings.
 *
 * Without network, point it at a local model and data folder:
 *
 * ```sh
 * deno task prune --model_str ../shared/data/models/hf/stories260K --data_dir ../shared/data \
 *   --train_split valid
 * ```
 *
 * @module
 */
import { mergeArgs, parseFlags } from "./cli_flags.ts";
import { main } from "./surgeon.ts";

/** The demonstration's settings. */
export const PRESET: readonly string[] = (
  "--model_str facebook/opt-125m --structures row column --curvature kfac --use_iad --sparsity 0.2 --shots 2 --nsamples 8 --seqlen 512 --eval_samples 16"
).split(" ");

/** What to do without network. */
export const OFFLINE_HINT = [
  "Could not run the demonstration from the Hugging Face Hub (offline, or the Hub is unreachable).",
  "Run it on a local model and data folder instead, for example the ones beside this checkout:",
  "  deno task prune --model_str ../shared/data/models/hf/stories260K --data_dir ../shared/data --train_split valid",
  "(--model_str takes any folder with config.json, tokenizer files and model.safetensors;",
  " --data_dir a folder holding wikitext-2-raw/wiki.{train,valid,test}.raw.)",
].join("\n");

/**
 * The demonstration's window length, 512, cut to a local model's context length when that is
 * shorter (e.g. babyllama-tok105 has 256).
 * @param args the merged command line
 */
export async function demoSeqlen(args: string[]): Promise<string[]> {
  const cfg = parseFlags(args);
  if (cfg.seqlen === null || cfg.seqlen <= 0) return args;
  try {
    const raw = JSON.parse(await Deno.readTextFile(`${cfg.model_str}/config.json`));
    const max = Number(raw.max_position_embeddings);
    if (Number.isInteger(max) && max > 1 && max < cfg.seqlen) {
      return [...args, "--seqlen", String(max)];
    }
  } catch {
    // a Hub id or an unreadable folder: the command line reports it
  }
  return args;
}

if (import.meta.main) {
  let args = mergeArgs(PRESET, Deno.args);
  if (!Deno.args.some((a) => /^--seqlen\b/.test(a))) {
    try {
      args = await demoSeqlen(args);
    } catch {
      // bad flags: main() below explains them
    }
  }
  const code = await main(args, "deno task prune");
  const local = Deno.args.includes("--data_dir") || Deno.args.includes("--data-dir");
  if (code === 1 && !local) console.error("\n" + OFFLINE_HINT);
  Deno.exit(code);
}
