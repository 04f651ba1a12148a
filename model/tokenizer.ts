/**
 * Tokenizers that behave exactly like the Hugging Face tokenizer of a model folder, through npm
 * `@huggingface/tokenizers`: `tokenizer.json` (+ `tokenizer_config.json`), or a GPT-2-style
 * byte-level BPE rebuilt in memory from `vocab.json` + `merges.txt` (OPT repositories on the Hub).
 *
 * Long texts are cut into chunks at places where the tokenizer provably cannot join tokens
 * across the cut, so the ids equal those of encoding the whole string (the library's BPE is
 * superlinear in the length of one pre-token, and a Llama tokenizer has no pre-tokenizer).
 *
 * @module
 */
import { Tokenizer } from "@huggingface/tokenizers";
import type { TextTokenizer } from "./types.ts";

/**
 * A missing or unusable tokenizer; the message names the folder or file.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadTokenizer, TokenizerError } from "@llm-surgeon/toolkit";
 * await assert.rejects(loadTokenizer("/no/such/model"), TokenizerError);
 * ```
 */
export class TokenizerError extends Error {
  /**
   * Creates the error; the message is prefixed with the folder or file.
   * @param where folder or file
   * @param message what is wrong
   */
  constructor(where: string, message: string) {
    super(`${where}: ${message}`);
    this.name = "TokenizerError";
  }
}

/** A parsed JSON object. */
export type Json = Record<string, unknown>;

/** Characters per chunk aimed at when encoding long texts. */
export const CHUNK_CHARS = 1024;

function join(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

async function readJsonIfExists(path: string): Promise<Json | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new TokenizerError(path, `cannot read: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text) as Json;
  } catch (e) {
    throw new TokenizerError(path, `invalid JSON: ${(e as Error).message}`);
  }
}

async function fileExists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** Content of a special-token entry (`"</s>"` or `{content: "</s>", ...}`). */
function tokenContent(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as Json).content === "string") {
    return (v as Json).content as string;
  }
  return null;
}

/**
 * Builds the `tokenizer.json` object of a GPT-2-style byte-level BPE from `vocab.json` and
 * `merges.txt` contents, as transformers' converter does for OPT: ByteLevel pre-tokenizer and
 * decoder, special tokens from the tokenizer config as added tokens, and (unless
 * `add_bos_token` is false) a template that prepends the BOS token (`</s>` for OPT).
 *
 * @param vocab parsed vocab.json (token → id)
 * @param merges merges.txt text
 * @param config tokenizer_config.json merged with special_tokens_map.json
 * @param source folder name for error messages
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { byteLevelBpeJson, HfTokenizer } from "./tokenizer.ts";
 * const config = { bos_token: "</s>", eos_token: "</s>" };
 * // "Ġ" is GPT-2's byte-level stand-in for a space.
 * const vocab = { "a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4, "</s>": 5 };
 * const json = byteLevelBpeJson(vocab, "#version: 0.2\na b\nĠ ab\n", config);
 * const tok = new HfTokenizer(json, config, "inline", null);
 * assert.deepEqual(Array.from(tok.encode("ab ab")), [5, 2, 4]); // BOS "</s>" first, as OPT
 * ```
 */
export function byteLevelBpeJson(
  vocab: Record<string, number>,
  merges: string,
  config: Json,
  source = "vocab.json",
): Json {
  const mergeList = merges.split("\n").map((l) => l.replace(/\r$/, "")).filter((l, i) =>
    l.trim() !== "" && !(i === 0 && l.startsWith("#version"))
  );
  for (const m of mergeList) {
    if (m.split(" ").length !== 2) {
      throw new TokenizerError(source, `merges.txt line ${JSON.stringify(m)} is not "left right"`);
    }
  }
  const specials = new Map<string, number>();
  const addSpecial = (v: unknown) => {
    const c = tokenContent(v);
    if (c === null) return;
    const id = vocab[c];
    if (id === undefined) {
      throw new TokenizerError(source, `special token ${c} is not in vocab.json`);
    }
    specials.set(c, id);
  };
  for (
    const k of [
      "bos_token",
      "eos_token",
      "unk_token",
      "pad_token",
      "sep_token",
      "cls_token",
      "mask_token",
    ]
  ) {
    addSpecial(config[k]);
  }
  for (const t of (config.additional_special_tokens as unknown[] | undefined) ?? []) addSpecial(t);
  const addedTokens = [...specials].sort((a, b) => a[1] - b[1]).map(([content, id]) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: true,
    special: true,
  }));
  const bos = tokenContent(config.bos_token);
  const addBos = bos !== null && config.add_bos_token !== false;
  const postProcessor = addBos
    ? {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: bos, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { [bos]: { id: bos, ids: [vocab[bos]], tokens: [bos] } },
    }
    : null;
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: {
      type: "ByteLevel",
      add_prefix_space: config.add_prefix_space === true,
      trim_offsets: true,
      use_regex: true,
    },
    post_processor: postProcessor,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges: mergeList,
    },
  };
}

