/**
 * Chat prompts: turns a list of messages into the exact prompt string a model was trained on,
 * by rendering the model's Jinja chat template (from `tokenizer_config.json`) with
 * `npm:@huggingface/jinja`. Models without a template (base models such as OPT or the
 * TinyStories Llamas) get a plain-text prompt instead, so callers never need two code paths.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderChat } from "@llm-surgeon/toolkit";
 * const prompt = renderChat(null, [{ role: "user", content: "Once upon a time" }]);
 * // no template: a single user message is passed through unchanged
 * assert.equal(prompt, "Once upon a time");
 * ```
 *
 * @module
 */
import { Template } from "@huggingface/jinja";

/**
 * One turn of a conversation. `role` is usually `system`, `user` or `assistant`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type ChatMessage, plainChatPrompt } from "@llm-surgeon/toolkit";
 * const turn: ChatMessage = { role: "user", content: "Once upon a time" };
 * assert.equal(plainChatPrompt([turn]), "Once upon a time");
 * ```
 */
export interface ChatMessage {
  /** Who speaks: `system`, `user`, `assistant` (templates may accept others, e.g. `tool`). */
  role: string;
  /** What was said. */
  content: string;
}

/**
 * Options of {@link renderChat}.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderChat, type RenderChatOptions } from "@llm-surgeon/toolkit";
 * const opts: RenderChatOptions = {
 *   template: "{{ greeting }}{% for m in messages %} {{ m.content }}{% endfor %}",
 *   variables: { greeting: "Hi!" },
 * };
 * assert.equal(renderChat(null, [{ role: "user", content: "ping" }], opts), "Hi! ping");
 * ```
 */
export interface RenderChatOptions {
  /**
   * Append the text that opens the assistant's next turn (template variable
   * `add_generation_prompt`; in the plain-text fallback the line `Assistant:`). Default false.
   */
  addGenerationPrompt?: boolean;
  /** A template to use instead of the tokenizer's own (e.g. from `chat_template.jinja`). */
  template?: string | null;
  /**
   * Extra template variables (e.g. `tools`, `date_string`); they cannot replace the standard ones
   * (`messages`, `add_generation_prompt`, `bos_token`, `eos_token`, `raise_exception`).
   */
  variables?: Record<string, unknown>;
}

/**
 * The chat template of a model failed to parse or to render (e.g. `raise_exception(...)`).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { ChatTemplateError, renderChat } from "@llm-surgeon/toolkit";
 * const template = "{{ raise_exception('only user turns, please') }}";
 * assert.throws(
 *   () => renderChat(null, [{ role: "system", content: "x" }], { template }),
 *   ChatTemplateError,
 * );
 * ```
 */
export class ChatTemplateError extends Error {
  /**
   * Builds the error; the message starts with the template's source.
   *
   * @param source where the template came from (`tokenizer_config.json chat_template`, `options.template`)
   * @param message what went wrong
   */
  constructor(source: string, message: string) {
    super(`chat template (${source}): ${message}`);
    this.name = "ChatTemplateError";
  }
}

/**
 * The tokenizer fields {@link renderChat} reads: the template and the special-token ids and their
 * text. Every `TextTokenizer` (model/types.ts) of a loaded model has them.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type ChatTokenizer, renderChat } from "@llm-surgeon/toolkit";
 * // A stand-in whose BOS id 1 decodes to "<s>".
 * const tok: ChatTokenizer = {
 *   chatTemplate: "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}",
 *   bosId: 1,
 *   eosId: 2,
 *   decode: (ids) => Array.from(ids, (id) => (id === 1 ? "<s>" : "</s>")).join(""),
 * };
 * assert.equal(renderChat(tok, [{ role: "user", content: "hi" }]), "<s>[user] hi");
 * ```
 */
export interface ChatTokenizer {
  /** Chat template from tokenizer_config.json, if any. */
  readonly chatTemplate: string | null;
  /** BOS id, if any. */
  readonly bosId: number | null;
  /** EOS id, if any. */
  readonly eosId: number | null;
  /** Text of `ids`; called with `skipSpecialTokens: false` for the BOS/EOS strings. */
  decode(ids: ArrayLike<number>, opts?: { skipSpecialTokens?: boolean }): string;
}

const compiled = new Map<string, Template>();

function compile(template: string, source: string): Template {
  let t = compiled.get(template);
  if (t === undefined) {
    try {
      t = new Template(template);
    } catch (e) {
      throw new ChatTemplateError(source, `cannot parse: ${(e as Error).message}`);
    }
    if (compiled.size > 16) compiled.clear();
    compiled.set(template, t);
  }
  return t;
}

