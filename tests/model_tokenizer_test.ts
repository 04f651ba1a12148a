/**
 * Tokenizers: exact special tokens (OPT `</s>`, Llama `<s>`), the vocab.json + merges.txt path,
 * chunked encoding of long texts equal to whole-string encoding, and the reference ids of
 * shared/data (MANIFEST.md §8–9). Tests needing shared/data skip when it is absent.
 */
import assert from "node:assert/strict";
import { Tokenizer } from "@huggingface/tokenizers";
import {
  byteLevelBpeJson,
  CHUNK_CHARS,
  loadTokenizer,
  TokenizerError,
} from "../model/tokenizer.ts";

const DATA = new URL("../../shared/data/", import.meta.url);
const exists = (url: URL) => Deno.stat(url).then(() => true, () => false);
const HAVE_DATA = await exists(new URL("tokenizers/llama2/tokenizer.json", DATA)) &&
  await exists(new URL("models/hf/opt-tiny/tokenizer.json", DATA));
const path = (rel: string) => new URL(rel, DATA).pathname;

/** WikiText-2 test as the SparseGPT protocol joins it (MANIFEST.md §8 (b)). */
function wikitextJoined(): string {
  const rows = Deno.readTextFileSync(path("wikitext-2-raw/wiki.test.raw")).split("\n");
  rows.pop();
  return rows.map((l) => (l.trim() === "" ? "" : l + "\n")).join("\n\n");
}

const EDGE_CASES = [
  "",
  "Hello world",
  " leading and trailing  ",
  "tabs\tand\nnewlines\n\n\nand   runs of   spaces",
  "CJK 日本語テキスト, emoji 🙂👍, accents café naïve, NBSP\u00a0here",
  "literal special <s> and </s> tokens",
  "numbers 1234567 and 3.14159; punctuation!?... — “quotes” ’",
];

