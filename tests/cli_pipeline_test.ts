/**
 * The command line on the real model and pruning layers with a tiny random OPT: perplexity of a
 * model with uniform logits, a real run's folder, and resume after SIGKILL of the real pipeline.
 */
import assert from "node:assert/strict";
import { fromWeights, loadModel } from "../model/load.ts";
import { sparsityStats } from "../pruner/mod.ts";
import { perplexity } from "../eval/perplexity.ts";
import { makeTinyModelDir, randomWeights, tinyOptConfig, weightSource } from "./_tiny_models.ts";

/** Perplexity of a tiny real OPT whose tied head (the token embedding) is zero: all logits are 0. */
async function uniformPerplexity(vocab: number): Promise<number> {
  const config = tinyOptConfig({ vocab_size: vocab });
  const weights = randomWeights(config, 3);
  weights.get("model.decoder.embed_tokens.weight")!.data.fill(0);
  const model = await fromWeights(config, weightSource(weights));
  try {
    const ids = Int32Array.from({ length: 2 * 16 + 5 }, (_, i) => (i * 7) % vocab);
    const r = await perplexity(model, ids, { seqlen: 16 });
    assert.equal(r.windows, 2);
    return r.ppl;
  } finally {
    model.dispose();
  }
}

Deno.test("perplexity() of a real OPT with uniform logits equals the vocabulary size (40)", async () => {
  const ppl = await uniformPerplexity(40);
  assert.ok(Math.abs(ppl - 40) <= 1e-5 * 40, `ppl ${ppl}`);
});

Deno.test("perplexity() of a real OPT-shaped head (50272 columns) with uniform logits is 50272", async () => {
  const ppl = await uniformPerplexity(50272);
  // On lavapipe, one shader invocation runs at most ~65535 loop iterations in total (llvmpipe's
  // loop limiter) and then silently leaves its loops: a one-lane-per-row cross-entropy over
  // 50272 columns (max pass, then sum pass) sums only 65535 − 50272 terms → ppl ≈ 15262.
  assert.ok(
    Math.abs(ppl - 50272) <= 1e-5 * 50272,
    `ppl ${ppl}, expected 50272 (ALGORITHM.md §12 R10)`,
  );
});

const script = new URL("../examples/surgeon.ts", import.meta.url).pathname;

async function runChild(
  args: string[],
  killWhen: RegExp | null,
): Promise<{ killed: boolean; code: number; out: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let killed = false, out = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
    if (!killed && killWhen && out.split("\n").some((l) => killWhen.test(l))) {
      killed = true;
      child.kill("SIGKILL");
    }
  }
  return { killed, code: (await child.status).code, out: out + await stderr };
}

const metricsOf = (root: string) => {
  const [name] = [...Deno.readDirSync(root)].map((e) => e.name);
  return Deno.readTextFileSync(`${root}/${name}/metrics.jsonl`).trim().split("\n").map((l) => {
    const { shot, target_sparsity, sparsity, sparsity_per_kind, ppl, threshold } = JSON.parse(l);
    return { shot, target_sparsity, sparsity, sparsity_per_kind, ppl, threshold };
  });
};

Deno.test("the real pipeline killed mid-shot and mid-evaluation resumes to the uninterrupted result", async () => {
  const root = await Deno.makeTempDir({ prefix: "cli_pipeline_" });
  try {
    await makeTinyModelDir(`${root}/model`, "opt", 5);
    await Deno.mkdir(`${root}/data/wikitext-2-raw`, { recursive: true });
    const text = (o: number) =>
      Array.from(
        { length: 30 },
        (
          _,
          i,
        ) => (i % 5 === 4 ? " \n" : ` the cat ${["sat", "ran", "hid"][(i + o) % 3]} on a mat \n`),
      ).join("");
    await Deno.writeTextFile(`${root}/data/wikitext-2-raw/wiki.valid.raw`, text(0));
    await Deno.writeTextFile(`${root}/data/wikitext-2-raw/wiki.test.raw`, text(1));
    const args = (logRoot: string) => [
      "--model_str",
      `${root}/model`,
      "--data_dir",
      `${root}/data`,
      "--train_split",
      "valid",
      "--structures",
      "row",
      "column",
      "--use_iad",
      "--sparsity",
      "0.3",
      "--shots",
      "3",
      "--nsamples",
      "2",
      "--seqlen",
      "16",
      "--eval_samples",
      "2",
      "--log_root",
      logRoot,
    ];
    const full = await runChild([...args(`${root}/full`), "--save_model"], null);
    assert.equal(full.code, 0, full.out);
    const expected = metricsOf(`${root}/full`);
    // --save_model: the pruned model loads back with the sparsity the run reported
    const [fullName] = [...Deno.readDirSync(`${root}/full`)].map((e) => e.name);
    const saved = await loadModel(`${root}/full/${fullName}/model`);
    try {
      const summary = JSON.parse(Deno.readTextFileSync(`${root}/full/${fullName}/summary.json`));
      assert.equal((await sparsityStats(saved)).overall, summary.sparsity);
    } finally {
      saved.dispose();
    }
    assert.deepEqual(expected.map((m) => m.shot), [0, 1, 2, 3]);
    assert.ok(
      expected[3].sparsity > 0.2 && expected[3].sparsity <= 0.3,
      `achieved ${expected[3].sparsity}`,
    );

    const logRoot = `${root}/killed`;
    // after shot 2 was pruned but before its evaluation and checkpoint were committed
    const a = await runChild(args(logRoot), /^shot 2\/3: target/);
    assert.ok(a.killed, a.out);
    const b = await runChild([...args(logRoot), "--resume"], /^eval wikitext2 \(shot 3\)/);
    assert.ok(b.killed, b.out);
    assert.match(b.out, /resuming after shot 1/);
    const c = await runChild([...args(logRoot), "--resume"], null);
    assert.equal(c.code, 0, c.out);
    assert.match(c.out, /resuming after shot 2/);
    assert.deepEqual(metricsOf(logRoot), expected);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
