/**
 * Text datasets for calibration and evaluation: WikiText-2 (raw), C4, PTB and TinyStories, read
 * either from a local data folder (`--data_dir`, laid out as `../shared/data`) or from the
 * Hugging Face Hub (through the same client and cache as models). A split that is not there is
 * an error naming the file, never a silent substitute.
 *
 * Local layout under the data folder:
 * - `wikitext-2-raw/wiki.{train,valid,test}.raw`
 * - `c4/*.json`, `c4/*.jsonl`, `c4/*.json.gz`, `c4/*.jsonl.gz` (a file belongs to the split whose
 *   name it contains: `train`, `validation` or `valid`)
 * - `ptb/ptb.{train,valid,test}.txt`
 * - `tinystories/{train,valid}.txt` (stories separated by `<|endoftext|>`)
 *
 * How the rows of a split become one token stream (ALGORITHM.md §10) is decided here too:
 * {@link trainStream} and {@link testStream}.
 *
 * @module
 */
import { parquetReadObjects } from "hyparquet";
import { compressors } from "hyparquet-compressors";
import { hubDownloadFile } from "../model/hub.ts";
import type { TextTokenizer } from "../model/types.ts";

/**
 * The datasets the toolkit can read.
 *
 * @example Usage
 * ```ts
 * import type { DatasetName } from "@llm-surgeon/toolkit";
 * const evalOn: DatasetName[] = ["wikitext2", "ptb", "c4"];
 * console.log(evalOn.join(",")); // "wikitext2,ptb,c4"
 * ```
 */
export type DatasetName = "wikitext2" | "c4" | "ptb" | "tinystories";

/**
 * All dataset names, for flag validation and help texts.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { DATASET_NAMES } from "@llm-surgeon/toolkit";
 * assert.ok(DATASET_NAMES.includes("tinystories"));
 * console.log(`--eval_langs: one of ${DATASET_NAMES.join(", ")}`);
 * ```
 */
export const DATASET_NAMES: readonly DatasetName[] = ["wikitext2", "c4", "ptb", "tinystories"];

/**
 * Canonical split names.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { canonicalSplit, type Split } from "@llm-surgeon/toolkit";
 * const split: Split = canonicalSplit("val");
 * assert.equal(split, "validation");
 * ```
 */
export type Split = "train" | "validation" | "test";

/**
 * An error about a dataset: a missing split or file, a malformed file, an unknown name.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { DatasetError, datasetName } from "@llm-surgeon/toolkit";
 * assert.throws(() => datasetName("imagenet"), DatasetError);
 * ```
 */
export class DatasetError extends Error {
  /**
   * An error about a dataset.
   * @param message what went wrong, naming the dataset, split and file
   */
  constructor(message: string) {
    super(message);
    this.name = "DatasetError";
  }
}

/**
 * The rows of one split of one dataset, as the Hub dataset holds them.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type TextSplit, wikitextRows } from "@llm-surgeon/toolkit";
 * const split: TextSplit = {
 *   dataset: "wikitext2",
 *   split: "test",
 *   source: "(inline)",
 *   rows: wikitextRows(" = Valkyria = \n \n The game began development in 2010 .\n"),
 * };
 * assert.equal(split.rows.length, 3);
 * ```
 */
export interface TextSplit {
  /** Dataset name. */
  readonly dataset: DatasetName;
  /** Canonical split. */
  readonly split: Split;
  /** The file(s) the rows came from (local paths or Hub cache paths). */
  readonly source: string;
  /**
   * Rows: WikiText lines (with trailing "\n", blank → ""), C4 documents, PTB sentences,
   * TinyStories stories.
   */
  readonly rows: string[];
}

