/**
 * Structured LLM Surgeon (rows and columns) — the reference's experiment script as a command: structured LLM Surgeon of
 * `facebook/opt-125m` on WikiText-2 by default. Any flag of `examples/surgeon.ts` may be added
 * and overrides the preset (`--help` lists them).
 *
 * ```sh
 * deno run -A examples/surgeon_structured.ts
 * deno run -A examples/surgeon_structured.ts --model_str ../shared/data/models/hf/stories260K \
 *   --data_dir ../shared/data --train_split valid --nsamples 16 --eval_samples 32
 * ```
 *
 * Reference scripts mirrored (ALGORITHM.md §11.2, n = 128, seed 100, WikiText-2):
 * - structured LLM Surgeon: `row column`, kfac (IAD), OBS, max_correlate 0, λ_G 0.01, s = 0.5,
 *   40 shots (the defaults; results for 10…50 % are the evaluations after shots 8, 16, …, 40)
 * - independent updates: add `--max_correlate 1`
 *
 * @module
 */
import { mergeArgs } from "./cli_flags.ts";
import { main } from "./surgeon.ts";

/** The preset flags of this script. */
export const PRESET: readonly string[] = (
  "--structures row column --curvature kfac --use_iad --max_correlate 0 --damp_g 0.01 --sparsity 0.5 --shots 40"
).split(" ");

if (import.meta.main) {
  Deno.exit(await main(mergeArgs(PRESET, Deno.args), "deno run -A examples/surgeon_structured.ts"));
}
