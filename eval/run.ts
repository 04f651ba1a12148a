/**
 * Run folders: where one pruning run keeps its settings, its per-evaluation metrics, its
 * summary, its report and the checkpoints that let `--resume` continue after a crash or a kill.
 *
 * Layout of `<log_root>/<run name>/`:
 * - `config.json` — every resolved setting plus toolkit/Deno versions and the GPU adapter
 * - `metrics.jsonl` — one JSON object per evaluation (shot 0 = dense model)
 * - `state.json` — the last completed shot and its checkpoint file (the commit point of a shot)
 * - `checkpoint-shot<k>.safetensors` — the prunable weights after shot k
 * - `summary.json`, `report.md`, `*.svg` — written when the run ends
 *
 * Every file is written atomically (temporary name in the same folder, then rename), and a shot
 * is committed by rewriting `state.json` last, so a run killed at any moment leaves a folder that
 * `--resume` reads back consistently: metrics lines of shots after the committed one are dropped
 * and stray checkpoints or temporary files are removed.
 *
 * @module
 */
import { atomicWrite, openSafetensors, writeSafetensors } from "../model/safetensors.ts";
import type { CausalLM } from "../model/types.ts";

/**
 * Version of the toolkit written into config.json.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { TOOLKIT_VERSION } from "@llm-surgeon/toolkit";
 * assert.match(TOOLKIT_VERSION, /^\d+\.\d+\.\d+$/);
 * ```
 */
export const TOOLKIT_VERSION = "0.1.0";

/**
 * A problem with a run folder (exists already, missing for --resume, settings differ, …).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { RunFolder, RunFolderError } from "@llm-surgeon/toolkit";
 * // Resuming a run that was never started.
 * await assert.rejects(
 *   RunFolder.open("/nonexistent-log-root", "no-such-run", { resume: true }),
 *   RunFolderError,
 * );
 * ```
 */
export class RunFolderError extends Error {
  /**
   * A run-folder problem.
   * @param message what is wrong, naming the folder or file
   */
  constructor(message: string) {
    super(message);
    this.name = "RunFolderError";
  }
}

/**
 * One line of metrics.jsonl: one evaluation.
 *
 * @example Usage
 * ```ts
 * import type { MetricsLine } from "@llm-surgeon/toolkit";
 * const dense: MetricsLine = {
 *   shot: 0,
 *   phase: "dense",
 *   target_sparsity: 0,
 *   sparsity: 0,
 *   sparsity_per_kind: {},
 *   ppl: { wikitext2: 27.65 },
 *   seconds: { eval: 31.2 },
 *   time: new Date().toISOString(),
 * };
 * console.log(JSON.stringify(dense).length > 0); // true
 * ```
 */
export interface MetricsLine {
  /** Shot after which the model was evaluated (0 = dense). */
  shot: number;
  /** `dense`, `shot`, or `lora` (after a LoRA step). */
  phase: "dense" | "shot" | "lora";
  /** Target sparsity of this shot (k·s/S; 0 for the dense model). */
  target_sparsity: number;
  /** Achieved sparsity of the prunable weights, overall. */
  sparsity: number;
  /** Achieved sparsity per module kind (q_proj, fc1, …). */
  sparsity_per_kind: Record<string, number>;
  /** Perplexity per evaluated dataset. */
  ppl: Record<string, number>;
  /** Seconds per phase (calibration/curvature, pruning, evaluation, …). */
  seconds: Record<string, number>;
  /** Wall-clock time the line was written (ISO 8601). */
  time: string;
  /** Further numbers from the pruner (threshold τ, removed units, …). */
  [extra: string]: unknown;
}

/**
 * The contents of state.json.
 *
 * @example Usage
 * ```ts
 * import type { RunState } from "@llm-surgeon/toolkit";
 * // Shot 3 committed, its weights in checkpoint-shot3.safetensors.
 * const state: RunState = { completedShot: 3, checkpoint: "checkpoint-shot3.safetensors" };
 * console.log(state.completedShot); // 3
 * ```
 */
