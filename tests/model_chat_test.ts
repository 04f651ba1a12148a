import assert from "node:assert/strict";
import {
  type ChatMessage,
  ChatTemplateError,
  type ChatTokenizer,
  plainChatPrompt,
  renderChat,
} from "../model/chat.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { makeTinyModelDir } from "./_tiny_models.ts";

/** A tokenizer stand-in whose special tokens are `[BOS]` (id 1) and `[EOS]` (id 2). */
function fakeTokenizer(chatTemplate: string | null): ChatTokenizer {
  const names: Record<number, string> = { 1: "[BOS]", 2: "[EOS]" };
  return {
    chatTemplate,
    bosId: 1,
    eosId: 2,
    decode: (ids, opts) => {
      assert.equal(opts?.skipSpecialTokens, false, "special tokens must be decoded as text");
      return Array.from(ids, (id) => names[id] ?? "?").join("");
    },
  };
}

// A turn-marker format written for this test: each turn is `<|role|>\n{content}[EOS]\n`.
const markerTemplate = "{{ bos_token }}{% for m in messages %}" +
  "<|{{ m.role }}|>\n{{ m.content | trim }}{{ eos_token }}\n{% endfor %}" +
  "{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

/** Independent TypeScript rendering of `markerTemplate`. */
function markerReference(messages: ChatMessage[], addGenerationPrompt: boolean): string {
  let s = "[BOS]";
  for (const m of messages) s += `<|${m.role}|>\n${m.content.trim()}[EOS]\n`;
  if (addGenerationPrompt) s += "<|assistant|>\n";
  return s;
}

// A format with a system message folded into the first user turn, and a check that user and
// assistant turns alternate (the kind of validation real templates do with raise_exception).
const foldingTemplate = "{% if messages[0].role == 'system' %}" +
  "{% set sys = messages[0].content %}{% set rest = messages[1:] %}" +
  "{% else %}{% set sys = '' %}{% set rest = messages %}{% endif %}" +
  "{% for m in rest %}" +
  "{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('turns must alternate user/assistant') }}{% endif %}" +
  "{% if m.role == 'user' %}{{ bos_token }}[Q] " +
  "{% if loop.first and sys %}(({{ sys }})) {% endif %}{{ m.content }} [/Q]" +
  "{% else %} {{ m.content }} {{ eos_token }}{% endif %}{% endfor %}";

function foldingReference(messages: ChatMessage[]): string {
  let sys = "";
  let rest = messages;
  if (messages[0]?.role === "system") {
    sys = messages[0].content;
    rest = messages.slice(1);
  }
  return rest.map((m, i) =>
    m.role === "user"
      ? `[BOS][Q] ${i === 0 && sys ? `((${sys})) ` : ""}${m.content} [/Q]`
      : ` ${m.content} [EOS]`
  ).join("");
}

const conversation: ChatMessage[] = [
  { role: "system", content: "  You are terse. " },
  { role: "user", content: "Name a colour." },
  { role: "assistant", content: "Blue." },
  { role: "user", content: "Another?" },
];

Deno.test("renderChat() renders the tokenizer's template with bos/eos tokens and the generation prompt", () => {
  const tok = fakeTokenizer(markerTemplate);
  for (const addGenerationPrompt of [false, true]) {
    for (let n = 1; n <= conversation.length; n++) {
      const msgs = conversation.slice(0, n);
      assert.equal(
        renderChat(tok, msgs, { addGenerationPrompt }),
        markerReference(msgs, addGenerationPrompt),
      );
    }
  }
});

Deno.test("renderChat() runs loops, slices and conditionals of a system-folding template", () => {
  const tok = fakeTokenizer(foldingTemplate);
  assert.equal(renderChat(tok, conversation), foldingReference(conversation));
  const noSystem = conversation.slice(1);
  assert.equal(renderChat(tok, noSystem), foldingReference(noSystem));
  assert.match(
    renderChat(tok, conversation),
    /^\[BOS\]\[Q\] \(\( {2}You are terse\. \)\) Name a colour\./,
  );
});

Deno.test("renderChat() turns raise_exception() and syntax errors into ChatTemplateError", () => {
  const tok = fakeTokenizer(foldingTemplate);
  const bad: ChatMessage[] = [{ role: "user", content: "a" }, { role: "user", content: "b" }];
  assert.throws(() => renderChat(tok, bad), (e: unknown) => {
    assert.ok(e instanceof ChatTemplateError);
    assert.match(e.message, /tokenizer_config\.json chat_template/);
    assert.match(e.message, /turns must alternate user\/assistant/);
    return true;
  });
  assert.throws(
    () => renderChat(null, bad, { template: "{% for m in messages %}" }),
    (e: unknown) =>
      e instanceof ChatTemplateError && /options\.template/.test(e.message) &&
      /parse/.test(e.message),
  );
});

Deno.test("renderChat() prefers options.template and passes extra variables, but not over standard ones", () => {
  const tok = fakeTokenizer(markerTemplate);
  const out = renderChat(tok, [{ role: "user", content: "x" }], {
    template: "{{ greeting }}|{{ messages | length }}|{{ add_generation_prompt }}",
    variables: { greeting: "hi", messages: ["overridden?"], raise_exception: 1 },
  });
  assert.equal(out, "hi|1|false");
});

Deno.test("renderChat() falls back to plain text when the model has no template", () => {
  const one: ChatMessage[] = [{ role: "user", content: "Once upon a time" }];
  assert.equal(renderChat(null, one), "Once upon a time");
  assert.equal(renderChat(fakeTokenizer(null), one), "Once upon a time");
  assert.equal(renderChat(fakeTokenizer("   "), one), "Once upon a time");
  assert.equal(
    renderChat(fakeTokenizer(null), conversation, { addGenerationPrompt: true }),
    "System:   You are terse. \n\nUser: Name a colour.\n\nAssistant: Blue.\n\nUser: Another?\n\nAssistant:",
  );
  assert.equal(plainChatPrompt(one, true), "User: Once upon a time\n\nAssistant:");
  assert.equal(plainChatPrompt([]), "");
});

Deno.test("renderChat() rejects malformed messages by index", () => {
  assert.throws(
    () =>
      renderChat(null, [
        { role: "user", content: "ok" },
        { role: "user" } as unknown as ChatMessage,
      ]),
    /messages\[1\] must be \{role: string, content: string\}/,
  );
});

Deno.test("renderChat() uses a loaded tokenizer's chat_template and its BOS/EOS text", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chat_tok_" });
  try {
    await makeTinyModelDir(dir, "llama", 3);
    const configPath = `${dir}/tokenizer_config.json`;
    const config = JSON.parse(await Deno.readTextFile(configPath));
    config.chat_template = [{ name: "default", template: markerTemplate }];
    await Deno.writeTextFile(configPath, JSON.stringify(config));
    const tok = await loadTokenizer(dir);
    const text = renderChat(tok, conversation.slice(1, 2), { addGenerationPrompt: true });
    assert.equal(text, "<s><|user|>\nName a colour.</s>\n<|assistant|>\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
