/**
 * Calibration data (ALGORITHM.md §10.1): `nsamples` windows of `seqlen` tokens, with the start
 * positions the reference draws — CPython's `random.seed(seed)` then
 * `random.sample(range(N − T), n)` on the train stream — or, for C4, SparseGPT's per-document
 * sampling (§10.3).
 *
 * @module
 */
import type { TextTokenizer } from "../model/types.ts";
import { DatasetError, type TextSplit, trainStream } from "./datasets.ts";
import { PyRandom } from "./mt19937.ts";

/**
 * Options of {@link calibrationWindows}.
 *
 * @example Usage
 * ```ts
 * import type { CalibrationSamplingOptions } from "@llm-surgeon/toolkit";
 * // The reference's defaults: 128 windows of 2048 tokens, seed 100.
 * const opts: CalibrationSamplingOptions = { nsamples: 128, seqlen: 2048, seed: 100 };
 * console.log(opts.nsamples * opts.seqlen); // 262144 tokens
 * ```
 */
export interface CalibrationSamplingOptions {
  /** Number of windows n. */
  nsamples: number;
  /** Tokens per window T. */
  seqlen: number;
  /** Seed of the Python-compatible generator (reference default 100). */
  seed: number;
}

/**
 * The start positions `random.sample(range(N − T), n)` after `random.seed(seed)`, in draw order.
 * @param streamLength N, the number of tokens in the stream
 * @param opts n, T and the seed
 * @returns n distinct starts in `[0, N − T)`; throws {@link DatasetError} when fewer exist
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { windowStarts } from "@llm-surgeon/toolkit";
 * // Python: random.seed(100); random.sample(range(286000 - 2048), 2)
 * assert.deepEqual(windowStarts(286000, { nsamples: 2, seqlen: 2048, seed: 100 }), [76372, 240925]);
 * ```
 */
export function windowStarts(streamLength: number, opts: CalibrationSamplingOptions): number[] {
  const { nsamples, seqlen, seed } = opts;
  const range = streamLength - seqlen;
  if (range < nsamples) {
    throw new DatasetError(
      `calibration needs ${nsamples} distinct windows of ${seqlen} tokens, but the stream has only ` +
        `${streamLength} tokens (${
          Math.max(range, 0)
        } possible starts); lower --nsamples or --seqlen`,
    );
  }
  return new PyRandom(seed).sample(range, nsamples);
}

/**
 * Cuts `nsamples` windows of `seqlen` tokens out of a token stream at {@link windowStarts}.
 * @param stream the tokenized train text
 * @param opts n, T and the seed
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { sampleWindows, windowStarts } from "@llm-surgeon/toolkit";
 * const stream = Int32Array.from({ length: 100 }, (_, i) => i);
 * const opts = { nsamples: 3, seqlen: 8, seed: 100 };
 * const windows = sampleWindows(stream, opts);
 * const starts = windowStarts(stream.length, opts);
 * assert.deepEqual(windows.map((w) => w[0]), starts); // token i sits at position i
 * assert.ok(windows.every((w) => w.length === 8));
 * ```
 */
export function sampleWindows(stream: Int32Array, opts: CalibrationSamplingOptions): Int32Array[] {
  return windowStarts(stream.length, opts).map((i) => stream.slice(i, i + opts.seqlen));
}

/**
 * SparseGPT's C4 calibration: per window, draw documents with `randint(0, len − 1)` until one
 * tokenizes to more than `seqlen` tokens, then a start with `randint(0, len_tok − seqlen − 1)`.
 * @param docs the documents
 * @param tokenizer the model's tokenizer
 * @param opts n, T and the seed
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { sampleDocumentWindows, type TextTokenizer } from "@llm-surgeon/toolkit";
 * // A stand-in tokenizer with one token per UTF-8 byte.
 * const bytes: TextTokenizer = {
 *   encode: (text) => Int32Array.from(new TextEncoder().encode(text)),
 *   decode: (ids) => new TextDecoder().decode(Uint8Array.from(ids)),
 *   bosId: null,
 *   eosId: null,
 *   vocabSize: 256,
 *   chatTemplate: null,
 * };
 * const docs = ["too short", "a document that is long enough to hold a window"];
 * const windows = sampleDocumentWindows(docs, bytes, { nsamples: 2, seqlen: 12, seed: 0 });
 * assert.equal(windows.length, 2);
 * // Only the second document has more than 12 tokens, so both windows come from it.
 * for (const w of windows) assert.ok(docs[1].includes(bytes.decode(w)));
 * ```
 */
export function sampleDocumentWindows(
  docs: string[],
  tokenizer: TextTokenizer,
  opts: CalibrationSamplingOptions,
): Int32Array[] {
  const rng = new PyRandom(opts.seed);
  const tooShort = new Set<number>();
  const cache = new Map<number, Int32Array>();
  const out: Int32Array[] = [];
  while (out.length < opts.nsamples) {
    let ids: Int32Array;
    for (;;) {
      const i = rng.randint(0, docs.length - 1);
      ids = cache.get(i) ?? tokenizer.encode(docs[i]);
      if (ids.length > opts.seqlen) {
        cache.set(i, ids);
        break;
      }
      tooShort.add(i);
      if (tooShort.size === docs.length) {
        throw new DatasetError(
          `no document of the ${docs.length} calibration documents is longer than ${opts.seqlen} tokens`,
        );
      }
    }
    const start = rng.randint(0, ids.length - opts.seqlen - 1);
    out.push(ids.slice(start, start + opts.seqlen));
  }
  return out;
}

/**
 * Calibration windows for a split: document sampling for C4, stream windows otherwise.
 * @param data the calibration split
 * @param tokenizer the model's tokenizer
 * @param opts n, T and the seed
 * @example
 * ```ts ignore
 * const train = await loadSplit("wikitext2", "valid", { dataDir: "../shared/data" });
 * const calib = calibrationWindows(train, model.tokenizer!, { nsamples: 8, seqlen: 512, seed: 100 });
 * ```
 *
 * @example With a stand-in tokenizer
 * ```ts
 * import assert from "node:assert/strict";
 * import { calibrationWindows, type TextTokenizer } from "@llm-surgeon/toolkit";
 * // One token per UTF-8 byte.
 * const bytes: TextTokenizer = {
 *   encode: (text) => Int32Array.from(new TextEncoder().encode(text)),
 *   decode: (ids) => new TextDecoder().decode(Uint8Array.from(ids)),
 *   bosId: null,
 *   eosId: null,
 *   vocabSize: 256,
 *   chatTemplate: null,
 * };
 * const rows = ["the quick brown fox", "jumps over the lazy dog"];
 * const data = { dataset: "ptb" as const, split: "train" as const, source: "(inline)", rows };
 * const windows = calibrationWindows(data, bytes, { nsamples: 3, seqlen: 8, seed: 100 });
 * assert.equal(windows.length, 3);
 * for (const w of windows) assert.ok(rows.join(" ").includes(bytes.decode(w)));
 * ```
 */
export function calibrationWindows(
  data: TextSplit,
  tokenizer: TextTokenizer,
  opts: CalibrationSamplingOptions,
): Int32Array[] {
  if (data.dataset === "c4") return sampleDocumentWindows(data.rows, tokenizer, opts);
  return sampleWindows(trainStream(data, tokenizer), opts);
}
