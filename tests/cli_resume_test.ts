/**
 * Resume after a real kill: the command line runs as a child process, is killed with SIGKILL at
 * several points (during the dense evaluation, in the middle of a shot, shortly after a commit),
 * resumed each time with --resume, and must end with exactly the metrics of an uninterrupted run.
 */
import assert from "node:assert/strict";
import type { MetricsLine } from "../eval/run.ts";
import { makeFixtures } from "./_eval_fakes.ts";

const script = new URL("./_cli_fake_surgeon.ts", import.meta.url).pathname;
const config = new URL("../deno.json", import.meta.url).pathname;

/** Runs the child; when `killWhen` matches an output line, waits `afterMs` and SIGKILLs it. */
async function runChild(
  args: string[],
  killWhen: RegExp | null,
  afterMs = 0,
): Promise<{ killed: boolean; code: number; out: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", config, script, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { FAKE_DELAY_MS: "60" },
  }).spawn();
  let killed = false, out = "";
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
    buf += value;
    const lines = buf.split("\n");
    buf = lines.pop()!;
    if (!killed && killWhen && lines.some((l) => killWhen.test(l))) {
      killed = true;
      if (afterMs) await new Promise((r) => setTimeout(r, afterMs));
      child.kill("SIGKILL");
    }
  }
  const status = await child.status;
  out += await stderr;
  return { killed, code: status.code, out };
}

const comparable = (dir: string) =>
  Deno.readTextFileSync(`${dir}/metrics.jsonl`).trim().split("\n").map((l) => {
    const { shot, phase, target_sparsity, sparsity, sparsity_per_kind, ppl, threshold } = JSON
      .parse(l) as MetricsLine;
    return { shot, phase, target_sparsity, sparsity, sparsity_per_kind, ppl, threshold };
  });

const runDir = (root: string) => {
  const names = [...Deno.readDirSync(root)].map((e) => e.name);
  assert.equal(names.length, 1, `one run folder in ${root}`);
  return `${root}/${names[0]}`;
};

Deno.test("a run killed with SIGKILL at several points and resumed ends exactly like an uninterrupted run", async () => {
  const root = await Deno.makeTempDir({ prefix: "cli_resume_" });
  try {
    const f = await makeFixtures(root);
    const base = (logRoot: string) => [
      ...[
        "--model_str",
        f.model,
        "--data_dir",
        f.data,
        "--train_split",
        "valid",
        "--log_root",
        logRoot,
      ],
      ..."--curvature identity --obd --structures element --sparsity 0.5 --shots 5 --nsamples 4 --seqlen 24 --eval_samples 2"
        .split(" "),
    ];
    const full = await runChild(base(`${root}/full`), null);
    assert.equal(full.code, 0, full.out);
    const expected = comparable(runDir(`${root}/full`));
    assert.equal(expected.length, 6);

    const logRoot = `${root}/killed`;
    const kills: [string[], RegExp, number][] = [
      [base(logRoot), /^eval wikitext2 \(shot 0\): 1\/2/, 0], // during the dense evaluation
      [[...base(logRoot), "--resume"], /calibration pass shot 2/, 30], // in the middle of shot 2
      [[...base(logRoot), "--resume"], /\| shot 3:/, 100], // soon after shot 3 was committed
      [[...base(logRoot), "--resume"], /^eval wikitext2 \(shot 4\)/, 0], // evaluating shot 4
    ];
    for (const [args, when, after] of kills) {
      const r = await runChild(args, when, after);
      assert.ok(r.killed, `the child reached ${when} and was killed:\n${r.out}`);
      assert.notEqual(r.code, 0);
      const dir = runDir(logRoot);
      for (const e of Deno.readDirSync(dir)) {
        // whatever the moment, the folder parses: complete JSON files only
        if (e.name.endsWith(".json")) JSON.parse(Deno.readTextFileSync(`${dir}/${e.name}`));
      }
    }
    const last = await runChild([...base(logRoot), "--resume"], null);
    assert.equal(last.code, 0, last.out);
    assert.match(last.out, /resuming after shot [34]/);
    const dir = runDir(logRoot);
    assert.deepEqual(comparable(dir), expected);
    const sa = JSON.parse(Deno.readTextFileSync(`${dir}/summary.json`));
    const sb = JSON.parse(Deno.readTextFileSync(`${runDir(`${root}/full`)}/summary.json`));
    assert.deepEqual([sa.final_ppl, sa.sparsity, sa.kept_per_module], [
      sb.final_ppl,
      sb.sparsity,
      sb.kept_per_module,
    ]);
    assert.equal([...Deno.readDirSync(dir)].filter((e) => e.name.includes(".tmp-")).length, 0);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
