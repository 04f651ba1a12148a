/**
 * Perplexity exactly as the SparseGPT protocol computes it (ALGORITHM.md §10.2): the test stream
 * is cut into K = ⌊N/T⌋ non-overlapping windows, each scored by the mean next-token NLL of its
 * T − 1 predicted positions, and ppl = exp(mean of the window NLLs).
 *
 * @module
 */
import type { CausalLM } from "../model/types.ts";
import { Progress } from "./progress.ts";

/**
 * Options of {@link perplexity}.
 *
 * @example Usage
 * ```ts
 * import type { PerplexityOptions } from "@llm-surgeon/toolkit";
 * // The first 64 windows of 512 tokens, with progress lines on stderr.
 * const opts: PerplexityOptions = {
 *   seqlen: 512,
 *   maxWindows: 64,
 *   label: "wikitext2",
 *   onProgress: (line) => console.error(line),
 * };
 * console.log(opts.label); // "wikitext2"
 * ```
 */
export interface PerplexityOptions {
  /** Window length T (default: the model's maxSeqLen). */
  seqlen?: number;
  /** Evaluate only the first N windows (default: all). */
  maxWindows?: number | null;
  /** Name used in progress lines and errors (e.g. the dataset). */
  label?: string;
  /** Receives progress lines with elapsed time and ETA. */
  onProgress?: (msg: string) => void;
}

/**
 * Result of {@link perplexity}.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { perplexity, type PerplexityResult } from "@llm-surgeon/toolkit";
 * // A stand-in model that spreads its guess evenly over 10 tokens.
 * const uniform = { maxSeqLen: 4, nll: () => Promise.resolve(Math.log(10)) };
 * const r: PerplexityResult = await perplexity(uniform, new Int32Array(10));
 * assert.equal(r.totalWindows, 2); // ⌊10 / 4⌋; the last 2 tokens are left out
 * assert.deepEqual(r.nlls, [Math.log(10), Math.log(10)]);
 * ```
 */
export interface PerplexityResult {
  /** exp(mean window NLL). */
  ppl: number;
  /** Mean of the window NLLs. */
  meanNll: number;
  /** Windows evaluated. */
  windows: number;
  /** Windows the stream holds (⌊N/T⌋). */
  totalWindows: number;
  /** Window length T. */
  seqlen: number;
  /** The NLL of each evaluated window. */
  nlls: number[];
}

/**
 * Raised when a window's NLL is not finite (a broken model must not give a number).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { perplexity, PerplexityError } from "@llm-surgeon/toolkit";
 * const broken = { maxSeqLen: 8, nll: () => Promise.resolve(NaN) };
 * await assert.rejects(perplexity(broken, new Int32Array(16)), PerplexityError);
 * ```
 */
export class PerplexityError extends Error {
  /**
   * A non-finite window NLL.
   * @param message what went wrong, naming the dataset and window
   */
  constructor(message: string) {
    super(message);
    this.name = "PerplexityError";
  }
}

/**
 * Perplexity of `model` on a token stream.
 * @param model anything with `nll(window)` (mean NLL over T − 1 positions) and `maxSeqLen`
 * @param stream the tokenized test text
 * @param opts window length, window limit, progress
 * @example Usage
 * ```ts ignore
 * const ids = testStream(await loadSplit("wikitext2", "test", { dataDir }), model.tokenizer!, 512);
 * const { ppl } = await perplexity(model, ids, { seqlen: 512, maxWindows: 64 });
 * ```
 *
 * @example With a stand-in model
 * ```ts
 * import assert from "node:assert/strict";
 * import { perplexity } from "@llm-surgeon/toolkit";
 * // Window NLLs log 2 and log 8 average to log 4, so the perplexity is 4.
 * const nlls = [Math.log(2), Math.log(8)];
 * let k = 0;
 * const model = { maxSeqLen: 16, nll: () => Promise.resolve(nlls[k++]) };
 * const { ppl, windows } = await perplexity(model, new Int32Array(32));
 * assert.equal(windows, 2);
 * assert.ok(Math.abs(ppl - 4) < 1e-12);
 * ```
 */
export async function perplexity(
  model: Pick<CausalLM, "nll" | "maxSeqLen">,
  stream: Int32Array,
  opts: PerplexityOptions = {},
): Promise<PerplexityResult> {
  const seqlen = opts.seqlen ?? model.maxSeqLen;
  const label = opts.label ?? "perplexity";
  if (!Number.isInteger(seqlen) || seqlen < 2) {
    throw new PerplexityError(`${label}: window length ${seqlen} must be an integer ≥ 2`);
  }
  const totalWindows = Math.floor(stream.length / seqlen);
  const windows = opts.maxWindows == null ? totalWindows : Math.min(totalWindows, opts.maxWindows);
  if (windows < 1) {
    throw new PerplexityError(
      `${label}: the test stream has ${stream.length} tokens, fewer than one window of ${seqlen}`,
    );
  }
  const progress = new Progress(`eval ${label}`, windows, "windows");
  const nlls: number[] = [];
  let sum = 0;
  for (let k = 0; k < windows; k++) {
    const nll = await model.nll(stream.subarray(k * seqlen, (k + 1) * seqlen));
    if (!Number.isFinite(nll)) {
      throw new PerplexityError(
        `${label}: window ${k} (tokens ${k * seqlen}..${(k + 1) * seqlen - 1}) has NLL ${nll}`,
      );
    }
    nlls.push(nll);
    sum += nll;
    const line = progress.throttled(k + 1, `ppl so far ${Math.exp(sum / (k + 1)).toFixed(3)}`);
    if (line) opts.onProgress?.(line);
  }
  const meanNll = sum / windows;
  return { ppl: Math.exp(meanNll), meanNll, windows, totalWindows, seqlen, nlls };
}