/**
 * Downloads one file of a Hub dataset repository and returns its local path (HF cache).
 *
 * @example Usage
 * ```ts
 * import type { HubFileFetcher } from "@llm-surgeon/toolkit";
 * // A fetcher that serves every file from a local mirror instead of the Hub.
 * const fromMirror: HubFileFetcher = (repo, filename) =>
 *   Promise.resolve(`/srv/hf-mirror/${repo}/${filename}`);
 * console.log(await fromMirror("Salesforce/wikitext", "README.md", { repoType: "dataset" }));
 * ```
 */
export type HubFileFetcher = (
  repo: string,
  filename: string,
  opts: {
    repoType: "dataset";
    revision?: string;
    token?: string;
    offline?: boolean;
    onProgress?: (msg: string) => void;
  },
) => Promise<string>;

/**
 * Options of {@link loadSplit}.
 *
 * @example Usage
 * ```ts
 * import type { DatasetOptions } from "@llm-surgeon/toolkit";
 * // Read local files only, and print what happens.
 * const opts: DatasetOptions = { dataDir: "../shared/data", onProgress: (m) => console.log(m) };
 * console.log(opts.dataDir); // "../shared/data"
 * ```
 */
export interface DatasetOptions {
  /** Local data folder; when set, files are read from it and never downloaded. */
  dataDir?: string | null;
  /** Resolve Hub files from the cache only. */
  offline?: boolean;
  /** Hub token (default: HF_TOKEN / token file, handled by the Hub client). */
  token?: string;
  /** Progress lines (downloads). */
  onProgress?: (msg: string) => void;
  /** Hub downloader; defaults to `hubDownloadFile` of model/hub.ts. */
  fetchFile?: HubFileFetcher;
}

/** Where a dataset lives locally and on the Hub, and which split is its evaluation split. */
interface DatasetInfo {
  evalSplit: Split;
  splits: readonly Split[];
  localFile(split: Split): string | null;
  hub: {
    repo: string;
    revision?: string;
    file(split: Split): string;
    format: "parquet" | "jsonl.gz" | "text";
  };
}

const SPLIT_FILE_NAME: Record<Split, string> = {
  train: "train",
  validation: "valid",
  test: "test",
};

const INFO: Record<DatasetName, DatasetInfo> = {
  wikitext2: {
    evalSplit: "test",
    splits: ["train", "validation", "test"],
    localFile: (s) => `wikitext-2-raw/wiki.${SPLIT_FILE_NAME[s]}.raw`,
    hub: {
      repo: "Salesforce/wikitext",
      file: (s) => `wikitext-2-raw-v1/${s}-00000-of-00001.parquet`,
      format: "parquet",
    },
  },
  c4: {
    evalSplit: "validation",
    splits: ["train", "validation"],
    localFile: () => null, // a folder of shards, matched by name
    hub: {
      repo: "allenai/c4",
      file: (s) =>
        s === "train"
          ? "en/c4-train.00000-of-01024.json.gz"
          : "en/c4-validation.00000-of-00008.json.gz",
      format: "jsonl.gz",
    },
  },
  ptb: {
    evalSplit: "test",
    splits: ["train", "validation", "test"],
    localFile: (s) => `ptb/ptb.${SPLIT_FILE_NAME[s]}.txt`,
    hub: {
      // The Hub's parquet conversion of `ptb_text_only` (config penn_treebank).
      repo: "ptb-text-only/ptb_text_only",
      revision: "refs/convert/parquet",
      file: (s) => `penn_treebank/${s}/0000.parquet`,
      format: "parquet",
    },
  },
  tinystories: {
    evalSplit: "validation",
    splits: ["train", "validation"],
    localFile: (s) => `tinystories/${SPLIT_FILE_NAME[s]}.txt`,
    hub: {
      repo: "roneneldan/TinyStories",
      file: (s) => `TinyStories-${SPLIT_FILE_NAME[s]}.txt`,
      format: "text",
    },
  },
};

