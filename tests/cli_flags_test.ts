/** Flag parsing and validation of the command line (ALGORITHM.md §11.1). */
import assert from "node:assert/strict";
import {
  checkModelFolder,
  FlagError,
  FLAGS,
  helpText,
  parseFlags,
  scheduleOptions,
  structureOf,
  validateConfig,
} from "../examples/cli_flags.ts";
import { main } from "../examples/surgeon.ts";

const REFERENCE_FLAGS = [
  "model_str",
  "seed",
  "eval_langs",
  "train_lang",
  "sparsity",
  "structures",
  "curvature",
  "shots",
  "obd",
  "use_iad",
  "kpca_iter",
  "krank",
  "nsamples",
  "fisher_samples",
  "max_outgrad",
  "diagonal",
  "use_diagonal",
  "damp_g",
  "damp_a",
  "max_correlate",
  "addupdate",
  "strictmax",
  "update_scale",
  "schedule",
  "newdata",
  "reuse",
  "skip",
  "eigenfix",
  "rank1cost",
  "zerofix8",
  "double",
  "lora",
  "lora_lr",
  "lora_subset",
  "lora_epochs",
  "log_lora",
  "batch_size",
  "lr",
  "epochs",
  "save_curvature",
  "buffer_dev",
  "curvature_dev",
  "lowmem",
  "save_model",
  "log_root",
];

/** Splits a command line written as one string. */
const words = (line: string) => line.split(" ");

/** Asserts that validating `argv` fails with a FlagError naming `flag` and matching `re`. */
function rejects(argv: string[], flag: string, re: RegExp): void {
  assert.throws(() => validateConfig(parseFlags(argv)), (e: Error) => {
    assert.ok(e instanceof FlagError, `${argv.join(" ")}: ${e}`);
    assert.equal(e.flag, flag, `${argv.join(" ")}: ${e.message}`);
    assert.match(e.message, re);
    return true;
  });
}

Deno.test("parseFlags() has every reference flag with the reference defaults", () => {
  const names = FLAGS.map((f) => f.name);
  for (
    const f of [
      ...REFERENCE_FLAGS,
      "data_dir",
      "train_split",
      "seqlen",
      "eval_samples",
      "resume",
      "help",
    ]
  ) {
    assert.ok(names.includes(f), `missing --${f}`);
  }
  const cfg = parseFlags([]);
  assert.equal(cfg.model_str, "facebook/opt-125m");
  assert.equal(cfg.seed, 100);
  assert.deepEqual(cfg.eval_langs, ["wikitext2"]);
  assert.deepEqual(cfg.structures, ["row", "column"]);
  assert.equal(cfg.curvature, "kfac");
  assert.equal(cfg.sparsity, 0.5);
  assert.equal(cfg.shots, 40);
  assert.equal(cfg.kpca_iter, 1);
  assert.equal(cfg.nsamples, 128);
  assert.equal(cfg.damp_g, 0.01);
  assert.equal(cfg.lora_lr, 1e-4);
  assert.equal(cfg.seqlen, null);
  assert.equal(cfg.log_root, "runs");
  assert.equal(
    parseFlags([], (n) => (n === "LOG_ROOT" ? "/tmp/logs" : undefined)).log_root,
    "/tmp/logs",
  );
});

Deno.test("parseFlags() takes reference names, kebab-case aliases, argparse lists and negative numbers", () => {
  const a = parseFlags(
    words(
      "--structures 2:4 --max-correlate -1 --eval_langs wikitext2 c4 --use-iad --damp_g=0.1 --kpca-iter 10 --train-split valid --eval-samples 16",
    ),
  );
  assert.deepEqual(a.structures, ["2:4"]);
  assert.equal(a.max_correlate, -1);
  assert.deepEqual(a.eval_langs, ["wikitext2", "c4"]);
  assert.equal(a.use_iad, true);
  assert.equal(a.damp_g, 0.1);
  assert.equal(a.kpca_iter, 10);
  assert.equal(a.train_split, "valid");
  assert.equal(a.eval_samples, 16);
  assert.deepEqual(parseFlags(["--structures", "column", "row", "--obd"]).structures, [
    "column",
    "row",
  ]);
  assert.deepEqual(parseFlags(["--structures=row,column"]).structures, ["row", "column"]);
  validateConfig(a);
});

