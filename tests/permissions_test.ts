/**
 * Sandboxed runs (issue 6, item 2): the main job runs under exactly the permissions proposed for
 * `deno task surgeon` — read the model, data and log folders (and the HF cache), write only the
 * log root, env only for HF_* and LOG_ROOT, no network for local folders — and a write outside
 * the log root is refused (`NotCapable`), with a clear message and no half-finished run.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { makeTinyModelDir } from "./_tiny_models.ts";

/** Environment variables the toolkit may read (Hub client, cache location, log root). */
const ALLOWED_ENV = [
  "HF_HOME",
  "HF_HUB_CACHE",
  "HF_HUB_OFFLINE",
  "HF_TOKEN",
  "HF_TOKEN_PATH",
  "HF_ENDPOINT",
  "XDG_CACHE_HOME",
  "HOME",
  "LOG_ROOT",
];

/** Hosts a Hub download touches (API + files, the LFS CDN, the Xet bridge). */
const HUB_HOSTS = ["huggingface.co", "cdn-lfs.huggingface.co", "cas-bridge.xethub.hf.co"];

interface SandboxFolders {
  modelDir: string;
  dataDir: string;
  logRoot: string;
  /** HF cache; readable, and writable only when downloading. */
  hfCache: string;
  /** Allow the Hub hosts (downloading) instead of denying all network access. */
  download?: boolean;
}

/** The permission flags of a sandboxed run, as proposed for the deno.json tasks. */
function sandboxFlags(f: SandboxFolders): string[] {
  return [
    `--allow-read=${[f.modelDir, f.dataDir, f.logRoot, f.hfCache].join(",")}`,
    `--allow-write=${f.download ? [f.logRoot, f.hfCache].join(",") : f.logRoot}`,
    `--allow-env=${ALLOWED_ENV.join(",")}`,
    f.download ? `--allow-net=${HUB_HOSTS.join(",")}` : "--deny-net",
    "--deny-run",
    "--deny-ffi",
  ];
}

const repo = new URL("../", import.meta.url);
const decoder = new TextDecoder();

/** The main job's script: examples/surgeon.ts, or examples/prune.ts. */
function mainScript(): string | null {
  for (const name of ["examples/surgeon.ts", "examples/prune.ts"]) {
    try {
      const path = new URL(name, repo).pathname;
      if (Deno.statSync(path).isFile) return path;
    } catch { /* not there */ }
  }
  return null;
}

/** Runs `deno run <flags> <script> <args>` with a clean environment; returns code and output. */
async function runSandboxed(
  flags: string[],
  script: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string }> {
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...flags, script, ...args],
    cwd: new URL(".", repo).pathname,
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      DENO_WEBGPU_BACKEND: Deno.env.get("DENO_WEBGPU_BACKEND") ?? "vulkan",
      XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp",
      NO_COLOR: "1",
      RUST_BACKTRACE: "0",
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: result.code, out: decoder.decode(result.stdout) + decoder.decode(result.stderr) };
}

/** Lists every file under `dir` (relative paths). */
async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...await listFiles(join(dir, e.name), rel));
    else out.push(rel);
  }
  return out.sort();
}

async function makeFolders(): Promise<SandboxFolders & { root: string; outside: string }> {
  const root = await Deno.makeTempDir({ prefix: "surgeon_perm_" });
  const f = {
    root,
    modelDir: join(root, "model"),
    dataDir: join(root, "data"),
    logRoot: join(root, "runs"),
    hfCache: join(root, "hf"),
    outside: join(root, "elsewhere"),
  };
  for (const d of [f.modelDir, f.dataDir, f.logRoot, f.hfCache, f.outside]) {
    await Deno.mkdir(d, { recursive: true });
  }
  return f;
}