/**
 * The canonical split for a user-given name (`train`, `valid`/`validation`/`val`, `test`).
 * @param split the name given by the user
 * @returns the canonical name; throws {@link DatasetError} for any other name
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { canonicalSplit } from "@llm-surgeon/toolkit";
 * assert.equal(canonicalSplit("valid"), "validation");
 * assert.equal(canonicalSplit(" Test "), "test");
 * ```
 */
export function canonicalSplit(split: string): Split {
  const s = split.trim().toLowerCase();
  if (s === "train") return "train";
  if (s === "valid" || s === "validation" || s === "val") return "validation";
  if (s === "test") return "test";
  throw new DatasetError(`unknown split "${split}" (use train, valid/validation or test)`);
}

/**
 * Checks a dataset name (the reference's `--eval_langs`/`--train_lang` values).
 * @param name the name given by the user (case and surrounding spaces ignored)
 * @returns the name as a {@link DatasetName}; throws {@link DatasetError} for an unknown one
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { datasetName } from "@llm-surgeon/toolkit";
 * assert.equal(datasetName("WikiText2"), "wikitext2");
 * ```
 */
export function datasetName(name: string): DatasetName {
  const n = name.trim().toLowerCase();
  if ((DATASET_NAMES as readonly string[]).includes(n)) return n as DatasetName;
  throw new DatasetError(
    `unknown dataset "${name}" (supported: ${DATASET_NAMES.join(", ")}; the reference's ` +
      `Wikipedia and code-language corpora are not available)`,
  );
}

/**
 * The split a dataset is evaluated on: `test` for WikiText-2 and PTB, `validation` for C4 (the
 * SparseGPT protocol) and TinyStories (which has no test split).
 * @param dataset the dataset
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { evalSplit } from "@llm-surgeon/toolkit";
 * assert.equal(evalSplit("wikitext2"), "test");
 * assert.equal(evalSplit("c4"), "validation");
 * ```
 */
export function evalSplit(dataset: DatasetName): Split {
  return INFO[dataset].evalSplit;
}

/**
 * Reads the rows of one split, from `opts.dataDir` when given, otherwise from the Hub.
 * @param dataset which dataset
 * @param split which split (any name {@link canonicalSplit} accepts)
 * @param opts data folder, Hub options
 * @example
 * ```ts ignore
 * const test = await loadSplit("wikitext2", "test", { dataDir: "../shared/data" });
 * console.log(test.rows.length); // 4358
 * ```
 */
export async function loadSplit(
  dataset: DatasetName,
  split: string,
  opts: DatasetOptions = {},
): Promise<TextSplit> {
  const info = INFO[dataset];
  const s = canonicalSplit(split);
  if (!info.splits.includes(s)) {
    throw new DatasetError(`${dataset} has no "${s}" split (it has: ${info.splits.join(", ")})`);
  }
  if (opts.dataDir) return await loadLocal(dataset, s, opts.dataDir);
  return await loadHub(dataset, s, opts);
}

async function loadLocal(dataset: DatasetName, split: Split, dataDir: string): Promise<TextSplit> {
  const root = dataDir.replace(/\/+$/, "");
  if (dataset === "c4") {
    const files = await c4LocalFiles(root, split);
    const rows: string[] = [];
    for (const f of files) rows.push(...await readJsonLinesText(f));
    return { dataset, split, source: files.join(", "), rows };
  }
  const path = `${root}/${INFO[dataset].localFile(split)}`;
  const text = await readTextFile(path, dataset, split);
  const rows = dataset === "wikitext2"
    ? wikitextRows(text)
    : dataset === "ptb"
    ? ptbRows(text)
    : tinyStoriesRows(text);
  return { dataset, split, source: path, rows };
}

