/**
 * L-OBD (layer-wise OBD with the activation curvature) — the reference's experiment script as a command: structured L-OBD, multi-shot of
 * `facebook/opt-125m` on WikiText-2 by default. Any flag of `examples/surgeon.ts` may be added
 * and overrides the preset (`--help` lists them).
 *
 * ```sh
 * deno run -A examples/l_obd.ts
 * deno run -A examples/l_obd.ts --model_str ../shared/data/models/hf/stories260K \
 *   --data_dir ../shared/data --train_split valid --nsamples 16 --eval_samples 32
 * ```
 *
 * Reference scripts mirrored (ALGORITHM.md §11.2, n = 128, seed 100, WikiText-2):
 * - structured L-OBD multi-shot: `row column`, activations, s = 0.3, 24 shots, OBD (the defaults)
 * - structured L-OBD single-shot: add `--shots 1`
 * - semi-structured L-OBD: add `--structures 2:4 --sparsity 0.5 --shots 1`
 * - unstructured L-OBD: add `--structures element` (single shot: `--shots 1 --sparsity 0.1|0.2|0.3`)
 *
 * Departure (§14 Q2): the activation curvature accumulates over every calibration sequence.
 *
 * @module
 */
import { mergeArgs } from "./cli_flags.ts";
import { main } from "./surgeon.ts";

/** The preset flags of this script. */
export const PRESET: readonly string[] = (
  "--structures row column --curvature activations --obd --use_iad --sparsity 0.3 --shots 24"
).split(" ");

if (import.meta.main) {
  Deno.exit(await main(mergeArgs(PRESET, Deno.args), "deno run -A examples/l_obd.ts"));
}
