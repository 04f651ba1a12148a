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
