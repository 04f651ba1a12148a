/**
 * Text generation with a KV cache: prefill the prompt once, then one token per step, reading
 * back only the last row of logits. Greedy when the temperature is 0, otherwise temperature
 * sampling with nucleus (top-p) filtering from a seeded generator.
 *
 * @module
 */
import type { GenerateOptions, TextTokenizer } from "./types.ts";
import type { KvCache } from "./transformer.ts";

/**
 * What generation needs from a model (implemented by `DecoderLM`).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { generateIds, type GenerationModel } from "@llm-surgeon/toolkit";
 * // A stand-in model over 5 tokens that always predicts "previous id + 1".
 * const counter: GenerationModel = {
 *   tokenizer: null,
 *   maxSeqLen: 16,
 *   config: { eosTokenId: 4 },
 *   newKvCache: () => [],
 *   lastLogits: (ids) => {
 *     const logits = new Float32Array(5);
 *     logits[(ids[ids.length - 1] + 1) % 5] = 1;
 *     return Promise.resolve(logits);
 *   },
 * };
 * // Greedy decoding stops at the EOS id 4.
 * assert.deepEqual(Array.from(await generateIds(counter, [0], { maxTokens: 10 })), [1, 2, 3, 4]);
 * ```
 */
export interface GenerationModel {
  /** Tokenizer for {@link generateText}. */
  readonly tokenizer: TextTokenizer | null;
  /** Context length. */
  readonly maxSeqLen: number;
  /** EOS id from the config, if any. */
  readonly config: { eosTokenId: number | null };
  /** Fresh caches for `capacity` positions. */
  newKvCache(capacity: number): KvCache[];
  /** Logits of the last of `ids` placed at positions `pos0…` (filling `kv` when given). */
  lastLogits(ids: ArrayLike<number>, pos0: number, kv: KvCache[] | null): Promise<Float32Array>;
}

/**
 * Options of {@link generateIds}.
 *
 * @example Usage
 * ```ts
 * import type { GenerateIdsOptions } from "@llm-surgeon/toolkit";
 * // 64 sampled tokens that do not stop at EOS, recomputing the prefix every step.
 * const opts: GenerateIdsOptions = {
 *   maxTokens: 64,
 *   temperature: 0.8,
 *   topP: 0.95,
 *   seed: 1,
 *   eosId: null,
 *   useCache: false,
 * };
 * console.log(opts.maxTokens); // 64
 * ```
 */
export interface GenerateIdsOptions extends GenerateOptions {
  /** Use the KV cache (default true); false recomputes the whole prefix every step. */
  useCache?: boolean;
  /** Stop at this id (default: the config's EOS); null never stops early. */
  eosId?: number | null;
}

