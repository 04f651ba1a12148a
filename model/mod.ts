/**
 * Models: Hugging Face files (safetensors, config, tokenizer, the Hub cache), the OPT and Llama
 * nets on the GPU with taps for curvature estimation, generation, chat templates and saving.
 *
 * @example Usage
 * ```ts ignore
 * import { loadModel } from "./mod.ts";
 * const model = await loadModel("facebook/opt-125m");   // or a local folder
 * console.log(await model.generate("The capital of France is", { maxTokens: 8 }));
 * ```
 *
 * @module
 */
export * from "./types.ts";
export { loadModel, type LoadOptions } from "./load.ts";
import { fromWeights as buildFromWeights } from "./load.ts";
import type { CausalLM, ModelConfig, TextTokenizer, WeightSource } from "./types.ts";

/**
 * Builds a model on the GPU from any {@link WeightSource} (e.g. tensors made in memory) and a
 * parsed configuration, without a model folder.
 *
 * @example Usage
 * ```ts ignore
 * const model = await fromWeights(parseConfig(rawConfig), weights);
 * ```
 *
 * @param config the parsed configuration ({@link parseConfig})
 * @param weights where the tensors come from, by Hugging Face name
 * @param tokenizer the tokenizer, if any
 */
export function fromWeights(
  config: ModelConfig,
  weights: WeightSource,
  tokenizer: TextTokenizer | null = null,
): Promise<CausalLM> {
  return buildFromWeights(config, weights, tokenizer);
}
export { ModelError } from "./transformer.ts";
export {
  type Checkpoint,
  openCheckpoint,
  openSafetensors,
  SafetensorsError,
  type SafetensorsFile,
  type TensorInfo,
  type TensorToWrite,
  writeSafetensors,
} from "./safetensors.ts";
export { hubDownloadFile, HubError, type HubOptions, resolveModel } from "./hub.ts";
export { ConfigError, loadConfig, parseConfig, SUPPORTED_MODEL_TYPES } from "./config.ts";
export { type HfTokenizer, loadTokenizer, TokenizerError } from "./tokenizer.ts";
export { SaveError, saveHfFolder, type SaveOptions } from "./save.ts";
export {
  type ChatMessage,
  ChatTemplateError,
  type ChatTokenizer,
  plainChatPrompt,
  renderChat,
  type RenderChatOptions,
} from "./chat.ts";
export {
  generateIds,
  type GenerateIdsOptions,
  generateText,
  type GenerationModel,
  pickToken,
} from "./generate.ts";
export type { KvCache } from "./transformer.ts";