const LLAMA_CLASSES = new Set([
  "LlamaTokenizer",
  "LlamaTokenizerFast",
  "CodeLlamaTokenizer",
  "CodeLlamaTokenizerFast",
]);

/**
 * For Llama tokenizers, HF rebuilds the post-processor from `add_bos_token`/`add_eos_token`
 * of tokenizer_config.json; do the same so the special tokens match.
 */
function llamaPostProcessor(json: Json, config: Json): Json | null {
  if (!LLAMA_CLASSES.has(String(config.tokenizer_class))) return null;
  if (!("add_bos_token" in config) && !("add_eos_token" in config)) return null;
  const addBos = config.add_bos_token !== false;
  const addEos = config.add_eos_token === true;
  const bos = tokenContent(config.bos_token);
  const eos = tokenContent(config.eos_token);
  const vocab = ((json.model as Json)?.vocab ?? {}) as Record<string, number>;
  const idOf = (t: string) => {
    const added = (json.added_tokens as { content: string; id: number }[] | undefined)?.find((a) =>
      a.content === t
    );
    return added?.id ?? vocab[t];
  };
  const single: unknown[] = [];
  const pair: unknown[] = [];
  const special: Json = {};
  const useBos = addBos && bos !== null && idOf(bos) !== undefined;
  const useEos = addEos && eos !== null && idOf(eos) !== undefined;
  for (const [seq, type] of [["A", 0], ["B", 1]] as const) {
    const out = seq === "A" ? single : pair;
    if (seq === "B") pair.push(...single);
    if (useBos) out.push({ SpecialToken: { id: bos, type_id: type } });
    out.push({ Sequence: { id: seq, type_id: type } });
    if (useEos) out.push({ SpecialToken: { id: eos, type_id: type } });
  }
  if (useBos) special[bos!] = { id: bos, ids: [idOf(bos!)], tokens: [bos] };
  if (useEos) special[eos!] = { id: eos, ids: [idOf(eos!)], tokens: [eos] };
  return { type: "TemplateProcessing", single, pair, special_tokens: special };
}

/** How a long text may be cut without changing the ids. */
type ChunkMode =
  | { kind: "none" }
  | { kind: "byteLevel" }
  | { kind: "prepend"; spaceId: number; fuseUnk: boolean; knownChar: (c: string) => boolean };

const WS = /\s/u;

/**
 * Whether the pipeline is SentencePiece-style: spaces become `▁` and one `▁` is prepended to
 * the start of the text, with no splitting (normaliser `Prepend("▁")` + `Replace(" ", "▁")`
 * and no pre-tokenizer, as Llama 2; or a `Metaspace` pre-tokenizer that prepends, as newer
 * conversions).
 */