Deno.test("validateConfig() names the flag for bad values and incompatible combinations", () => {
  rejects(["--bogus"], "--bogus", /unknown flag/);
  rejects(["--sparsity"], "--sparsity", /needs a value/);
  rejects(["--sparsity", "1"], "--sparsity", /must be in \[0, 1\)/);
  rejects(["--sparsity", "-0.1"], "--sparsity", /\[0, 1\)/);
  rejects(["--sparsity", "half"], "--sparsity", /not a number/);
  rejects(["--shots", "2.5"], "--shots", /not an integer/);
  rejects(["--shots", "0"], "--shots", /≥ 1/);
  rejects(["--structures", "row"], "--structures", /rows and columns are always pruned together/);
  rejects(["--structures", "block"], "--structures", /unknown structure "block"/);
  rejects(["--structures", "4:2"], "--structures", /0 < N < M/);
  rejects(["--curvature", "hessian"], "--curvature", /unknown curvature/);
  rejects(["--curvature", "identity"], "--curvature", /add --obd/);
  rejects(["--curvature", "kfac"], "--kpca_iter", /odd.*without --use_iad/);
  rejects(["--use_iad", "--krank", "2", "--kpca_iter", "3"], "--kpca_iter", /odd.*--krank 2/);
  rejects(["--use_iad", "--max_correlate", "-1"], "--max_correlate", /element and N:M/);
  rejects(["--use_iad", "--max_correlate", "-2"], "--max_correlate", /out of range/);
  rejects(["--use_iad", "--eval_langs", "de"], "--eval_langs", /unknown dataset "de"/);
  rejects(["--use_iad", "--train_lang", "wiki"], "--train_lang", /unknown dataset/);
  rejects(["--use_iad", "--train_split", "dev"], "--train_split", /unknown split/);
  rejects(["--use_iad", "--use_diagonal"], "--use_diagonal", /needs --diagonal/);
  rejects(["--use_iad", "--eigenfix"], "--eigenfix", /--krank 2/);
  rejects(["--use_iad", "--double"], "--double", /no f64/);
  rejects(["--use_iad", "--zerofix8"], "--zerofix8", /broken/);
  rejects(["--use_iad", "--batch_size", "4"], "--batch_size", /only 1/);
  rejects(["--use_iad", "--skip", "40"], "--skip", /\[0, shots = 40\)/);
  rejects(["--use_iad", "--lora_subset", "0"], "--lora_subset", /\(0, 1\]/);
  rejects(["--use_iad", "--schedule", "cubic"], "--schedule", /only linear/);
  rejects(["--use_iad", "--curvature_groups", "0"], "--curvature_groups", /positive number/);
  rejects(
    ["--kpca_iter", "2", "--reuse", "--curvature_groups", "2"],
    "--reuse",
    /cannot be combined with --curvature_groups/,
  );
  rejects(["--use_iad", "--seqlen", "1"], "--seqlen", /≥ 2/);
  rejects(["--use_iad", "--eval_samples", "0"], "--eval_samples", /≥ 1/);
  assert.throws(() => parseFlags(["stray"]), /unexpected argument "stray"/);
  // the published scripts' settings all validate
  for (
    const argv of [
      words("--structures row column --curvature identity --obd --use_iad --shots 1"),
      words("--curvature activations --obd --use_iad --sparsity 0.3 --shots 24"),
      words("--curvature kfac --obd --use_iad --krank 1 --kpca_iter 10"),
      words("--structures 2:4 --use_iad --max_correlate 2000 --addupdate --damp_g 0.1 --shots 5"),
      words("--structures element --use_iad --max_correlate 2000 --addupdate --damp_g 0.1"),
      ["--curvature", "kfac", "--kpca_iter", "10"],
    ]
  ) validateConfig(parseFlags(argv));
});