/** Mulberry32 uniform generator (sampled-Fisher labels, generation). */
export class Uniform {
  #s: number;
  /**
   * A generator seeded with `seed`.
   *
   * @param seed 32-bit seed
   */
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** A uniform draw in [0, 1). */
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/**
 * Picks the next token from one row of logits: argmax when `temperature` is 0 (lowest id on
 * ties), else a draw from `softmax(z / temperature)` restricted to the smallest set of most
 * likely tokens whose probability reaches `topP`.
 *
 * @param logits `[V]`
 * @param temperature ≥ 0
 * @param topP in (0, 1]
 * @param u a uniform draw in [0, 1)
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { pickToken } from "@llm-surgeon/toolkit";
 * const logits = Float32Array.from([0, 3, 1]);
 * assert.equal(pickToken(logits, 0, 1, 0.5), 1); // temperature 0: argmax
 * // top-p 0.5 keeps only the most likely token, whatever the draw
 * assert.equal(pickToken(logits, 1, 0.5, 0.99), 1);
 * ```
 */
export function pickToken(
  logits: ArrayLike<number>,
  temperature: number,
  topP: number,
  u: number,
): number {
  const V = logits.length;
  if (!(temperature >= 0)) throw new RangeError(`temperature must be ≥ 0, got ${temperature}`);
  if (!(topP > 0 && topP <= 1)) throw new RangeError(`topP must be in (0, 1], got ${topP}`);
  let best = 0;
  for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
  if (temperature === 0) return best;
  const m = logits[best] / temperature;
  const p = new Float64Array(V);
  let z = 0;
  for (let i = 0; i < V; i++) z += p[i] = Math.exp(logits[i] / temperature - m);
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
  let kept = 0, mass = 0;
  while (kept < V && mass < topP * z) mass += p[order[kept++]];
  let goal = u * mass;
  for (let j = 0; j < kept; j++) {
    goal -= p[order[j]];
    if (goal < 0) return order[j];
  }
  return order[kept - 1];
}

/**
 * Generates up to `maxTokens` token ids after `prompt` and returns them (without the prompt).
 *
 * @param lm the model
 * @param prompt prompt ids (with BOS if the model wants one)
 * @param opts sampling options, `useCache`, `eosId`
 * @example Usage
 * ```ts ignore
 * import { generateIds, loadModel } from "@llm-surgeon/toolkit";
 * const model = await loadModel("facebook/opt-125m");
 * const ids = await generateIds(model, Int32Array.from([2]), { maxTokens: 16, temperature: 0 });
 * ```
 *
 * @example With a stand-in model
 * ```ts
 * import assert from "node:assert/strict";
 * import { generateIds, type GenerationModel } from "@llm-surgeon/toolkit";
 * // A stand-in model over 5 tokens that always predicts "previous id + 1".
 * const counter: GenerationModel = {
 *   tokenizer: null,
 *   maxSeqLen: 16,
 *   config: { eosTokenId: 4 },
 *   newKvCache: () => [],
 *   lastLogits: (ids) => {
 *     const logits = new Float32Array(5);
 *     logits[(ids[ids.length - 1] + 1) % 5] = 1;
 *     return Promise.resolve(logits);
 *   },
 * };
 * const ids = await generateIds(counter, [2], { maxTokens: 3, eosId: null, useCache: false });
 * assert.deepEqual(Array.from(ids), [3, 4, 0]);
 * ```
 */
export async function generateIds(
  lm: GenerationModel,
  prompt: ArrayLike<number>,
  opts: GenerateIdsOptions = {},
): Promise<Int32Array> {
  const maxTokens = opts.maxTokens ?? 32;
  const temperature = opts.temperature ?? 0;
  const topP = opts.topP ?? 1;
  const eos = opts.eosId === undefined ? lm.config.eosTokenId : opts.eosId;
  const rand = new Uniform(opts.seed ?? 0);
  const all = Array.from(prompt);
  const room = Math.max(0, Math.min(maxTokens, lm.maxSeqLen - all.length));
  const kv = opts.useCache === false ? null : lm.newKvCache(all.length + room);
  const out: number[] = [];
  try {
    let logits = await lm.lastLogits(all, 0, kv);
    for (let step = 0; step < room; step++) {
      const id = pickToken(logits, temperature, topP, rand.next());
      out.push(id);
      all.push(id);
      if (id === eos || step === room - 1) break;
      logits = kv
        ? await lm.lastLogits([id], all.length - 1, kv)
        : await lm.lastLogits(all, 0, null);
    }
  } finally {
    if (kv) { for (const c of kv) (c.k.dispose(), c.v.dispose()); }
  }
  return Int32Array.from(out);
}

/**
 * Encodes `prompt` with the model's tokenizer, generates, and decodes the continuation.
 *
 * @example Usage
 * ```ts ignore
 * const text = await generateText(model, "Once upon a time", { maxTokens: 20 });
 * ```
 *
 * @example With a stand-in model
 * ```ts
 * import assert from "node:assert/strict";
 * import { generateText, type GenerationModel, type TextTokenizer } from "@llm-surgeon/toolkit";
 * // One token per UTF-8 byte.
 * const bytes: TextTokenizer = {
 *   encode: (text) => Int32Array.from(new TextEncoder().encode(text)),
 *   decode: (ids) => new TextDecoder().decode(Uint8Array.from(ids)),
 *   bosId: null,
 *   eosId: null,
 *   vocabSize: 256,
 *   chatTemplate: null,
 * };
 * // A model that always continues with "!" (byte 33).
 * const shout: GenerationModel = {
 *   tokenizer: bytes,
 *   maxSeqLen: 64,
 *   config: { eosTokenId: null },
 *   newKvCache: () => [],
 *   lastLogits: () => {
 *     const logits = new Float32Array(256);
 *     logits[33] = 1;
 *     return Promise.resolve(logits);
 *   },
 * };
 * assert.equal(await generateText(shout, "Hello", { maxTokens: 3 }), "!!!");
 * ```
 */
export async function generateText(
  lm: GenerationModel,
  prompt: string,
  opts: GenerateOptions = {},
): Promise<string> {
  if (!lm.tokenizer) {
    throw new Error("generate: the model has no tokenizer; use generateIds with token ids");
  }
  const tok = lm.tokenizer;
  const ids = tok.encode(prompt);
  const out = await generateIds(lm, ids, opts);
  // Decode the continuation in the context of the prompt: decoding the new ids alone drops the
  // leading space of a SentencePiece "▁word" piece ("a little" + "girl" instead of " girl").
  const head = tok.decode(ids);
  const full = tok.decode([...ids, ...out]);
  return full.startsWith(head) ? full.slice(head.length) : tok.decode(out);
}