Deno.test("the sandbox refuses writes outside the log root and reads outside the allowed folders", async () => {
  const f = await makeFolders();
  try {
    // A probe script under exactly the main job's flags: writing the log root works, anything
    // else is NotCapable.
    const probe = join(f.logRoot, "probe.ts");
    await Deno.writeTextFile(
      probe,
      `const [logRoot, outside, secret] = Deno.args;
const attempt = async (what: string, fn: () => Promise<unknown>) => {
  try { await fn(); console.log(what, "ok"); }
  catch (e) { console.log(what, (e as Error).name); }
};
await attempt("write-log-root", () => Deno.writeTextFile(logRoot + "/x.txt", "x"));
await attempt("write-outside", () => Deno.writeTextFile(outside + "/x.txt", "x"));
await attempt("read-outside", () => Deno.readTextFile(secret));
await attempt("env-other", async () => Deno.env.get("PATH"));
await attempt("env-hf", async () => Deno.env.get("HF_HOME"));
await attempt("net", () => fetch("https://huggingface.co/"));
await attempt("run", () => new Deno.Command("true").output());
await attempt("gpu", async () => {
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Error("no adapter");
  (await adapter.requestDevice()).destroy();
});
`,
    );
    const secret = join(f.outside, "secret.txt");
    await Deno.writeTextFile(secret, "not for the job");
    const { code, out } = await runSandboxed(sandboxFlags(f), probe, [
      f.logRoot,
      f.outside,
      secret,
    ]);
    assert.equal(code, 0, out);
    const result = Object.fromEntries(out.trim().split("\n").map((l) => l.split(" ")));
    assert.deepEqual(result, {
      "write-log-root": "ok",
      "write-outside": "NotCapable",
      "read-outside": "NotCapable",
      "env-other": "NotCapable",
      "env-hf": "ok",
      "net": "NotCapable",
      "run": "NotCapable",
      "gpu": "ok",
    });
    assert.deepEqual(await listFiles(f.outside), ["secret.txt"]);
  } finally {
    await Deno.remove(f.root, { recursive: true });
  }
});

/** Tiny TinyStories-style data (train and valid) under `dataDir`. */
async function writeTinyData(dataDir: string): Promise<void> {
  const stories = [
    "Once upon a time there was a little dog. The dog liked to run in the park.",
    "Tom had a red ball. He threw the ball to his friend and they laughed.",
    "A small bird sat on a tree. The bird sang a happy song every morning.",
    "Lily saw a big cat. The cat was sleepy, so Lily let it sleep in the sun.",
  ];
  await Deno.mkdir(join(dataDir, "tinystories"), { recursive: true });
  const text = (k: number) =>
    Array.from({ length: 24 }, (_, i) => stories[(i + k) % stories.length]).join(
      "\n<|endoftext|>\n",
    );
  await Deno.writeTextFile(join(dataDir, "tinystories", "train.txt"), text(0));
  await Deno.writeTextFile(join(dataDir, "tinystories", "valid.txt"), text(1));
}

function jobArgs(f: SandboxFolders, logRoot: string): string[] {
  return [
    "--model_str",
    f.modelDir,
    "--data_dir",
    f.dataDir,
    "--train_lang",
    "tinystories",
    "--train_split",
    "valid",
    "--eval_langs",
    "tinystories",
    "--seqlen",
    "32",
    "--nsamples",
    "2",
    "--eval_samples",
    "2",
    "--shots",
    "1",
    "--sparsity",
    "0.2",
    "--use_iad",
    "--offline",
    "--log_root",
    logRoot,
  ];
}

