/** The README's main job without network: a clear error and how to run it on local folders. */
import assert from "node:assert/strict";

Deno.test("examples/prune.ts offline explains how to use a local model and data folder", async () => {
  const hf = await Deno.makeTempDir({ prefix: "cli_prune_hf_" });
  const logRoot = await Deno.makeTempDir({ prefix: "cli_prune_runs_" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../examples/prune.ts", import.meta.url).pathname,
        "--log_root",
        logRoot,
      ],
      env: { HF_HOME: hf, HF_HUB_OFFLINE: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 1, text);
    assert.match(text, /facebook\/opt-125m/);
    assert.match(
      text,
      /--model_str \.\.\/shared\/data\/models\/hf\/stories260K --data_dir \.\.\/shared\/data --train_split valid/,
    );
    assert.deepEqual(
      [...Deno.readDirSync(logRoot)],
      [],
      "a failed run leaves no run folder behind",
    );
  } finally {
    await Deno.remove(hf, { recursive: true });
    await Deno.remove(logRoot, { recursive: true });
  }
});

Deno.test("examples/prune.ts cuts its 512-token windows to a local model's shorter context", async () => {
  const { demoSeqlen, PRESET } = await import("../examples/prune.ts");
  const { mergeArgs, parseFlags } = await import("../examples/cli_flags.ts");
  const dir = await Deno.makeTempDir({ prefix: "cli_prune_model_" });
  try {
    await Deno.writeTextFile(
      `${dir}/config.json`,
      '{"model_type":"llama","max_position_embeddings":128}',
    );
    const short = await demoSeqlen(mergeArgs(PRESET, ["--model_str", dir]));
    assert.equal(parseFlags(short).seqlen, 128);
    await Deno.writeTextFile(
      `${dir}/config.json`,
      '{"model_type":"llama","max_position_embeddings":4096}',
    );
    assert.equal(parseFlags(await demoSeqlen(mergeArgs(PRESET, ["--model_str", dir]))).seqlen, 512);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
