/**
 * Kron-OBD (OBD costs with the Kronecker-factored Fisher) — the reference's experiment script as a command: structured K-OBD of
 * `facebook/opt-125m` on WikiText-2 by default. Any flag of `examples/surgeon.ts` may be added
 * and overrides the preset (`--help` lists them).
 *
 * ```sh
 * deno run -A examples/kron_obd.ts
 * deno run -A examples/kron_obd.ts --model_str ../shared/data/models/hf/stories260K \
 *   --data_dir ../shared/data --train_split valid --nsamples 16 --eval_samples 32
 * ```
 *
 * Reference scripts mirrored (ALGORITHM.md §11.2, n = 128, seed 100, WikiText-2):
 * - structured K-OBD: `row column`, kfac (IAD), krank 1, kpca_iter 10, s = 0.5, 40 shots (the defaults)
 * - semi-structured K-OBD: add `--structures 2:4 --shots 1 --damp_g 0.1`
 * - unstructured K-OBD single-shot: add `--structures element --shots 1 --damp_g 0.1 --sparsity 0.1…0.5`
 *
 * @module
 */
import { mergeArgs } from "./cli_flags.ts";
import { main } from "./surgeon.ts";

/** The preset flags of this script. */
export const PRESET: readonly string[] = (
  "--structures row column --curvature kfac --obd --use_iad --krank 1 --kpca_iter 10 --sparsity 0.5 --shots 40"
).split(" ");

if (import.meta.main) {
  Deno.exit(await main(mergeArgs(PRESET, Deno.args), "deno run -A examples/kron_obd.ts"));
}
