/**
 * Data and evaluation: datasets (WikiText-2, C4, PTB, TinyStories; local folders or the Hub),
 * calibration windows drawn exactly as the reference draws them (CPython's `random`), perplexity
 * by the SparseGPT protocol, run folders with resume, and the run report.
 *
 * @example
 * ```ts ignore
 * import { calibrationWindows, loadSplit, perplexity, testStream } from "./eval/mod.ts";
 * const tok = model.tokenizer!;
 * const train = await loadSplit("wikitext2", "valid", { dataDir: "../shared/data" });
 * const calib = calibrationWindows(train, tok, { nsamples: 16, seqlen: 512, seed: 100 });
 * const test = testStream(await loadSplit("wikitext2", "test", { dataDir: "../shared/data" }), tok, 512);
 * console.log((await perplexity(model, test, { seqlen: 512 })).ppl);
 * ```
 *
 * @module
 */
export {
  canonicalSplit,
  DATASET_NAMES,
  DatasetError,
  type DatasetName,
  datasetName,
  type DatasetOptions,
  evalSplit,
  type HubFileFetcher,
  loadSplit,
  ptbRows,
  readJsonLinesText,
  readParquetColumn,
  type Split,
  testStream,
  type TextSplit,
  tinyStoriesRows,
  trainStream,
  wikitextRows,
} from "./datasets.ts";
export {
  type CalibrationSamplingOptions,
  calibrationWindows,
  sampleDocumentWindows,
  sampleWindows,
  windowStarts,
} from "./calibration.ts";
export { MT19937, PyRandom } from "./mt19937.ts";
export {
  perplexity,
  PerplexityError,
  type PerplexityOptions,
  type PerplexityResult,
} from "./perplexity.ts";
export { formatDuration, Progress } from "./progress.ts";
export {
  loadWeights,
  type MetricsLine,
  RunFolder,
  RunFolderError,
  runName,
  type RunState,
  saveWeights,
  TOOLKIT_VERSION,
  writeTextAtomic,
} from "./run.ts";
export {
  keptPlotSvg,
  type ModuleKept,
  perplexityPlotSvg,
  type ReportInput,
  reportMarkdown,
} from "./report.ts";
