/** Dataset loaders against small files the test writes (raw, JSON lines, gzip, parquet, text). */
import assert from "node:assert/strict";
import {
  canonicalSplit,
  DatasetError,
  datasetName,
  type HubFileFetcher,
  loadSplit,
  testStream,
  trainStream,
  wikitextRows,
} from "../eval/datasets.ts";
import { writeStringParquet } from "./_eval_parquet_writer.ts";
import { CharTokenizer } from "./_eval_fakes.ts";

const WIKI_RAW = " \n = Robert = \n \n Robert is an actor . \n\n = = Career = = \n";
const WIKI_ROWS = ["", " = Robert = \n", "", " Robert is an actor . \n", "", " = = Career = = \n"];

async function gz(text: string): Promise<Uint8Array> {
  const s = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(s).arrayBuffer());
}

async function makeDataDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "eval_datasets_" });
  await Deno.mkdir(`${dir}/wikitext-2-raw`);
  await Deno.writeTextFile(`${dir}/wikitext-2-raw/wiki.test.raw`, WIKI_RAW);
  await Deno.writeTextFile(`${dir}/wikitext-2-raw/wiki.valid.raw`, " \n = V = \n");
  await Deno.mkdir(`${dir}/c4`);
  await Deno.writeTextFile(
    `${dir}/c4/c4-train.00000-of-01024.jsonl`,
    '{"text":"first doc","url":"u"}\n{"text":"second\\ndoc"}\n',
  );
  await Deno.writeFile(
    `${dir}/c4/c4-train.00001-of-01024.json.gz`,
    await gz('{"text":"third doc"}\n{"text":"fourth"}'),
  );
  await Deno.writeFile(
    `${dir}/c4/c4-validation.00000-of-00008.json.gz`,
    await gz('{"text":"val doc"}\n'),
  );
  await Deno.mkdir(`${dir}/ptb`);
  await Deno.writeTextFile(
    `${dir}/ptb/ptb.test.txt`,
    " no it was n't black monday \n but while the \n",
  );
  await Deno.mkdir(`${dir}/tinystories`);
  await Deno.writeTextFile(
    `${dir}/tinystories/valid.txt`,
    "Once upon a time.\n<|endoftext|>\n  Lily ran.  \n<|endoftext|>\n\n<|endoftext|>",
  );
  return dir;
}

Deno.test("wikitextRows() keeps each line's newline and maps blank lines to empty rows", () => {
  assert.deepEqual(wikitextRows(WIKI_RAW), WIKI_ROWS);
  assert.deepEqual(wikitextRows("a\nb"), ["a\n", "b"]);
  assert.deepEqual(wikitextRows(""), []);
});