function same(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  assert.equal(a.length, b.length, `${what}: ${a.length} ids vs ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) assert.fail(`${what}: first difference at ${i}: ${a[i]} vs ${b[i]}`);
  }
}

Deno.test({
  name: "tokenizer: OPT — '</s>' BOS, and vocab.json + merges.txt equals tokenizer.json",
  ignore: !HAVE_DATA,
  fn: async () => {
    const fromJson = await loadTokenizer(path("models/hf/opt-tiny"));
    assert.deepEqual(Array.from(fromJson.encode("Hello world")), [2, 31414, 232]);
    assert.deepEqual(Array.from(fromJson.encode("Hello world", { addSpecialTokens: false })), [
      31414,
      232,
    ]);
    assert.deepEqual([fromJson.bosId, fromJson.eosId], [2, 2]);
    assert.equal(fromJson.decode(fromJson.encode("Hello world")), "Hello world");
    assert.equal(fromJson.decode([]), "");

    // The same folder without tokenizer.json: rebuilt from vocab.json + merges.txt.
    const dir = await Deno.makeTempDir();
    try {
      for (
        const f of ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]
      ) {
        await Deno.copyFile(path(`models/hf/opt-tiny/${f}`), `${dir}/${f}`);
      }
      const built = await loadTokenizer(dir);
      assert.deepEqual([built.bosId, built.eosId, built.vocabSize], [2, 2, fromJson.vocabSize]);
      const text = wikitextJoined().slice(0, 60_000);
      for (const t of [...EDGE_CASES, text]) {
        same(
          built.encode(t),
          fromJson.encode(t),
          `vocab+merges vs tokenizer.json on ${t.slice(0, 20)}`,
        );
      }
      assert.equal(built.decode(built.encode(EDGE_CASES[4])), EDGE_CASES[4]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "tokenizer: OPT vocab built from GPT-2 files + fairseq dict (MANIFEST.md §4) gives the HF ids",
  ignore: !HAVE_DATA || !await exists(new URL("tokenizers/gpt2/fairseq-gpt2-dict.txt", DATA)),
  fn: async () => {
    // opt_id = 4 + line index of the GPT-2 id in dict.txt; <s>,<pad>,</s>,<unk> = 0..3.
    const gpt2 = JSON.parse(await Deno.readTextFile(path("tokenizers/gpt2/vocab.json"))) as Record<
      string,
      number
    >;
    const byGptId = new Map(Object.entries(gpt2).map(([t, i]) => [i, t]));
    const vocab: Record<string, number> = { "<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3 };
    const lines = (await Deno.readTextFile(path("tokenizers/gpt2/fairseq-gpt2-dict.txt"))).split(
      "\n",
    );
    lines.forEach((line, k) => {
      const first = line.split(" ")[0];
      if (/^\d+$/.test(first)) vocab[byGptId.get(Number(first))!] = 4 + k;
    });
    const merges = await Deno.readTextFile(path("tokenizers/gpt2/merges.txt"));
    const config = { bos_token: "</s>", eos_token: "</s>", unk_token: "</s>", pad_token: "<pad>" };
    const tok = new Tokenizer(byteLevelBpeJson(vocab, merges, config), config);
    assert.deepEqual(tok.encode("Hello world").ids, [2, 31414, 232]);
    const ref = await loadTokenizer(path("models/hf/opt-tiny"));
    for (const t of EDGE_CASES.slice(1)) same(tok.encode(t).ids, ref.encode(t), t);
  },
});

Deno.test({
  name: "tokenizer: Llama-2 — '<s>' BOS, special tokens in text, decode, config overrides",
  ignore: !HAVE_DATA,
  fn: async () => {
    const tok = await loadTokenizer(path("tokenizers/llama2"));
    assert.deepEqual(Array.from(tok.encode("Hello world")), [1, 15043, 3186]);
    assert.deepEqual([tok.bosId, tok.eosId, tok.vocabSize], [1, 2, 32000]);
    assert.equal(tok.decode(tok.encode("Hello world")), "Hello world");
    assert.equal(
      tok.decode([1, 15043, 3186], { skipSpecialTokens: false }).startsWith("<s>"),
      true,
    );
    const lit = Array.from(tok.encode("a <s> b"));
    assert.ok(lit.filter((id) => id === 1).length === 2, `literal <s> becomes id 1 (HF): ${lit}`);

    // HF rebuilds the Llama post-processor from add_bos_token / add_eos_token.
    const dir = await Deno.makeTempDir();
    try {
      await Deno.copyFile(path("tokenizers/llama2/tokenizer.json"), `${dir}/tokenizer.json`);
      const cfg = JSON.parse(
        await Deno.readTextFile(path("tokenizers/llama2/tokenizer_config.json")),
      );
      await Deno.writeTextFile(
        `${dir}/tokenizer_config.json`,
        JSON.stringify({ ...cfg, add_bos_token: false, add_eos_token: true }),
      );
      const eosTok = await loadTokenizer(dir);
      assert.deepEqual(Array.from(eosTok.encode("Hello world")), [15043, 3186, 2]);
      const long = wikitextJoined().slice(0, 3 * CHUNK_CHARS);
      const ids = eosTok.encode(long);
      assert.ok(eosTok.chunkCuts(long).length > 0, "the long text is chunked");
      assert.equal(ids[ids.length - 1], 2, "EOS only at the very end");
      assert.equal(ids.filter((x) => x === 2).length, 1);
      assert.notEqual(ids[0], 1);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "tokenizer: chunked encoding of long texts equals whole-string encoding",
  ignore: !HAVE_DATA,
  fn: async () => {
    const wiki = wikitextJoined().slice(0, 48_000);
    const stories = (await Deno.readTextFile(path("tinystories/valid.txt"))).slice(0, 30_000);
    const dirs = [
      "tokenizers/llama2",
      "models/hf/stories260K",
      "models/hf/babyllama-tok105",
      "models/hf/opt-tiny",
    ];
    for (const d of dirs) {
      const tok = await loadTokenizer(path(d));
      const whole = new Tokenizer(
        JSON.parse(await Deno.readTextFile(path(`${d}/tokenizer.json`))),
        JSON.parse(await Deno.readTextFile(path(`${d}/tokenizer_config.json`))),
      );
      for (const [name, text] of [["wikitext", wiki], ["tinystories", stories]]) {
        assert.ok(tok.chunkCuts(text).length >= 3, `${d} ${name}: chunking is exercised`);
        same(tok.encode(text), whole.encode(text).ids, `${d} ${name}`);
        same(
          tok.encode(text, { addSpecialTokens: false }),
          whole.encode(text, { add_special_tokens: false }).ids,
          `${d} ${name} without special tokens`,
        );
      }
    }
  },
});

Deno.test({
  name: "tokenizer: a Metaspace-style Llama tokenizer.json is chunked correctly too",
  ignore: !HAVE_DATA,
  fn: async () => {
    const json = JSON.parse(await Deno.readTextFile(path("tokenizers/llama2/tokenizer.json")));
    json.normalizer = null;
    json.pre_tokenizer = {
      type: "Metaspace",
      replacement: "▁",
      prepend_scheme: "first",
      split: false,
    };
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(json));
      await Deno.copyFile(
        path("tokenizers/llama2/tokenizer_config.json"),
        `${dir}/tokenizer_config.json`,
      );
      const tok = await loadTokenizer(dir);
      const legacy = await loadTokenizer(path("tokenizers/llama2"));
      const whole = new Tokenizer(json, {});
      const text = wikitextJoined().slice(0, 20_000);
      assert.ok(tok.chunkCuts(text).length >= 3, "chunking is exercised");
      same(tok.encode(text), whole.encode(text).ids, "Metaspace chunked vs whole");
      same(tok.encode(text), legacy.encode(text), "Metaspace vs Prepend+Replace pipeline");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "tokenizer: whole WikiText-2 test reproduces MANIFEST.md counts and first ids",
  ignore: !HAVE_DATA || !await exists(new URL("models/hf/babyllama-tok105/tokenizer.json", DATA)),
  fn: async () => {
    const text = wikitextJoined();
    assert.equal(text.length, 1_294_336);
    const expect: [string, number, number[]][] = [
      ["models/hf/stories260K", 815_070, [1, 410, 13, 13, 410, 64, 410, 461, 414, 430, 285, 413]],
      ["models/hf/babyllama-tok105", 1_285_540, [1, 3, 0, 3, 0, 3, 54, 7, 23, 4, 13, 6]],
      ["tokenizers/llama2", 341_469, [1]],
    ];
    for (const [d, count, first] of expect) {
      const ids = (await loadTokenizer(path(d))).encode(text);
      assert.equal(ids.length, count, `${d}: token count`);
      assert.deepEqual(Array.from(ids.slice(0, first.length)), first, `${d}: first ids`);
    }
    const tiny = (await loadTokenizer(path("models/hf/stories260K"))).encode(
      "Once upon a time, there was a little",
    );
    assert.deepEqual(Array.from(tiny), [1, 403, 407, 261, 378, 432, 383, 286, 261, 376]);
  },
});

Deno.test("tokenizer: hand-made byte-level BPE folder, chat template, errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // bytes of "ab c" in the GPT-2 byte alphabet: a b Ġ c; merges a+b and Ġ+c
    const vocab = { "<s>": 0, "</s>": 1, a: 2, b: 3, "Ġ": 4, c: 5, ab: 6, "Ġc": 7 };
    await Deno.writeTextFile(`${dir}/vocab.json`, JSON.stringify(vocab));
    await Deno.writeTextFile(`${dir}/merges.txt`, "#version: 0.2\na b\nĠ c\n");
    await Deno.writeTextFile(
      `${dir}/tokenizer_config.json`,
      JSON.stringify({
        bos_token: { content: "<s>", __type: "AddedToken" },
        eos_token: "</s>",
        chat_template: [{ name: "default", template: "{{ messages }}" }, {
          name: "tool_use",
          template: "x",
        }],
      }),
    );
    const tok = await loadTokenizer(dir);
    assert.deepEqual(Array.from(tok.encode("ab c")), [0, 6, 7]);
    assert.deepEqual(Array.from(tok.encode("ab c</s>", { addSpecialTokens: false })), [6, 7, 1]);
    assert.equal(tok.decode([0, 6, 7, 1]), "ab c");
    assert.equal(tok.chatTemplate, "{{ messages }}");

    await Deno.writeTextFile(
      `${dir}/tokenizer_config.json`,
      JSON.stringify({ bos_token: "<s>", add_bos_token: false }),
    );
    assert.deepEqual(Array.from((await loadTokenizer(dir)).encode("ab c")), [6, 7]);
    assert.equal((await loadTokenizer(dir)).chatTemplate, null);

    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify({ bos_token: "<zz>" }));
    await assert.rejects(() => loadTokenizer(dir), /special token <zz> is not in vocab\.json/);

    await Deno.remove(`${dir}/vocab.json`);
    await assert.rejects(() => loadTokenizer(dir), (e: unknown) => {
      assert.ok(e instanceof TokenizerError);
      assert.match(e.message, /no tokenizer\.json, and no vocab\.json \+ merges\.txt/);
      return true;
    });
    await Deno.writeFile(`${dir}/tokenizer.model`, new Uint8Array(4));
    await assert.rejects(() => loadTokenizer(dir), /save_pretrained/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
