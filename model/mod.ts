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
export { fromWeights, loadModel, type LoadOptions } from "./load.ts";
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
export { loadTokenizer, TokenizerError } from "./tokenizer.ts";
export { SaveError, saveHfFolder } from "./save.ts";
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
export { DecoderLM } from "./transformer.ts";
