/**
 * Magnitude pruning — the reference's experiment script as a command: structured magnitude of
 * `facebook/opt-125m` on WikiText-2 by default. Any flag of `examples/surgeon.ts` may be added
 * and overrides the preset (`--help` lists them).
 *
 * ```sh
 * deno run -A examples/magnitude.ts
 * deno run -A examples/magnitude.ts --model_str ../shared/data/models/hf/stories260K \
 *   --data_dir ../shared/data --train_split valid --nsamples 16 --eval_samples 32
 * ```
 *
 * Reference scripts mirrored (ALGORITHM.md §11.2, n = 128, seed 100, WikiText-2):
 * - structured magnitude: `row column`, identity, s = 0.5, 1 shot, OBD (the defaults here)
 * - semi-structured magnitude: add `--structures 2:4`
 * - unstructured magnitude: add `--structures element --shots 5`
 *
 * @module
 */
import { mergeArgs } from "./cli_flags.ts";
import { main } from "./surgeon.ts";

/** The preset flags of this script. */
export const PRESET: readonly string[] = (
  "--structures row column --curvature identity --obd --use_iad --sparsity 0.5 --shots 1"
).split(" ");

if (import.meta.main) {
  Deno.exit(await main(mergeArgs(PRESET, Deno.args), "deno run -A examples/magnitude.ts"));
}