/** The text of one special token id (`""` when the tokenizer has none). */
function specialTokenText(tokenizer: ChatTokenizer | null, id: number | null): string {
  if (tokenizer === null || id === null) return "";
  return tokenizer.decode([id], { skipSpecialTokens: false });
}

function capitalise(role: string): string {
  return role.length === 0 ? role : role[0].toUpperCase() + role.slice(1);
}

/**
 * The plain-text prompt used when a model has no chat template. A conversation that is a single
 * user message is returned unchanged (a base model just continues the text). Anything else
 * becomes a transcript, one paragraph per turn, `Role: content`, ending with `Assistant:` when a
 * generation prompt is asked for.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { plainChatPrompt } from "@llm-surgeon/toolkit";
 * const p = plainChatPrompt([
 *   { role: "system", content: "Be brief." },
 *   { role: "user", content: "Hi" },
 * ], true);
 * assert.equal(p, "System: Be brief.\n\nUser: Hi\n\nAssistant:");
 * ```
 *
 * @param messages the conversation
 * @param addGenerationPrompt end with an open `Assistant:` turn
 */
export function plainChatPrompt(
  messages: readonly ChatMessage[],
  addGenerationPrompt = false,
): string {
  if (messages.length === 1 && messages[0].role === "user" && !addGenerationPrompt) {
    return messages[0].content;
  }
  const turns = messages.map((m) => `${capitalise(m.role)}: ${m.content}`);
  if (addGenerationPrompt) turns.push("Assistant:");
  return turns.join("\n\n");
}

function checkMessages(messages: readonly ChatMessage[]): void {
  if (!Array.isArray(messages)) {
    throw new TypeError(
      `renderChat: messages must be an array of {role, content}, got ${typeof messages}`,
    );
  }
  messages.forEach((m, i) => {
    if (
      m === null || typeof m !== "object" || typeof m.role !== "string" ||
      typeof m.content !== "string"
    ) {
      throw new TypeError(`renderChat: messages[${i}] must be {role: string, content: string}`);
    }
  });
}

/**
 * Renders a conversation into a prompt string with the model's chat template, exactly as
 * Hugging Face's `apply_chat_template(..., tokenize=False)` does: the template sees `messages`,
 * `add_generation_prompt`, `bos_token` and `eos_token` (plus {@link RenderChatOptions.variables}),
 * and `raise_exception(msg)` aborts with a {@link ChatTemplateError}. Without a template (neither
 * `opts.template` nor `tokenizer.chatTemplate`) it falls back to {@link plainChatPrompt}.
 *
 * The result usually already contains the BOS text when the template writes `bos_token`; encode
 * it with `addSpecialTokens: false` in that case to avoid a second BOS.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderChat } from "@llm-surgeon/toolkit";
 * const tok = {
 *   chatTemplate: "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}" +
 *     "{% if add_generation_prompt %}<assistant>{% endif %}",
 *   bosId: null,
 *   eosId: null,
 *   decode: () => "",
 * };
 * const s = renderChat(tok, [{ role: "user", content: "Hello" }], { addGenerationPrompt: true });
 * assert.equal(s, "<user>Hello<assistant>");
 * ```
 *
 * @param tokenizer the model's tokenizer (its `chatTemplate` and BOS/EOS), or null
 * @param messages the conversation, oldest first
 * @param opts generation prompt, template override, extra variables
 * @returns the prompt text
 */
export function renderChat(
  tokenizer: ChatTokenizer | null,
  messages: readonly ChatMessage[],
  opts: RenderChatOptions = {},
): string {
  checkMessages(messages);
  const addGenerationPrompt = opts.addGenerationPrompt ?? false;
  const source = opts.template != null ? "options.template" : "tokenizer_config.json chat_template";
  const template = opts.template ?? tokenizer?.chatTemplate ?? null;
  if (template === null || template.trim() === "") {
    return plainChatPrompt(messages, addGenerationPrompt);
  }
  const compiledTemplate = compile(template, source);
  const extra = { ...opts.variables };
  delete extra.raise_exception; // built into the template engine; redeclaring it is an error
  const context: Record<string, unknown> = {
    ...extra,
    messages: messages.map((m) => ({ ...m })),
    add_generation_prompt: addGenerationPrompt,
    bos_token: specialTokenText(tokenizer, tokenizer?.bosId ?? null),
    eos_token: specialTokenText(tokenizer, tokenizer?.eosId ?? null),
  };
  try {
    return compiledTemplate.render(context);
  } catch (e) {
    // includes the template's own raise_exception("...") (built into @huggingface/jinja)
    throw new ChatTemplateError(source, `cannot render: ${(e as Error).message}`);
  }
}