function isSentencePieceStyle(norm: Json | null, pre: Json | null): boolean {
  if (norm && !pre) {
    const steps = norm.type === "Sequence" ? (norm.normalizers as Json[]) : [norm];
    const isPrepend = (s: Json) => s.type === "Prepend" && s.prepend === "▁";
    const isReplace = (s: Json) =>
      s.type === "Replace" && (s.pattern as Json)?.String === " " && s.content === "▁";
    return steps.length === 2 && isPrepend(steps[0]) && isReplace(steps[1]);
  }
  return !norm && pre?.type === "Metaspace" && (pre.replacement ?? "▁") === "▁" &&
    (pre.prepend_scheme === "first" || pre.prepend_scheme === "always");
}

/** Decides from the tokenizer.json pipeline whether (and how) long texts can be chunked. */
function chunkModeOf(json: Json, tok: Tokenizer): ChunkMode {
  const model = json.model as Json | undefined;
  if (!model || model.type !== "BPE") return { kind: "none" };
  const added = (json.added_tokens as Json[] | undefined) ?? [];
  if (added.some((a) => a.lstrip || a.rstrip || WS.test(String(a.content)))) {
    return { kind: "none" };
  }
  const norm = json.normalizer as Json | null | undefined;
  const pre = json.pre_tokenizer as Json | null | undefined;
  if (
    !norm && pre && pre.type === "ByteLevel" && pre.add_prefix_space !== true &&
    pre.use_regex !== false
  ) {
    return { kind: "byteLevel" };
  }
  if (!isSentencePieceStyle(norm ?? null, pre ?? null)) return { kind: "none" };
  const merges = (model.merges as (string | string[])[]) ?? [];
  if (merges.some((m) => (Array.isArray(m) ? m.join(" ") : m).includes("\n"))) {
    return { kind: "none" };
  }
  const spaceId = tok.token_to_id("▁");
  if (spaceId === undefined) return { kind: "none" };
  const byteFallback = model.byte_fallback === true;
  // A character is known when it is a vocab piece, or byte fallback has all of its byte pieces;
  // unknown characters become <unk>, and fuse_unk joins neighbouring ones.
  const knownChar = (c: string) => {
    if (tok.token_to_id(c === " " ? "▁" : c) !== undefined) return true;
    if (!byteFallback) return false;
    return [...new TextEncoder().encode(c)].every((b) =>
      tok.token_to_id(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`) !== undefined
    );
  };
  const fuseUnk = model.fuse_unk === true && !knownChar("\n");
  return { kind: "prepend", spaceId, fuseUnk, knownChar };
}

/**
 * Cut positions for `text` (each chunk after the first starts at a cut).
 * byteLevel: cut inside a whitespace run of ≥ 2 characters, before its last character, where
 * the run is followed by a non-space, or after a lone `\n` (or other non-space whitespace)
 * between two non-spaces: the GPT-2 regex splits there in the whole text too.
 * prepend: cut just before a `\n` (no merge contains `\n`; the continuation chunk's prepended
 * `▁` is dropped again), unless unknown characters would have been fused across the cut.
 */
function cutPositions(text: string, mode: ChunkMode, target: number): number[] {
  const cuts: number[] = [];
  if (mode.kind === "none" || text.length <= 2 * target) return cuts;
  const valid = (p: number): boolean => {
    if (p <= 0 || p >= text.length) return false;
    if (mode.kind === "byteLevel") {
      if (!WS.test(text[p - 1])) return false;
      // (i) inside a run of ≥ 2 whitespace characters, before its last one
      if (WS.test(text[p])) return p + 1 < text.length && !WS.test(text[p + 1]);
      // (ii) after a lone whitespace character that is not a space (a space joins the word)
      return text[p - 1] !== " " && (p < 2 || !WS.test(text[p - 2]));
    }
    if (text[p] !== "\n") return false;
    return !mode.fuseUnk || mode.knownChar(text[p - 1]);
  };
  let last = 0;
  while (text.length - last > 2 * target) {
    let p = text.indexOf("\n", last + target);
    let found = -1;
    while (p !== -1) {
      // try the newline itself and the character after it (byteLevel wants a run's last char)
      if (valid(p)) {
        found = p;
        break;
      }
      if (valid(p + 1)) {
        found = p + 1;
        break;
      }
      p = text.indexOf("\n", p + 1);
    }
    if (found === -1) break;
    cuts.push(found);
    last = found;
  }
  return cuts;
}

/**
 * A Hugging Face tokenizer with exact special tokens and chunked encoding of long texts.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { byteLevelBpeJson, HfTokenizer } from "./tokenizer.ts";
 * // A six-token byte-level BPE built in memory (loadTokenizer reads the same from a folder).
 * const config = { bos_token: "</s>", eos_token: "</s>" };
 * const vocab = { "a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4, "</s>": 5 };
 * const tok = new HfTokenizer(byteLevelBpeJson(vocab, "a b\nĠ ab\n", config), config, "inline", null);
 * const ids = tok.encode("ab ab");
 * assert.deepEqual(Array.from(ids), [5, 2, 4]);
 * assert.equal(tok.decode(ids), "ab ab"); // special tokens skipped
 * assert.equal(tok.bosId, 5);
 * assert.equal(tok.vocabSize, 6);
 * ```
 */
export class HfTokenizer implements TextTokenizer {
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly vocabSize: number;
  readonly chatTemplate: string | null;
  /** Folder the tokenizer was loaded from. */
  readonly source: string;
  readonly #tok: Tokenizer;
  readonly #mode: ChunkMode;
  readonly #cleanup: boolean;

  /**
   * Builds the tokenizer from parsed files; use {@link loadTokenizer} to read a folder.
   * @param json tokenizer.json object
   * @param config tokenizer_config.json merged over special_tokens_map.json
   * @param source folder, for error messages
   * @param chatTemplate chat template, if any
   */
  constructor(json: Json, config: Json, source: string, chatTemplate: string | null) {
    this.source = source;
    const llamaPost = llamaPostProcessor(json, config);
    const full: Json = { ...json, post_processor: llamaPost ?? json.post_processor ?? null };
    full.normalizer ??= null;
    full.pre_tokenizer ??= null;
    full.decoder ??= null;
    full.added_tokens ??= [];
    try {
      this.#tok = new Tokenizer(full, config);
    } catch (e) {
      throw new TokenizerError(source, `cannot build tokenizer: ${(e as Error).message}`);
    }
    this.#cleanup = config.clean_up_tokenization_spaces === true;
    this.#mode = chunkModeOf(full, this.#tok);
    const idOf = (v: unknown) => {
      const c = tokenContent(v);
      return c === null ? null : this.#tok.token_to_id(c) ?? null;
    };
    this.bosId = idOf(config.bos_token);
    this.eosId = idOf(config.eos_token);
    let maxId = -1;
    for (const id of this.#tok.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;
    this.chatTemplate = chatTemplate;
  }

  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): Int32Array {
    const special = opts.addSpecialTokens ?? true;
    const cuts = cutPositions(text, this.#mode, CHUNK_CHARS);
    if (cuts.length === 0) {
      return Int32Array.from(this.#tok.encode(text, { add_special_tokens: special }).ids);
    }
    const bounds = [0, ...cuts, text.length];
    const body: number[] = [];
    let head: number[] = [];
    let tail: number[] = [];
    for (let i = 0; i + 1 < bounds.length; i++) {
      const piece = text.slice(bounds[i], bounds[i + 1]);
      let ids = this.#tok.encode(piece, { add_special_tokens: false }).ids;
      if (i > 0 && this.#mode.kind === "prepend") {
        if (ids[0] !== this.#mode.spaceId) {
          throw new TokenizerError(this.source, "internal error: a chunk did not start with ▁");
        }
        ids = ids.slice(1);
      }
      if (i === 0 && special) [head, tail] = this.#template(piece, ids);
      for (const id of ids) body.push(id);
    }
    return Int32Array.from([...head, ...body, ...tail]);
  }

  /** The special tokens the post-processor puts before and after `plain` (the ids of `text`). */
  #template(text: string, plain: number[]): [number[], number[]] {
    const wrapped = this.#tok.encode(text, { add_special_tokens: true }).ids;
    const extra = wrapped.length - plain.length;
    for (let k = 0; k <= extra; k++) {
      let same = true;
      for (let j = 0; j < plain.length && same; j++) same = wrapped[k + j] === plain[j];
      if (same) return [wrapped.slice(0, k), wrapped.slice(k + plain.length)];
    }
    throw new TokenizerError(this.source, "internal error: cannot locate the template tokens");
  }

  decode(ids: ArrayLike<number>, opts: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return "";
    return this.#tok.decode(Array.from(ids), {
      skip_special_tokens: opts.skipSpecialTokens ?? true,
      clean_up_tokenization_spaces: this.#cleanup,
    });
  }

  /**
   * Where {@link encode} cuts `text` into separately encoded chunks (empty when it encodes the
   * text in one piece); exposed for tests and diagnostics.
   */
  chunkCuts(text: string): number[] {
    return cutPositions(text, this.#mode, CHUNK_CHARS);
  }

  /** Token id of a token string, or undefined. */
  tokenToId(token: string): number | undefined {
    return this.#tok.token_to_id(token);
  }
}

/** Chat template from tokenizer_config.json (string, or the "default" of a named list). */
function chatTemplateOf(config: Json): string | null {
  const t = config.chat_template;
  if (typeof t === "string") return t;
  if (Array.isArray(t)) {
    const named = t as { name?: string; template?: string }[];
    return (named.find((x) => x.name === "default") ?? named[0])?.template ?? null;
  }
  return null;
}

/**
 * Loads the tokenizer of a Hugging Face model folder: `tokenizer.json` (+ `tokenizer_config.json`,
 * `special_tokens_map.json`), or `vocab.json` + `merges.txt` (byte-level BPE as for OPT).
 *
 * @param dir model folder
 * @throws TokenizerError when the folder has no usable tokenizer files
 * @example Usage
 * ```ts ignore
 * import { loadTokenizer } from "@llm-surgeon/toolkit";
 * const tok = await loadTokenizer("models/opt-125m");
 * tok.encode("Hello world"); // Int32Array [2, 31414, 232]
 * ```
 */
export async function loadTokenizer(dir: string): Promise<HfTokenizer> {
  const config: Json = {
    ...(await readJsonIfExists(join(dir, "special_tokens_map.json")) ?? {}),
    ...(await readJsonIfExists(join(dir, "tokenizer_config.json")) ?? {}),
  };
  let chatTemplate = chatTemplateOf(config);
  if (chatTemplate === null && await fileExists(join(dir, "chat_template.jinja"))) {
    chatTemplate = await Deno.readTextFile(join(dir, "chat_template.jinja"));
  }
  const json = await readJsonIfExists(join(dir, "tokenizer.json"));
  if (json) return new HfTokenizer(json, config, dir, chatTemplate);
  const vocab = await readJsonIfExists(join(dir, "vocab.json"));
  if (vocab && await fileExists(join(dir, "merges.txt"))) {
    const merges = await Deno.readTextFile(join(dir, "merges.txt"));
    const added = await readJsonIfExists(join(dir, "added_tokens.json"));
    const fullVocab = {
      ...(vocab as Record<string, number>),
      ...(added as Record<string, number> ?? {}),
    };
    return new HfTokenizer(
      byteLevelBpeJson(fullVocab, merges, config, dir),
      config,
      dir,
      chatTemplate,
    );
  }
  if (await fileExists(join(dir, "tokenizer.model"))) {
    throw new TokenizerError(
      dir,
      `only a SentencePiece tokenizer.model is present; create tokenizer.json once with Python: ` +
        `python -c "from transformers import AutoTokenizer as T; T.from_pretrained('${dir}')` +
        `.save_pretrained('${dir}')"`,
    );
  }
  throw new TokenizerError(dir, "no tokenizer.json, and no vocab.json + merges.txt");
}
