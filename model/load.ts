/**
 * Loading models: `loadModel("facebook/opt-125m")` or `loadModel("path/to/folder")` gives a
 * {@link CausalLM} on the GPU; {@link fromWeights} builds one from a config and any
 * {@link WeightSource} (tests, converted checkpoints).
 *
 * @module
 */
import { gpu } from "../kernels/device.ts";
import { loadConfig } from "./config.ts";
import { resolveModel } from "./hub.ts";
import { LlamaNet } from "./llama.ts";
import { OptNet } from "./opt.ts";
import { openCheckpoint } from "./safetensors.ts";
import { loadTokenizer } from "./tokenizer.ts";
import { DecoderLM } from "./transformer.ts";
import type { CausalLM, ModelConfig, TextTokenizer, WeightSource } from "./types.ts";

/**
 * Options of {@link loadModel}.
 *
 * @example Usage
 * ```ts ignore
 * import { loadModel, type LoadOptions } from "@llm-surgeon/toolkit";
 * // From the Hub cache only, with progress lines on stderr.
 * const opts: LoadOptions = { offline: true, onProgress: (line) => console.error(line) };
 * const model = await loadModel("facebook/opt-125m", opts);
 * ```
 */
export interface LoadOptions {
  /** Hub branch, tag or commit (default `main`). */
  revision?: string;
  /** Hub access token (default: `HF_TOKEN`, then the token file). */
  token?: string;
  /** Use only the local Hub cache. */
  offline?: boolean;
  /** Progress lines (downloads, loading). */
  onProgress?: (msg: string) => void;
}

/**
 * Builds a GPU model from a config and weights (HF tensor names, any dtype the source converts
 * to f32). Shapes are checked against the config; a missing or misshapen tensor is an error
 * naming it.
 *
 * @param config normalised config (see `parseConfig`)
 * @param weights the tensors
 * @param tokenizer optional tokenizer
 * @param sourceDir folder to copy tokenizer files from when saving
 * @example Usage
 * ```ts ignore
 * const model = await fromWeights(parseConfig(rawConfig), weights);
 * ```
 */
export async function fromWeights(
  config: ModelConfig,
  weights: WeightSource,
  tokenizer: TextTokenizer | null = null,
  sourceDir: string | null = null,
): Promise<DecoderLM> {
  const rt = await gpu();
  const net = config.modelType === "opt"
    ? await OptNet.load(config, weights, rt)
    : await LlamaNet.load(config, weights, rt);
  return new DecoderLM(net, tokenizer, sourceDir);
}

/**
 * Loads a model from a local Hugging Face folder or a Hub id (downloaded into the standard HF
 * cache): config, safetensors weights (sharded or not), and the tokenizer when present.
 *
 * @param idOrPath folder path or `org/name`
 * @param opts Hub options and progress callback
 * @example Usage
 * ```ts ignore
 * const model = await loadModel("facebook/opt-125m");
 * console.log(Math.exp(await model.nll(model.tokenizer!.encode("Hello world, this is a test."))));
 * ```
 */
export async function loadModel(idOrPath: string, opts: LoadOptions = {}): Promise<CausalLM> {
  const dir = await resolveModel(idOrPath, {
    revision: opts.revision,
    token: opts.token,
    offline: opts.offline,
    onProgress: opts.onProgress,
  });
  const config = await loadConfig(dir);
  let tokenizer: TextTokenizer | null = null;
  try {
    tokenizer = await loadTokenizer(dir);
  } catch (e) {
    opts.onProgress?.(`${dir}: no usable tokenizer (${(e as Error).message}); token ids only`);
  }
  const ckpt = await openCheckpoint(dir);
  try {
    opts.onProgress?.(`${dir}: uploading ${ckpt.names().length} tensors to the GPU`);
    return await fromWeights(config, ckpt, tokenizer, dir);
  } finally {
    ckpt.close();
  }
}