Deno.test("loadSplit() reads every local layout, and the streams join rows as the protocol says", async () => {
  const dataDir = await makeDataDir();
  try {
    const tok = new CharTokenizer();
    const wiki = await loadSplit("wikitext2", "test", { dataDir });
    assert.deepEqual(wiki.rows, WIKI_ROWS);
    assert.deepEqual(testStream(wiki, tok, 4), tok.encode(WIKI_ROWS.join("\n\n")));
    assert.deepEqual(trainStream(wiki, tok), tok.encode(WIKI_ROWS.join(" ")));

    const c4 = await loadSplit("c4", "train", { dataDir });
    assert.deepEqual(c4.rows, ["first doc", "second\ndoc", "third doc", "fourth"]);
    const c4v = await loadSplit("c4", "validation", { dataDir });
    assert.deepEqual(c4v.rows, ["val doc"]);
    assert.deepEqual(testStream(c4v, tok, 2), tok.encode("val doc").subarray(0, 8), "C4 test");

    const ptb = await loadSplit("ptb", "test", { dataDir });
    assert.deepEqual(ptb.rows, ["no it was n't black monday", "but while the"]);
    assert.deepEqual(
      testStream(ptb, tok, 4),
      tok.encode("no it was n't black monday but while the"),
    );

    const ts = await loadSplit("tinystories", "valid", { dataDir });
    assert.deepEqual(ts.rows, ["Once upon a time.", "Lily ran."]);
    const stream = testStream(ts, tok, 4);
    assert.deepEqual(
      stream,
      Int32Array.from([...tok.encode("Once upon a time."), ...tok.encode("Lily ran.")]),
    );
    assert.equal(stream.filter((t) => t === tok.bosId).length, 2, "one BOS per story");
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("loadSplit() names the missing file and never substitutes another split", async () => {
  const dataDir = await makeDataDir();
  try {
    await assert.rejects(() => loadSplit("wikitext2", "train", { dataDir }), (e: Error) => {
      assert.ok(e instanceof DatasetError);
      assert.ok(e.message.includes(`${dataDir}/wikitext-2-raw/wiki.train.raw`), e.message);
      assert.match(e.message, /--train_split valid/);
      return true;
    });
    await assert.rejects(() => loadSplit("ptb", "train", { dataDir }), /ptb\.train\.txt not found/);
    await assert.rejects(() => loadSplit("tinystories", "test", { dataDir }), /no "test" split/);
    await Deno.remove(`${dataDir}/c4/c4-validation.00000-of-00008.json.gz`);
    await assert.rejects(
      () => loadSplit("c4", "valid", { dataDir }),
      /no file in .*c4 matches \*validation\*/,
    );
    await Deno.writeTextFile(`${dataDir}/c4/c4-validation.bad.jsonl`, '{"text":"ok"}\n{oops\n');
    await assert.rejects(
      () => loadSplit("c4", "valid", { dataDir }),
      /c4-validation\.bad\.jsonl: line 2 is not valid JSON/,
    );
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
  assert.throws(() => datasetName("de"), /unknown dataset "de"/);
  assert.throws(() => canonicalSplit("dev"), /unknown split "dev"/);
  assert.equal(canonicalSplit("valid"), "validation");
});

Deno.test("loadSplit() reads the Hub's parquet files through the Hub fetcher, identical to the local .raw", async () => {
  const dir = await Deno.makeTempDir({ prefix: "eval_parquet_" });
  try {
    const asked: string[] = [];
    const fetchFile: HubFileFetcher = async (repo, filename, opts) => {
      asked.push(`${opts.repoType}:${repo}/${filename}@${opts.revision ?? "main"}`);
      const path = `${dir}/${filename.replaceAll("/", "_")}`;
      const rows = filename.includes("penn") ? [" a b ", "c"] : WIKI_ROWS;
      const column = filename.includes("penn") ? "sentence" : "text";
      await Deno.writeFile(
        path,
        await writeStringParquet(column, rows, filename.includes("test") ? "gzip" : "none"),
      );
      return path;
    };
    const hub = await loadSplit("wikitext2", "test", { fetchFile });
    assert.deepEqual(hub.rows, WIKI_ROWS);
    assert.deepEqual(
      hub.rows,
      wikitextRows(WIKI_RAW),
      "Hub rows equal rows read from the .raw file",
    );
    await loadSplit("wikitext2", "validation", { fetchFile });
    const ptb = await loadSplit("ptb", "train", { fetchFile });
    assert.deepEqual(ptb.rows, [" a b ", "c"]);
    assert.deepEqual(asked, [
      "dataset:Salesforce/wikitext/wikitext-2-raw-v1/test-00000-of-00001.parquet@main",
      "dataset:Salesforce/wikitext/wikitext-2-raw-v1/validation-00000-of-00001.parquet@main",
      "dataset:ptb-text-only/ptb_text_only/penn_treebank/train/0000.parquet@refs/convert/parquet",
    ]);
    const offline: HubFileFetcher = () => Promise.reject(new Error("offline and not in the cache"));
    await assert.rejects(
      () => loadSplit("c4", "validation", { fetchFile: offline }),
      (e: Error) => {
        assert.match(e.message, /allenai\/c4\/en\/c4-validation\.00000-of-00008\.json\.gz/);
        assert.match(e.message, /--data_dir/);
        return true;
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("local WikiText-2 in ../shared/data yields the Hub's 4358 test rows (skipped without the data)", async () => {
  const dataDir = new URL("../../shared/data/", import.meta.url).pathname;
  try {
    await Deno.stat(`${dataDir}wikitext-2-raw/wiki.test.raw`);
  } catch {
    return;
  }
  const wiki = await loadSplit("wikitext2", "test", { dataDir });
  assert.equal(wiki.rows.length, 4358);
  assert.equal(wiki.rows.join("\n\n").length, 1294336);
});