export interface RunState {
  /** Last shot whose result is committed (−1 = nothing yet, 0 = dense evaluation done). */
  completedShot: number;
  /** Checkpoint file (in the run folder) holding the weights after `completedShot`, or null. */
  checkpoint: string | null;
}

/**
 * Writes `text` to `path` atomically: a temporary file in the same folder, synced, then renamed.
 * @param path destination
 * @param text contents
 * @example Usage
 * ```ts ignore
 * import { writeTextAtomic } from "@llm-surgeon/toolkit";
 * await writeTextAtomic("runs/x/summary.json", JSON.stringify({ ppl: 27.65 }));
 * ```
 */
export async function writeTextAtomic(path: string, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  await atomicWrite(path, async (file) => {
    let done = 0;
    while (done < bytes.length) done += await file.write(bytes.subarray(done));
  });
}

/** A short stable hash (FNV-1a, 32 bit, hex) of a string. */
function shortHash(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

/** JSON with object keys sorted, so equal settings always serialise the same way. */
function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(",")}]`;
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${
      Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`).join(",")
    }}`;
  }
  return JSON.stringify(v);
}

/**
 * The run folder name for a set of settings: readable parts (model, structure, curvature,
 * method, sparsity, shots, samples, seed) plus a hash of all result-relevant settings, so that
 * different settings never share a folder and equal settings always find theirs.
 * @param settings the result-relevant settings, by reference flag name
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { runName } from "@llm-surgeon/toolkit";
 * const name = runName({
 *   model_str: "facebook/opt-125m",
 *   structures: ["row", "column"],
 *   curvature: "kfac",
 *   obd: false,
 *   sparsity: 0.5,
 *   shots: 40,
 *   nsamples: 128,
 *   seed: 100,
 * });
 * assert.match(name, /^opt-125m_row-column_kfac-obs_s0\.5_x40_n128_seed100_[0-9a-f]{8}$/);
 * ```
 */
export function runName(settings: Record<string, unknown>): string {
  const model = String(settings.model_str ?? "model").replace(/\/+$/, "").split("/").pop() ||
    "model";
  const structures = Array.isArray(settings.structures) ? settings.structures.join("-") : "";
  const parts = [
    model,
    structures.replaceAll(":", "of"),
    `${settings.curvature ?? ""}-${settings.obd ? "obd" : "obs"}`,
    `s${settings.sparsity}`,
    `x${settings.shots}`,
    `n${settings.nsamples}`,
    `seed${settings.seed}`,
    shortHash(stableJson(settings)),
  ];
  return parts.join("_").replace(/[^A-Za-z0-9._-]/g, "-");
}

/**
 * A run folder on disk. Create or reopen it with {@link RunFolder.open}.
 *
 * @example Usage
 * ```ts ignore
 * import { RunFolder, runName } from "@llm-surgeon/toolkit";
 * const settings = { model_str: "facebook/opt-125m", sparsity: 0.5, shots: 40, seed: 100 };
 * const run = await RunFolder.open("runs", runName(settings), { resume: true, settings });
 * const first = (await run.restore(model)) + 1; // the next shot to do
 * for (let shot = first; shot <= 40; shot++) {
 *   // … prune and evaluate, then commit the shot's metrics and weights together
 *   await run.commitShot(shot, [line], model);
 * }
 * ```
 */
export class RunFolder {
  /** The folder. */
  readonly dir: string;
  #metrics: MetricsLine[] = [];
  #state: RunState = { completedShot: -1, checkpoint: null };

  private constructor(dir: string) {
    this.dir = dir;
  }