async function loadHub(
  dataset: DatasetName,
  split: Split,
  opts: DatasetOptions,
): Promise<TextSplit> {
  const hub = INFO[dataset].hub;
  const fetchFile: HubFileFetcher = opts.fetchFile ?? hubDownloadFile;
  const filename = hub.file(split);
  let path: string;
  try {
    path = await fetchFile(hub.repo, filename, {
      repoType: "dataset",
      revision: hub.revision,
      token: opts.token,
      offline: opts.offline,
      onProgress: opts.onProgress,
    });
  } catch (e) {
    throw new DatasetError(
      `could not get ${dataset} ${split} (${hub.repo}/${filename}) from the Hugging Face Hub: ` +
        `${
          (e as Error).message
        }\nWithout network, point --data_dir at a local folder laid out like ` +
        `../shared/data (e.g. wikitext-2-raw/wiki.test.raw).`,
    );
  }
  let rows: string[];
  if (hub.format === "parquet") {
    const column = dataset === "ptb" ? "sentence" : "text";
    rows = await readParquetColumn(path, column);
  } else if (hub.format === "jsonl.gz") {
    rows = await readJsonLinesText(path);
  } else {
    rows = tinyStoriesRows(await readTextFile(path, dataset, split));
  }
  return { dataset, split, source: path, rows };
}

/** Text files larger than this do not fit one JavaScript string (V8 caps strings near 512 MiB). */
const MAX_TEXT_BYTES = 400 * 1024 * 1024;

async function readTextFile(path: string, dataset: string, split: string): Promise<string> {
  try {
    const { size } = await Deno.stat(path);
    if (size > MAX_TEXT_BYTES) {
      throw new DatasetError(
        `${dataset} ${split} split: ${path} is ${
          (size / 2 ** 30).toFixed(1)
        } GiB, too large to read ` +
          `as one text; use another split (e.g. --train_split valid) or a local excerpt via --data_dir`,
      );
    }
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof DatasetError) throw e;
    if (e instanceof Deno.errors.NotFound) {
      throw new DatasetError(
        `${dataset} ${split} split: file ${path} not found` +
          (split === "train"
            ? " (a data folder without a train split needs --train_split valid)"
            : ""),
      );
    }
    throw new DatasetError(
      `${dataset} ${split} split: cannot read ${path}: ${(e as Error).message}`,
    );
  }
}

async function c4LocalFiles(root: string, split: Split): Promise<string[]> {
  const dir = `${root}/c4`;
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (!e.isFile || !/\.jsonl?(\.gz)?$/.test(e.name)) continue;
      const isValid = /valid/i.test(e.name);
      const isTrain = /train/i.test(e.name);
      if ((split === "validation" && isValid) || (split === "train" && isTrain && !isValid)) {
        names.push(e.name);
      }
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new DatasetError(`c4 ${split} split: folder ${dir} not found`);
    }
    throw e;
  }
  if (names.length === 0) {
    const want = split === "train" ? "train" : "validation";
    throw new DatasetError(
      `c4 ${split} split: no file in ${dir} matches *${want}*.json[l][.gz]` +
        (split === "train"
          ? " (use --train_split valid if the folder has only validation data)"
          : ""),
    );
  }
  return names.sort().map((n) => `${dir}/${n}`);
}

/**
 * The rows the Hub's `wikitext-2-raw-v1` dataset holds for a `wiki.*.raw` file: one row per
 * line, with its trailing "\n"; a line of only whitespace is the empty row "" (ALGORITHM.md
 * §10.2).
 * @param text the file's contents
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { wikitextRows } from "@llm-surgeon/toolkit";
 * assert.deepEqual(wikitextRows(" \n = Title = \n"), ["", " = Title = \n"]);
 * ```
 */
export function wikitextRows(text: string): string[] {
  const rows: string[] = [];
  let start = 0;
  while (start < text.length) {
    const nl = text.indexOf("\n", start);
    const end = nl < 0 ? text.length : nl + 1;
    const line = text.slice(start, end);
    rows.push(line.trim() === "" ? "" : line);
    start = end;
  }
  return rows;
}

