/**
 * The library in a dozen lines: structured LLM Surgeon on a model, shot by shot, with the
 * perplexity after every shot. Defaults to the small trained model in `../shared/data`; pass a
 * Hub id or a folder and a data folder to use others.
 *
 * ```sh
 * ./deno run --allow-read --allow-write=runs --allow-env examples/quickstart.ts \
 *   [model] [data_dir]
 * ```
 *
 * @module
 */
import {
  calibrationWindows,
  disposeCurvature,
  estimateCurvature,
  loadModel,
  loadSplit,
  perplexity,
  pruneShot,
  testStream,
} from "../mod.ts";

const [modelPath = "../shared/data/models/hf/stories260K", dataDir = "../shared/data"] = Deno.args;
const model = await loadModel(modelPath);
const tok = model.tokenizer!;
const seqlen = Math.min(model.maxSeqLen, 256);
const calib = calibrationWindows(
  await loadSplit("wikitext2", "valid", { dataDir }),
  tok,
  { nsamples: 8, seqlen, seed: 100 },
);
const test = testStream(await loadSplit("wikitext2", "test", { dataDir }), tok, seqlen);
const ppl = async () => (await perplexity(model, test, { seqlen, maxWindows: 8 })).ppl.toFixed(2);
console.log(`dense: ppl ${await ppl()}`);
const shots = 3;
for (let shot = 1; shot <= shots; shot++) {
  const curv = await estimateCurvature(model, calib, { kind: "kfac", useIad: true });
  const report = await pruneShot(model, curv, 0.2 * shot / shots, { structure: "rowcol" });
  disposeCurvature(curv);
  console.log(`shot ${shot}: sparsity ${report.sparsity.toFixed(3)}, ppl ${await ppl()}`);
}