  /**
   * Creates `<root>/<name>` for a new run, or reopens it for `--resume`. A new run refuses an
   * existing folder (naming `--resume`); a resumed run needs the folder, checks that its
   * config.json holds the same result-relevant settings, drops metrics of uncommitted shots and
   * removes stray temporary files and checkpoints.
   * @param root the log root
   * @param name the run name ({@link runName})
   * @param opts `resume`, and `settings` to compare with the stored ones on resume
   */
  static async open(
    root: string,
    name: string,
    opts: { resume: boolean; settings?: Record<string, unknown> },
  ): Promise<RunFolder> {
    const dir = `${root.replace(/\/+$/, "")}/${name}`;
    const run = new RunFolder(dir);
    let exists = false;
    try {
      exists = (await Deno.stat(dir)).isDirectory;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    if (!opts.resume) {
      if (exists && (await run.readJson<RunState>("state.json")) !== null) {
        throw new RunFolderError(
          `run folder ${dir} already exists: pass --resume to continue it, or remove it to start over`,
        );
      }
      // a folder without state.json holds no result (a run that stopped before its dense
      // evaluation was committed): start it afresh
      if (exists) await Deno.remove(dir, { recursive: true });
      await Deno.mkdir(dir, { recursive: true });
      return run;
    }
    if (!exists) {
      throw new RunFolderError(
        `--resume: no run folder ${dir} for these settings (nothing to resume)`,
      );
    }
    if (opts.settings) {
      const stored = await run.readJson<{ settings?: Record<string, unknown> }>("config.json");
      if (stored?.settings && stableJson(stored.settings) !== stableJson(opts.settings)) {
        const diff = Object.keys({ ...stored.settings, ...opts.settings }).filter((k) =>
          stableJson(stored.settings![k]) !== stableJson(opts.settings![k])
        );
        throw new RunFolderError(
          `--resume: ${dir}/config.json was written with different settings (${diff.join(", ")})`,
        );
      }
    }
    run.#state = (await run.readJson<RunState>("state.json")) ??
      { completedShot: -1, checkpoint: null };
    const text = await Deno.readTextFile(`${dir}/metrics.jsonl`).catch(() => "");
    run.#metrics = text.split("\n").filter((l) => l.trim() !== "").map((l) =>
      JSON.parse(l) as MetricsLine
    )
      .filter((m) => m.shot <= run.#state.completedShot);
    await run.#writeMetrics();
    for await (const e of Deno.readDir(dir)) {
      const strayCheckpoint = /^checkpoint-shot\d+\.safetensors$/.test(e.name) &&
        e.name !== run.#state.checkpoint;
      if (e.name.includes(".tmp-") || strayCheckpoint) {
        await Deno.remove(`${dir}/${e.name}`, { recursive: true });
      }
    }
    return run;
  }

  /** The committed state (last completed shot and its checkpoint). */
  get state(): RunState {
    return { ...this.#state };
  }

  /** The metrics lines written so far (committed shots only after a resume). */
  get metrics(): MetricsLine[] {
    return [...this.#metrics];
  }

  /**
   * Writes `<dir>/<name>` atomically as pretty JSON.
   * @param name file name inside the run folder
   * @param value any JSON value
   */
  async writeJson(name: string, value: unknown): Promise<void> {
    await writeTextAtomic(`${this.dir}/${name}`, JSON.stringify(value, null, 2) + "\n");
  }

  /**
   * Writes `<dir>/<name>` atomically.
   * @param name file name inside the run folder
   * @param text contents
   */
  async writeText(name: string, text: string): Promise<void> {
    await writeTextAtomic(`${this.dir}/${name}`, text);
  }

  /**
   * Reads `<dir>/<name>` as JSON, or null when it does not exist.
   * @param name file name inside the run folder
   */
  async readJson<T>(name: string): Promise<T | null> {
    let text: string;
    try {
      text = await Deno.readTextFile(`${this.dir}/${name}`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
    try {
      return JSON.parse(text) as T;
    } catch (e) {
      throw new RunFolderError(`${this.dir}/${name} is not valid JSON (${(e as Error).message})`);
    }
  }

  async #writeMetrics(): Promise<void> {
    await this.writeText(
      "metrics.jsonl",
      this.#metrics.map((m) => JSON.stringify(m) + "\n").join(""),
    );
  }

  /**
   * Commits the result of a shot: writes the checkpoint of the prunable weights (when `model`
   * is given), the metrics lines of the shot, and finally state.json; then removes the previous
   * checkpoint. A kill at any point leaves either the previous or the new commit.
   * @param shot the completed shot (0 = dense evaluation)
   * @param lines the shot's metrics lines
   * @param model the pruned model (null: no checkpoint, e.g. shot 0)
   */
  async commitShot(shot: number, lines: MetricsLine[], model: CausalLM | null): Promise<void> {
    const previous = this.#state.checkpoint;
    let checkpoint = previous;
    if (model) {
      checkpoint = `checkpoint-shot${shot}.safetensors`;
      await saveWeights(`${this.dir}/${checkpoint}`, model, { shot: String(shot) });
    }
    this.#metrics = this.#metrics.filter((m) => m.shot < shot).concat(lines);
    await this.#writeMetrics();
    this.#state = { completedShot: shot, checkpoint };
    await this.writeJson("state.json", this.#state);
    if (previous && previous !== checkpoint) {
      await Deno.remove(`${this.dir}/${previous}`).catch(() => {});
    }
  }

  /**
   * Loads the committed checkpoint's weights into `model` (no-op without one) and returns the
   * completed shot.
   * @param model the freshly loaded dense model
   */
  async restore(model: CausalLM): Promise<number> {
    if (this.#state.checkpoint) await loadWeights(`${this.dir}/${this.#state.checkpoint}`, model);
    return this.#state.completedShot;
  }
}

/**
 * Writes the weights and biases of every prunable module of `model` to a safetensors file
 * (atomically), under their Hugging Face names.
 * @param path destination
 * @param model the model
 * @param metadata strings stored in `__metadata__`
 *
 * @example Usage
 * ```ts ignore
 * import { loadModel, saveWeights } from "@llm-surgeon/toolkit";
 * const model = await loadModel("facebook/opt-125m");
 * await saveWeights("runs/x/pruned.safetensors", model, { shot: "40" });
 * ```
 */
export async function saveWeights(
  path: string,
  model: CausalLM,
  metadata: Record<string, string> = {},
): Promise<void> {
  const tensors: { name: string; shape: number[]; data: Float32Array }[] = [];
  for (const lin of model.linears()) {
    tensors.push({
      name: `${lin.name}.weight`,
      shape: [...lin.weight.shape],
      data: await lin.weight.read(),
    });
    if (lin.bias) {
      tensors.push({
        name: `${lin.name}.bias`,
        shape: [...lin.bias.shape],
        data: await lin.bias.read(),
      });
    }
  }
  await writeSafetensors(path, tensors, metadata);
}

/**
 * Loads prunable weights written by {@link saveWeights} back into `model`, checking names and
 * shapes.
 * @param path the checkpoint file
 * @param model the model (same architecture)
 *
 * @example Usage
 * ```ts ignore
 * import { loadModel, loadWeights } from "@llm-surgeon/toolkit";
 * const model = await loadModel("facebook/opt-125m"); // dense weights
 * await loadWeights("runs/x/pruned.safetensors", model); // now the pruned ones
 * ```
 */
export async function loadWeights(path: string, model: CausalLM): Promise<void> {
  const file = await openSafetensors(path);
  try {
    for (const lin of model.linears()) {
      const parts: [string, typeof lin.weight | null][] = [[`${lin.name}.weight`, lin.weight], [
        `${lin.name}.bias`,
        lin.bias,
      ]];
      for (const [name, t] of parts) {
        if (!t) continue;
        const info = file.tensors.get(name);
        if (!info) throw new RunFolderError(`checkpoint ${path} has no tensor ${name}`);
        if (info.shape.join(",") !== t.shape.join(",")) {
          throw new RunFolderError(
            `checkpoint ${path}: ${name} has shape [${info.shape}] but the model has [${t.shape}]`,
          );
        }
        t.write(await file.read(name));
      }
    }
  } finally {
    file.close();
  }
}