/**
 * PTB sentences as the Hub's `ptb_text_only` holds them: one per line, stripped.
 * @param text the file's contents
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { ptbRows } from "@llm-surgeon/toolkit";
 * assert.deepEqual(ptbRows(" no it was n't black monday \n but <unk> fell \n"), [
 *   "no it was n't black monday",
 *   "but <unk> fell",
 * ]);
 * ```
 */
export function ptbRows(text: string): string[] {
  const lines = text.split("\n");
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  return lines.map((l) => l.trim());
}

/**
 * TinyStories stories: the text split on `<|endoftext|>`, each stripped, empty ones dropped
 * (MANIFEST.md §8 (a)).
 * @param text the file's contents
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { tinyStoriesRows } from "@llm-surgeon/toolkit";
 * const text = "Tom had a red ball.\n<|endoftext|>\nLily saw a cat.\n<|endoftext|>\n";
 * assert.deepEqual(tinyStoriesRows(text), ["Tom had a red ball.", "Lily saw a cat."]);
 * ```
 */
export function tinyStoriesRows(text: string): string[] {
  return text.split("<|endoftext|>").map((s) => s.trim()).filter((s) => s.length > 0);
}

/**
 * The `text` field of every JSON line of a `.json`/`.jsonl` file, gunzipped on the fly (streamed
 * with DecompressionStream) when the name ends in `.gz`.
 * @param path the file
 *
 * @example Usage
 * ```ts ignore
 * import { readJsonLinesText } from "@llm-surgeon/toolkit";
 * const docs = await readJsonLinesText("data/c4/c4-validation.00000-of-00008.json.gz");
 * console.log(docs.length, docs[0].slice(0, 60));
 * ```
 */
export async function readJsonLinesText(path: string): Promise<string[]> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (e) {
    throw new DatasetError(`cannot open ${path}: ${(e as Error).message}`);
  }
  let stream: ReadableStream<Uint8Array> = file.readable;
  if (path.endsWith(".gz")) {
    const gunzip = new DecompressionStream("gzip") as unknown as TransformStream<
      Uint8Array,
      Uint8Array
    >;
    stream = stream.pipeThrough(gunzip);
  }
  const rows: string[] = [];
  let lineNo = 0;
  let rest = "";
  const take = (line: string) => {
    lineNo++;
    if (line.trim() === "") return;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch {
      throw new DatasetError(`${path}: line ${lineNo} is not valid JSON`);
    }
    const text = (obj as { text?: unknown }).text;
    if (typeof text !== "string") {
      throw new DatasetError(`${path}: line ${lineNo} has no "text" string`);
    }
    rows.push(text);
  };
  try {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      rest += chunk;
      let nl: number;
      while ((nl = rest.indexOf("\n")) >= 0) {
        take(rest.slice(0, nl));
        rest = rest.slice(nl + 1);
      }
    }
  } catch (e) {
    if (e instanceof DatasetError) throw e;
    throw new DatasetError(`${path}: cannot read (${(e as Error).message})`);
  }
  take(rest);
  return rows;
}

/**
 * One string column of a parquet file (read with npm hyparquet; SNAPPY, GZIP, ZSTD, Brotli and
 * LZ4 pages supported).
 * @param path the parquet file
 * @param column the column name (`text` for WikiText and C4, `sentence` for PTB)
 *
 * @example Usage
 * ```ts ignore
 * import { readParquetColumn } from "@llm-surgeon/toolkit";
 * const rows = await readParquetColumn("wikitext-2-raw-v1/test-00000-of-00001.parquet", "text");
 * console.log(rows.length); // 4358 rows in WikiText-2's test split
 * ```
 */
export async function readParquetColumn(path: string, column: string): Promise<string[]> {
  const bytes = await Deno.readFile(path).catch((e) => {
    throw new DatasetError(`cannot read ${path}: ${(e as Error).message}`);
  });
  const buf = bytes.buffer.slice(
    bytes.byteOffset,
    bytes.byteOffset + bytes.byteLength,
  ) as ArrayBuffer;
  let objs: Record<string, unknown>[];
  try {
    objs = await parquetReadObjects({ file: buf, columns: [column], compressors });
  } catch (e) {
    throw new DatasetError(
      `${path}: not a readable parquet file with a "${column}" column (${(e as Error).message})`,
    );
  }
  return objs.map((o, i) => {
    const v = o[column];
    if (typeof v !== "string") {
      throw new DatasetError(`${path}: row ${i} has no "${column}" string`);
    }
    return v;
  });
}