Deno.test("structureOf() and scheduleOptions() map flags to the pruner's options in one place", () => {
  assert.deepEqual(structureOf(["column", "row"]), { kind: "rowcol" });
  assert.deepEqual(structureOf(["element"]), { kind: "element" });
  assert.deepEqual(structureOf(["4:8"]), { kind: "nm", n: 4, m: 8 });
  const o = scheduleOptions(
    parseFlags(
      words(
        "--structures 2:4 --use_iad --max_correlate 2000 --addupdate --damp_g 0.1 --shots 5 --lora --seed 3",
      ),
    ),
  );
  assert.deepEqual(o.structure, { n: 2, m: 4 });
  assert.equal(o.kind, "kfac");
  assert.equal(o.useIad, true);
  assert.equal(o.maxCorrelate, 2000);
  assert.equal(o.addupdate, true);
  assert.equal(o.dampG, 0.1);
  assert.equal(o.dampA, 0.01);
  assert.equal(o.shots, 5);
  assert.equal(o.seed, 3);
  assert.deepEqual(o.lora, { lr: 1e-4, subset: 0.025, epochs: 5 });
  assert.equal(scheduleOptions(parseFlags([])).lora, null);
  assert.equal(scheduleOptions(parseFlags([])).structure, "rowcol");
});

Deno.test("checkModelFolder() refuses folders without config or weights, accepts Hub ids", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cli_model_" });
  try {
    await checkModelFolder("facebook/opt-125m");
    await assert.rejects(() => checkModelFolder(`${dir}/nope`), /neither a folder nor a Hub id/);
    await assert.rejects(() => checkModelFolder(dir), /has no config.json/);
    await Deno.writeTextFile(`${dir}/config.json`, '{"model_type":"gpt2"}');
    await assert.rejects(() => checkModelFolder(dir), /model_type "gpt2"; supported: opt, llama/);
    await Deno.writeTextFile(`${dir}/config.json`, '{"model_type":"llama"}');
    await assert.rejects(() => checkModelFolder(dir), /has no weights/);
    await Deno.writeFile(`${dir}/pytorch_model.bin`, new Uint8Array(1));
    await assert.rejects(() => checkModelFolder(dir), /only pytorch_model.bin; convert/);
    await Deno.writeFile(`${dir}/model.safetensors`, new Uint8Array(1));
    await checkModelFolder(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main() prints help (exit 0) and rejects bad flags before any work (exit 2)", async () => {
  const out: string[] = [], err: string[] = [];
  const log = console.log, error = console.error;
  console.log = (m: string) => out.push(m);
  console.error = (m: string) => err.push(m);
  try {
    assert.equal(await main(["--help"]), 0);
    assert.equal(await main(["--sparsity", "1.5"]), 2);
    assert.equal(await main(["--model_str", "/nonexistent/folder", "--use_iad"]), 2);
  } finally {
    console.log = log;
    console.error = error;
  }
  const help = out.join("\n");
  for (const f of FLAGS) assert.ok(help.includes(`--${f.name}`), `--help explains --${f.name}`);
  assert.match(help, /--max_correlate <n> \(--max-correlate\) \[default: 0\]/);
  assert.equal(help, helpText());
  assert.match(err[0], /--sparsity: 1.5 is out of range/);
  assert.match(err[1], /--model_str: "\/nonexistent\/folder" is neither a folder nor a Hub id/);
});

Deno.test("every example script's preset validates and user flags override it", async () => {
  const { mergeArgs } = await import("../examples/cli_flags.ts");
  const expect: Record<string, [string, string, boolean, number, number]> = {
    magnitude: ["rowcol", "identity", true, 0.5, 1],
    l_obd: ["rowcol", "activations", true, 0.3, 24],
    kron_obd: ["rowcol", "kfac", true, 0.5, 40],
    surgeon_structured: ["rowcol", "kfac", false, 0.5, 40],
    surgeon_semistructured: ["2:4", "kfac", false, 0.5, 5],
    surgeon_unstructured: ["element", "kfac", false, 0.5, 5],
    prune: ["rowcol", "kfac", false, 0.2, 2],
  };
  for (const [name, [structure, curvature, obd, sparsity, shots]] of Object.entries(expect)) {
    const { PRESET } = await import(`../examples/${name}.ts`);
    const cfg = parseFlags(mergeArgs(PRESET, []));
    validateConfig(cfg);
    const o = scheduleOptions(cfg);
    const s = typeof o.structure === "string" ? o.structure : `${o.structure.n}:${o.structure.m}`;
    assert.deepEqual([s, o.kind, o.obd, o.sparsity, o.shots], [
      structure,
      curvature,
      obd,
      sparsity,
      shots,
    ], name);
    const over = parseFlags(mergeArgs(PRESET, ["--structures", "element", "--shots", "3"]));
    assert.deepEqual([over.structures, over.shots], [["element"], 3], `${name} with overrides`);
  }
});
