/**
 * LLM Surgeon for Deno + WebGPU: curvature-based pruning of OPT and Llama language models
 * ("The LLM Surgeon", van der Ouderaa et al., arXiv 2312.17244) with the baselines of the same
 * framework (magnitude, L-OBD, Kron-OBD), all dense linear algebra on the GPU.
 *
 * The layers, bottom to top: `kernels` (GPU runtime, tensors, WGSL kernels), `model` (Hugging
 * Face files, OPT/Llama nets with taps), `curvature` (Identity, Activations, KFAC), `pruner`
 * (costs, global thresholds, OBS updates, the multi-shot schedule, LoRA), `eval` (datasets,
 * calibration, perplexity, run folders and reports).
 *
 * @example Prune a model in a few lines
 * ```ts ignore
 * import { calibrationWindows, estimateCurvature, loadModel, loadSplit, perplexity, pruneShot,
 *   testStream } from "./mod.ts";
 * const model = await loadModel("facebook/opt-125m");
 * const tok = model.tokenizer!;
 * const calib = calibrationWindows(await loadSplit("wikitext2", "train"), tok, { nsamples: 128, seqlen: 2048, seed: 100 });
 * const test = testStream(await loadSplit("wikitext2", "test"), tok, 2048);
 * for (let shot = 1; shot <= 40; shot++) {
 *   const curv = await estimateCurvature(model, calib, { kind: "kfac", useIad: true });
 *   await pruneShot(model, curv, 0.3 * shot / 40, { structure: "rowcol" });
 *   console.log(shot, (await perplexity(model, test)).ppl);
 * }
 * ```
 *
 * @module
 */
export * from "./kernels/mod.ts";
export * from "./model/mod.ts";
export * from "./curvature/mod.ts";
export * from "./pruner/mod.ts";
export * from "./eval/mod.ts";