/**
 * The token stream calibration windows are cut from (ALGORITHM.md §10.1): rows joined with a
 * single space and tokenized once (WikiText-2, PTB, C4), or — TinyStories — every story
 * tokenized on its own with BOS and concatenated (llama2.c pretokenisation).
 * @param data the split
 * @param tokenizer the model's tokenizer
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type TextTokenizer, trainStream } from "@llm-surgeon/toolkit";
 * // A stand-in tokenizer with one token per UTF-8 byte.
 * const bytes: TextTokenizer = {
 *   encode: (text) => Int32Array.from(new TextEncoder().encode(text)),
 *   decode: (ids) => new TextDecoder().decode(Uint8Array.from(ids)),
 *   bosId: null,
 *   eosId: null,
 *   vocabSize: 256,
 *   chatTemplate: null,
 * };
 * const ids = trainStream({ dataset: "ptb", split: "train", source: "", rows: ["a b", "c"] }, bytes);
 * assert.equal(bytes.decode(ids), "a b c");
 * ```
 */
export function trainStream(data: TextSplit, tokenizer: TextTokenizer): Int32Array {
  if (data.dataset === "tinystories") return storyStream(data.rows, tokenizer);
  return tokenizer.encode(data.rows.join(" "));
}

/** Documents joined for C4's evaluation stream (SparseGPT: the first 1100 validation documents). */
const C4_EVAL_DOCS = 1100;
/** C4's evaluation stream is cut to this many windows. */
const C4_EVAL_WINDOWS = 256;

/**
 * The token stream perplexity is measured on (ALGORITHM.md §10.2–10.3): WikiText-2 rows joined
 * with "\n\n"; PTB with " "; C4's first 1100 documents joined with " " and cut to 256 windows of
 * `seqlen`; TinyStories stories each with BOS, concatenated.
 * @param data the split
 * @param tokenizer the model's tokenizer
 * @param seqlen window length (C4 only)
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { testStream, type TextTokenizer } from "@llm-surgeon/toolkit";
 * // A stand-in tokenizer with one token per UTF-8 byte.
 * const bytes: TextTokenizer = {
 *   encode: (text) => Int32Array.from(new TextEncoder().encode(text)),
 *   decode: (ids) => new TextDecoder().decode(Uint8Array.from(ids)),
 *   bosId: null,
 *   eosId: null,
 *   vocabSize: 256,
 *   chatTemplate: null,
 * };
 * const rows = [" = A = \n", "", " text \n"];
 * const ids = testStream({ dataset: "wikitext2", split: "test", source: "", rows }, bytes, 2048);
 * assert.equal(bytes.decode(ids), " = A = \n\n\n\n\n text \n");
 * ```
 */
export function testStream(data: TextSplit, tokenizer: TextTokenizer, seqlen: number): Int32Array {
  switch (data.dataset) {
    case "wikitext2":
      return tokenizer.encode(data.rows.join("\n\n"));
    case "ptb":
      return tokenizer.encode(data.rows.join(" "));
    case "c4": {
      const ids = tokenizer.encode(data.rows.slice(0, C4_EVAL_DOCS).join(" "));
      return ids.subarray(0, Math.min(ids.length, C4_EVAL_WINDOWS * seqlen));
    }
    case "tinystories":
      return storyStream(data.rows, tokenizer);
  }
}

function storyStream(stories: string[], tokenizer: TextTokenizer): Int32Array {
  const parts = stories.map((s) => tokenizer.encode(s));
  const out = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