Deno.test({
  name:
    "the main job runs under the sandbox flags and refuses a --log_root outside the allowed folder",
  fn: async () => {
    const script = mainScript();
    assert.ok(script !== null, "neither examples/surgeon.ts nor examples/prune.ts exists");
    const f = await makeFolders();
    try {
      await makeTinyModelDir(f.modelDir, "llama", 1);
      await writeTinyData(f.dataDir);
      const env = { HF_HOME: f.hfCache, HF_HUB_OFFLINE: "1" };

      // 1. The job succeeds and writes only under the log root.
      const ok = await runSandboxed(sandboxFlags(f), script, jobArgs(f, f.logRoot), env);
      assert.equal(ok.code, 0, `sandboxed run failed:\n${ok.out}`);
      const written = await listFiles(f.logRoot);
      assert.ok(written.length > 0, "the run wrote nothing under the log root");
      assert.ok(
        written.some((p) => p.endsWith("metrics.jsonl")),
        `no metrics.jsonl in ${written.join(", ")}`,
      );

      // 2. --log_root outside the write allowance: a clear error before any work, nothing written.
      const bad = await runSandboxed(sandboxFlags(f), script, jobArgs(f, f.outside), env);
      assert.notEqual(bad.code, 0, `run with --log_root ${f.outside} should fail:\n${bad.out}`);
      assert.match(bad.out, /log_root/, `the error should name --log_root:\n${bad.out}`);
      assert.ok(bad.out.includes(f.outside), `the error should name the folder:\n${bad.out}`);
      assert.match(bad.out, /NotCapable|write access|permission/i, bad.out);
      assert.doesNotMatch(
        bad.out,
        /error: Uncaught/,
        `a crash instead of a clear message:\n${bad.out}`,
      );
      assert.deepEqual(
        await listFiles(f.outside),
        [],
        "something was written outside the log root",
      );
    } finally {
      await Deno.remove(f.root, { recursive: true });
    }
  },
});

/** The `--allow-*`/`--deny-*` flags of a deno.json task (`$HOME` expanded), or null without it. */
async function taskPermissionFlags(task: string): Promise<string[] | null> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", repo)));
  const line: unknown = config.tasks?.[task];
  if (typeof line !== "string") return null;
  const home = Deno.env.get("HOME") ?? "";
  return line.split(/\s+/).filter((t) => /^--(allow|deny)-/.test(t)).map((t) =>
    t.replaceAll("$HOME", home)
  );
}

const surgeonTaskFlags = await taskPermissionFlags("surgeon");

Deno.test({
  name:
    "the deno.json `surgeon` task's own flags run the job on repo folders and refuse other writes",
  ignore: surgeonTaskFlags === null,
  fn: async () => {
    const flags = surgeonTaskFlags!;
    assert.ok(
      !flags.some((f) => /^--allow-(all|run|ffi)\b/.test(f) || f === "-A"),
      flags.join(" "),
    );
    // Fixtures inside the checkout's runs/ folder (what the task may read and write), the
    // forbidden log root in the system temp folder.
    const rel = `runs/.permissions-test-${Deno.pid}`;
    const root = new URL(`${rel}/`, repo).pathname;
    const outside = await Deno.makeTempDir({ prefix: "surgeon_perm_outside_" });
    const f: SandboxFolders = {
      modelDir: `${rel}/model`,
      dataDir: `${rel}/data`,
      logRoot: `${rel}/logs`,
      hfCache: `${rel}/hf`,
    };
    try {
      await makeTinyModelDir(join(root, "model"), "llama", 2);
      await writeTinyData(join(root, "data"));
      const env = { HOME: Deno.env.get("HOME") ?? "/nonexistent", HF_HUB_OFFLINE: "1" };
      const script = new URL("examples/surgeon.ts", repo).pathname;
      const ok = await runSandboxed(flags, script, jobArgs(f, f.logRoot), env);
      assert.equal(ok.code, 0, `run under the task's flags failed:\n${ok.out}`);
      assert.ok(
        (await listFiles(join(root, "logs"))).some((p) => p.endsWith("metrics.jsonl")),
        ok.out,
      );
      const bad = await runSandboxed(flags, script, jobArgs(f, outside), env);
      assert.notEqual(bad.code, 0, bad.out);
      assert.match(bad.out, /log_root/, bad.out);
      assert.deepEqual(await listFiles(outside), []);
    } finally {
      await Deno.remove(root, { recursive: true }).catch(() => {});
      await Deno.remove(outside, { recursive: true });
    }
  },
});
