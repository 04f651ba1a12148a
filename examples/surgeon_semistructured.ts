/**
 * Semi-structured (2:4) LLM Surgeon — the reference's experiment script as a command: semi-structured LLM Surgeon of
 * `facebook/opt-125m` on WikiText-2 by default. Any flag of `examples/surgeon.ts` may be added
 * and overrides the preset (`--help` lists them).
 *
 * ```sh
 * deno run -A examples/surgeon_semistructured.ts
 * deno run -A examples/surgeon_semistructured.ts --model_str ../shared/data/models/hf/stories260K \
 *   --data_dir ../shared/data --train_split valid --nsamples 16 --eval_samples 32
 * ```
 *
 * Reference scripts mirrored (ALGORITHM.md §11.2, n = 128, seed 100, WikiText-2):
 * - semi-structured LLM Surgeon: `2:4`, kfac (IAD), OBS, max_correlate 2000, addupdate, λ_G 0.1,
 *   s = 0.5, 5 shots (the defaults); the reference also runs 10, 20 and 40 shots (`--shots 10`)
 * - other N:M patterns: `--structures 4:8`
 *
 * @module
 */
import { mergeArgs } from "./cli_flags.ts";
import { main } from "./surgeon.ts";

/** The preset flags of this script. */
export const PRESET: readonly string[] = (
  "--structures 2:4 --curvature kfac --use_iad --max_correlate 2000 --addupdate --damp_g 0.1 --sparsity 0.5 --shots 5"
).split(" ");

if (import.meta.main) {
  Deno.exit(
    await main(mergeArgs(PRESET, Deno.args), "deno run -A examples/surgeon_semistructured.ts"),
  );
}
