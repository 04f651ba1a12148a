/** Run folders end to end with a fake model and schedule: contents, formats, atomicity, resume rules. */
import assert from "node:assert/strict";
import { parseFlags } from "../examples/cli_flags.ts";
import { runSurgeon } from "../examples/surgeon.ts";
import { type MetricsLine, RunFolder, runName, writeTextAtomic } from "../eval/run.ts";
import { fakeDeps, makeFixtures } from "./_eval_fakes.ts";

const args = (f: { model: string; data: string }, root: string) => [
  ...["--model_str", f.model, "--data_dir", f.data, "--log_root", `${root}/runs`],
  ..."--train_split valid --curvature identity --obd --structures element --sparsity 0.6 --shots 3 --nsamples 4 --seqlen 24 --eval_samples 3"
    .split(" "),
];

Deno.test("runSurgeon() writes config.json, metrics.jsonl, summary.json, report.md and plots, atomically", async () => {
  const root = await Deno.makeTempDir({ prefix: "eval_run_" });
  try {
    const f = await makeFixtures(root);
    const lines: string[] = [];
    const { dir, summary } = await runSurgeon(parseFlags(args(f, root)), {
      deps: fakeDeps(),
      log: (m) => lines.push(m),
    });
    const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(files, [
      "checkpoint-shot3.safetensors",
      "config.json",
      "kept.svg",
      "metrics.jsonl",
      "perplexity.svg",
      "report.md",
      "state.json",
      "summary.json",
    ]);
    const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    assert.equal(config.resolved.sparsity, 0.6);
    assert.equal(config.resolved.seqlen, 24);
    assert.equal(config.settings.structures.join(" "), "element");
    assert.equal(config.deno.deno, Deno.version.deno);
    assert.equal(config.adapter, "fake adapter");
    assert.equal(typeof config.toolkit_version, "string");

    const metrics: MetricsLine[] = (await Deno.readTextFile(`${dir}/metrics.jsonl`)).trim().split(
      "\n",
    ).map((l) => JSON.parse(l));
    assert.deepEqual(metrics.map((m) => m.shot), [0, 1, 2, 3]);
    assert.deepEqual(
      metrics.map((m) => m.target_sparsity),
      [0, 0.2, 0.4, 0.6].map((s, i) => i ? 0.6 * i / 3 : s),
    );
    for (const m of metrics) {
      assert.ok(m.ppl.wikitext2 > 1 && Number.isFinite(m.ppl.wikitext2));
      assert.ok(m.seconds.eval >= 0);
      assert.deepEqual(Object.keys(m.sparsity_per_kind).sort(), ["fc1", "fc2"]);
    }
    // achieved sparsity within one weight of the target (the fake prunes ⌊k·s/S·N⌋ of 96 weights)
    for (const m of metrics) {
      assert.ok(Math.abs(m.sparsity - m.target_sparsity) <= 1 / 96 + 1e-12, `shot ${m.shot}`);
    }
    assert.equal(metrics[1].threshold !== undefined, true, "pruner report numbers are kept");
    assert.equal(metrics[1].seconds.curvature, 0.01);

    assert.deepEqual(summary.dense_ppl, metrics[0].ppl);
    assert.deepEqual(summary.final_ppl, metrics[3].ppl);
    const onDisk = JSON.parse(await Deno.readTextFile(`${dir}/summary.json`));
    assert.deepEqual(
      Object.keys(onDisk).filter((k) =>
        ["dense_ppl", "final_ppl", "sparsity", "shots", "seconds"].includes(k)
      ).sort(),
      [
        "dense_ppl",
        "final_ppl",
        "seconds",
        "shots",
        "sparsity",
      ],
    );
    assert.equal(onDisk.shots, 3);

    const report = await Deno.readTextFile(`${dir}/report.md`);
    assert.match(report, /!\[Perplexity per shot\]\(perplexity\.svg\)/);
    assert.match(report, /\| 3 \| shot \| 60\.00% \|/);
    for (const svg of ["perplexity.svg", "kept.svg"]) {
      const text = await Deno.readTextFile(`${dir}/${svg}`);
      assert.ok(text.startsWith("<svg") && text.trimEnd().endsWith("</svg>"), svg);
    }
    const ppl = await Deno.readTextFile(`${dir}/perplexity.svg`);
    assert.equal((ppl.match(/<circle/g) ?? []).length, 4, "one marker per evaluation");
    const kept = await Deno.readTextFile(`${dir}/kept.svg`);
    assert.equal((kept.match(/% kept<\/title>/g) ?? []).length, 4, "one cell per module");

    assert.ok(
      lines.some((l) => /^eval wikitext2 \(shot 2\): 3\/3 windows.*elapsed/.test(l)),
      "evaluation progress",
    );
    assert.ok(
      lines.some((l) => /^shots: 3\/3 shots.*elapsed, done \| shot 3/.test(l)),
      "shot progress",
    );
    assert.ok(lines.some((l) => /calibration pass shot 1/.test(l)), "calibration progress");

    // the same settings again: refused without --resume, "already complete" with it
    await assert.rejects(
      () => runSurgeon(parseFlags(args(f, root)), { deps: fakeDeps(), log: () => {} }),
      /already exists: pass --resume/,
    );
    const again = await runSurgeon(parseFlags([...args(f, root), "--resume"]), {
      deps: fakeDeps(),
      log: () => {},
    });
    assert.deepEqual(again.summary.final_ppl, summary.final_ppl);
    // other settings: another folder; --resume of settings never run: an error
    await assert.rejects(
      () =>
        runSurgeon(parseFlags([...args(f, root), "--seed", "5", "--resume"]), {
          deps: fakeDeps(),
          log: () => {},
        }),
      /--resume: no run folder/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("runName() is stable for equal settings and differs for different ones", () => {
  const s = {
    model_str: "facebook/opt-125m",
    structures: ["2:4"],
    curvature: "kfac",
    obd: false,
    sparsity: 0.5,
    shots: 5,
    nsamples: 128,
    seed: 100,
  };
  assert.equal(runName(s), runName({ ...s }));
  assert.equal(
    runName(s),
    runName(Object.fromEntries(Object.entries(s).reverse())),
    "key order does not matter",
  );
  assert.match(runName(s), /^opt-125m_2of4_kfac-obs_s0\.5_x5_n128_seed100_[0-9a-f]{8}$/);
  assert.notEqual(runName(s), runName({ ...s, damp_g: 0.1 }));
});

Deno.test("RunFolder drops uncommitted metrics and stray files on resume", async () => {
  const root = await Deno.makeTempDir({ prefix: "eval_runfolder_" });
  try {
    const run = await RunFolder.open(root, "r", { resume: false });
    const line = (shot: number) =>
      ({
        shot,
        phase: "shot",
        target_sparsity: 0,
        sparsity: 0,
        sparsity_per_kind: {},
        ppl: { w: shot },
        seconds: {},
        time: "",
      }) as MetricsLine;
    await run.commitShot(0, [line(0)], null);
    await run.commitShot(1, [line(1)], null);
    // a kill after metrics.jsonl was rewritten for shot 2 but before state.json committed it
    await writeTextAtomic(
      `${root}/r/metrics.jsonl`,
      [0, 1, 2].map((s) => JSON.stringify(line(s)) + "\n").join(""),
    );
    await Deno.writeTextFile(`${root}/r/checkpoint-shot2.safetensors.tmp-1-abc`, "half");
    await Deno.writeTextFile(`${root}/r/checkpoint-shot2.safetensors`, "uncommitted");
    const again = await RunFolder.open(root, "r", { resume: true });
    assert.equal(again.state.completedShot, 1);
    assert.deepEqual(again.metrics.map((m) => m.shot), [0, 1]);
    assert.deepEqual([...Deno.readDirSync(`${root}/r`)].map((e) => e.name).sort(), [
      "metrics.jsonl",
      "state.json",
    ]);
    assert.equal((await Deno.readTextFile(`${root}/r/metrics.jsonl`)).trim().split("\n").length, 2);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("RunFolder.open() restarts a folder that never committed anything, refuses one that did", async () => {
  const root = await Deno.makeTempDir({ prefix: "eval_runfolder_" });
  try {
    const first = await RunFolder.open(root, "r", { resume: false });
    await first.writeJson("config.json", { a: 1 }); // then the run died (e.g. no network)
    const again = await RunFolder.open(root, "r", { resume: false });
    assert.deepEqual([...Deno.readDirSync(again.dir)], []);
    await again.commitShot(0, [], null);
    await assert.rejects(
      () => RunFolder.open(root, "r", { resume: false }),
      /already exists: pass --resume/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
