/**
 * The command line's flags: one table holding every flag of the reference's main script
 * (ALGORITHM.md §11.1) under its reference name, plus this toolkit's own (`--data_dir`,
 * `--train_split`, `--seqlen`, `--eval_samples`, `--resume`, …). Parsing accepts kebab-case
 * aliases (`--max-correlate`) and argparse-style lists (`--structures row column`); validation
 * checks every value and every combination before any work starts.
 *
 * Importable by tests: {@link parseFlags} never exits, it throws {@link FlagError}.
 *
 * @module
 */
import { parseArgs } from "node:util";

/**
 * A bad flag value or combination; `flag` names the flag (`--sparsity`).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { FlagError, parseFlags, validateConfig } from "./cli_flags.ts";
 * assert.throws(() => validateConfig(parseFlags(["--sparsity", "1.5"])), (e) => {
 *   assert.ok(e instanceof FlagError);
 *   assert.equal(e.flag, "--sparsity");
 *   return true;
 * });
 * ```
 */
export class FlagError extends Error {
  /** The flag at fault, with its dashes. */
  readonly flag: string;
  /**
   * @param flag the flag at fault (without dashes; "" for a stray argument)
   * @param message what is wrong and what is allowed
   */
  constructor(flag: string, message: string) {
    super(flag ? `--${flag}: ${message}` : message);
    this.name = "FlagError";
    this.flag = flag ? `--${flag}` : "";
  }
}

type FlagType = "string" | "number" | "int" | "boolean" | "list";

/**
 * One row of the flag table.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { FLAGS, type FlagSpec } from "./cli_flags.ts";
 * const spec: FlagSpec = FLAGS.find((f) => f.name === "sparsity")!;
 * assert.equal(spec.type, "number");
 * assert.equal(spec.default, 0.5);
 * ```
 */
export interface FlagSpec {
  /** Reference name (snake_case, without dashes). */
  name: string;
  /** Value type: lists take one or more words (`--structures row column`). */
  type: FlagType;
  /** Default value (null = unset). */
  default: string | number | boolean | string[] | null;
  /** Section of `--help`. */
  group:
    | "model and data"
    | "pruning"
    | "curvature"
    | "schedule"
    | "LoRA"
    | "output"
    | "reference compatibility";
  /** What the flag does. */
  help: string;
}

/**
 * Every flag, in `--help` order. Defaults are the reference's (ALGORITHM.md §11.1) except where
 * the help text says otherwise.
 *
 * @example Usage
 * ```ts
 * import { FLAGS } from "./cli_flags.ts";
 * for (const f of FLAGS.filter((f) => f.group === "LoRA")) console.log(`--${f.name}: ${f.help}`);
 * ```
 */
export const FLAGS: readonly FlagSpec[] = [
  // model and data
  {
    name: "model_str",
    type: "string",
    default: "facebook/opt-125m",
    group: "model and data",
    help:
      "Hugging Face model id (downloaded into the HF cache) or a local folder with config.json and model.safetensors. OPT and Llama families.",
  },
  {
    name: "revision",
    type: "string",
    default: "main",
    group: "model and data",
    help: "Hub revision (branch, tag or commit) of --model_str.",
  },
  {
    name: "offline",
    type: "boolean",
    default: false,
    group: "model and data",
    help:
      "Never touch the network: use the HF cache or local folders only (also HF_HUB_OFFLINE=1).",
  },
  {
    name: "data_dir",
    type: "string",
    default: null,
    group: "model and data",
    help:
      "Local data folder laid out like ../shared/data (wikitext-2-raw/wiki.{train,valid,test}.raw, c4/*.json[l][.gz], ptb/ptb.*.txt, tinystories/{train,valid}.txt). Unset: datasets come from the Hub.",
  },
  {
    name: "train_lang",
    type: "string",
    default: "wikitext2",
    group: "model and data",
    help: "Calibration dataset: wikitext2, c4, ptb or tinystories.",
  },
  {
    name: "train_split",
    type: "string",
    default: "train",
    group: "model and data",
    help:
      "Split the calibration windows are drawn from (train, valid or test). ../shared/data has no train split: use valid.",
  },
  {
    name: "eval_langs",
    type: "list",
    default: ["wikitext2"],
    group: "model and data",
    help:
      "Datasets perplexity is reported on (one or more of wikitext2, c4, ptb, tinystories); evaluated on their test split (validation for c4 and tinystories).",
  },
  {
    name: "seqlen",
    type: "int",
    default: null,
    group: "model and data",
    help:
      "Tokens per calibration and evaluation window. Default: the model's max_position_embeddings (2048 for OPT, 4096 for Llama-2).",
  },
  {
    name: "nsamples",
    type: "int",
    default: 128,
    group: "model and data",
    help: "Calibration windows per shot (n).",
  },
  {
    name: "eval_samples",
    type: "int",
    default: null,
    group: "model and data",
    help: "Evaluate on the first N test windows only. Default: all windows.",
  },
  {
    name: "seed",
    type: "int",
    default: 100,
    group: "model and data",
    help:
      "Seed of the calibration sampler (CPython-identical random.sample) and of all other randomness.",
  },
  // pruning
  {
    name: "sparsity",
    type: "number",
    default: 0.5,
    group: "pruning",
    help: "Final target sparsity s in [0, 1) of the prunable weights; shot k of S targets k·s/S.",
  },
  {
    name: "structures",
    type: "list",
    default: ["row", "column"],
    group: "pruning",
    help:
      "What is removed: 'row column' (structured), 'element' (unstructured) or 'N:M' such as 2:4 (semi-structured).",
  },
  {
    name: "obd",
    type: "boolean",
    default: false,
    group: "pruning",
    help:
      "Optimal Brain Damage: diagonal costs and no weight updates (magnitude, L-OBD, Kron-OBD). Off: OBS costs with correlated updates (LLM Surgeon).",
  },
  {
    name: "damp_g",
    type: "number",
    default: 0.01,
    group: "pruning",
    help: "Relative damping λ_G of the output-side factor: G + λ_G·mean(diag G)·I.",
  },
  {
    name: "damp_a",
    type: "number",
    default: 0.01,
    group: "pruning",
    help: "Relative damping λ_A of the input-side factor.",
  },
  {
    name: "max_correlate",
    type: "int",
    default: 0,
    group: "pruning",
    help:
      "Weights updated jointly per chunk: 0 = all of a module, k > 0 = chunks of about k removed weights, -1 = one row per chunk (element/N:M only).",
  },
  {
    name: "addupdate",
    type: "boolean",
    default: false,
    group: "pruning",
    help: "Each chunk sees the compensation of the chunks before it.",
  },
  {
    name: "strictmax",
    type: "boolean",
    default: false,
    group: "pruning",
    help: "Cut rows with more than max_correlate removed weights into several chunks.",
  },
  {
    name: "low_memory",
    type: "boolean",
    default: false,
    group: "pruning",
    help:
      "Less GPU memory: factors summed in one buffer each (plain f32 sums, as the reference without --double), and each module's inverses computed when needed and freed (twice per shot) instead of all at once. Results equal the default's up to the rounding of the factor sums.",
  },
  {
    name: "update_scale",
    type: "number",
    default: 1.0,
    group: "pruning",
    help: "Scale η of the OBS weight update.",
  },
  {
    name: "use_diagonal",
    type: "boolean",
    default: false,
    group: "pruning",
    help: "Use the exact diagonal D (needs --diagonal) for OBD element costs.",
  },
  // curvature
  {
    name: "curvature",
    type: "string",
    default: "kfac",
    group: "curvature",
    help:
      "Curvature of the loss: identity (magnitude; needs --obd), activations (L-OBD) or kfac (Kron-OBD, LLM Surgeon).",
  },
  {
    name: "use_iad",
    type: "boolean",
    default: false,
    group: "curvature",
    help:
      "KFAC rank 0 under independence of activations and derivatives (G = E[ggᵀ], A = E[aaᵀ]). Every published script sets it.",
  },
  {
    name: "kpca_iter",
    type: "int",
    default: 1,
    group: "curvature",
    help:
      "Kronecker power-iteration half-steps; must be even when power iteration is used (KFAC without --use_iad, or --krank 2).",
  },
  {
    name: "krank",
    type: "int",
    default: 1,
    group: "curvature",
    help: "Number of Kronecker terms of the Fisher approximation (1 or 2).",
  },
  {
    name: "fisher_samples",
    type: "int",
    default: 0,
    group: "curvature",
    help:
      "0 = empirical Fisher (true next tokens); S > 0 = S labels sampled from the model per position.",
  },
  {
    name: "max_outgrad",
    type: "number",
    default: 0,
    group: "curvature",
    help: "Clamp output gradients to [-m, m]; 0 = off.",
  },
  {
    name: "diagonal",
    type: "boolean",
    default: false,
    group: "curvature",
    help: "Also estimate the exact Fisher diagonal D (normalised by N).",
  },
  {
    name: "curvature_groups",
    type: "int",
    default: 1,
    group: "curvature",
    help:
      "Estimate the factors in this many rounds over groups of decoder layers, moving each group's factors to host memory: the GPU holds one group's factors at a time (for models whose factors do not fit beside the weights, e.g. 7B). Same factors; forward passes repeated per group, backward passes only down to the group. Implies --low_memory pruning; not with --reuse.",
  },
  {
    name: "eigenfix",
    type: "boolean",
    default: false,
    group: "curvature",
    help:
      "krank 2 only: if the combined eigenvalues s have a negative minimum, shift all of s by |min s| (ALGORITHM.md §4.3).",
  },
  {
    name: "rank1cost",
    type: "boolean",
    default: false,
    group: "curvature",
    help: "krank 2 only: costs from the first Kronecker term alone; updates still use both terms.",
  },
  // schedule
  {
    name: "shots",
    type: "int",
    default: 40,
    group: "schedule",
    help:
      "Number of shots S; curvature is re-estimated on the partially pruned model before every shot.",
  },
  {
    name: "schedule",
    type: "string",
    default: "linear",
    group: "schedule",
    help: "Sparsity schedule; only linear exists.",
  },
  {
    name: "newdata",
    type: "boolean",
    default: false,
    group: "schedule",
    help: "Fresh calibration windows for every shot (shot k uses windows (k-1)·n … k·n-1).",
  },
  {
    name: "reuse",
    type: "boolean",
    default: false,
    group: "schedule",
    help: "Seed the power iteration with the previous shot's factors (6 half-steps).",
  },
  {
    name: "skip",
    type: "int",
    default: 0,
    group: "schedule",
    help: "Skip the first j shots (the schedule starts at s_(j+1) on the unpruned model).",
  },
  // LoRA
  {
    name: "lora",
    type: "boolean",
    default: false,
    group: "LoRA",
    help:
      "Rank-8 LoRA fine-tuning of OPT attention projections between shots and after the last shot, absorbed into the weights.",
  },
  {
    name: "lora_lr",
    type: "number",
    default: 1e-4,
    group: "LoRA",
    help: "Adam learning rate of the LoRA steps.",
  },
  {
    name: "lora_subset",
    type: "number",
    default: 0.025,
    group: "LoRA",
    help: "Fraction of the calibration windows used by each between-shot LoRA step.",
  },
  {
    name: "lora_epochs",
    type: "int",
    default: 5,
    group: "LoRA",
    help: "Epochs of the final LoRA fine-tune.",
  },
  {
    name: "log_lora",
    type: "boolean",
    default: false,
    group: "LoRA",
    help: "Diagnostic in the reference (LoRA fits logged and discarded); not implemented, refused.",
  },
  // output
  {
    name: "log_root",
    type: "string",
    default: null,
    group: "output",
    help: "Folder holding run folders. Default: $LOG_ROOT, else runs/.",
  },
  {
    name: "save_model",
    type: "boolean",
    default: false,
    group: "output",
    help: "Write the pruned model as a Hugging Face folder into the run folder (model/).",
  },
  {
    name: "resume",
    type: "boolean",
    default: false,
    group: "output",
    help:
      "Continue the run folder of these settings from its last completed shot (after a crash or kill).",
  },
  {
    name: "help",
    type: "boolean",
    default: false,
    group: "output",
    help: "Print this help and exit.",
  },
  // accepted for compatibility with the reference's scripts
  {
    name: "double",
    type: "boolean",
    default: false,
    group: "reference compatibility",
    help: "Float64 factor accumulation: not available (WGSL has no f64); refused.",
  },
  {
    name: "zerofix8",
    type: "boolean",
    default: false,
    group: "reference compatibility",
    help: "Broken in the reference (ALGORITHM.md §14 Q11); refused.",
  },
  {
    name: "save_curvature",
    type: "int",
    default: 0,
    group: "reference compatibility",
    help: "Diagnostic exact mini-Fisher of the reference; only 0 is accepted.",
  },
  {
    name: "batch_size",
    type: "int",
    default: 1,
    group: "reference compatibility",
    help: "Unused by the reference (its loaders hard-code 1); only 1 is accepted.",
  },
  {
    name: "lr",
    type: "number",
    default: 0.01,
    group: "reference compatibility",
    help: "Unused by the reference; accepted and ignored.",
  },
  {
    name: "epochs",
    type: "int",
    default: 100,
    group: "reference compatibility",
    help: "Unused by the reference; accepted and ignored.",
  },
  {
    name: "curvature_dev",
    type: "string",
    default: "cpu",
    group: "reference compatibility",
    help:
      "Placement of factors in the reference; accepted and ignored (everything is on the WebGPU device).",
  },
  {
    name: "buffer_dev",
    type: "string",
    default: null,
    group: "reference compatibility",
    help: "Placement in the reference; accepted and ignored.",
  },
  {
    name: "lowmem",
    type: "boolean",
    default: false,
    group: "reference compatibility",
    help:
      "Low-memory evaluator of the reference; accepted and ignored (evaluation is window by window anyway).",
  },
];

const SPEC_BY_NAME = new Map(FLAGS.map((f) => [f.name, f]));

/**
 * The resolved settings: every flag of {@link FLAGS} by its reference name.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseFlags, type SurgeonConfig } from "./cli_flags.ts";
 * const cfg: SurgeonConfig = parseFlags(["--shots", "5"]);
 * assert.equal(cfg.shots, 5);
 * assert.equal(cfg.log_root, "runs"); // a default
 * ```
 */
export interface SurgeonConfig {
  model_str: string;
  revision: string;
  offline: boolean;
  data_dir: string | null;
  train_lang: string;
  train_split: string;
  eval_langs: string[];
  seqlen: number | null;
  nsamples: number;
  eval_samples: number | null;
  seed: number;
  sparsity: number;
  structures: string[];
  obd: boolean;
  damp_g: number;
  damp_a: number;
  max_correlate: number;
  addupdate: boolean;
  strictmax: boolean;
  low_memory: boolean;
  update_scale: number;
  use_diagonal: boolean;
  curvature: "identity" | "activations" | "kfac";
  use_iad: boolean;
  kpca_iter: number;
  krank: number;
  fisher_samples: number;
  max_outgrad: number;
  diagonal: boolean;
  curvature_groups: number;
  eigenfix: boolean;
  rank1cost: boolean;
  shots: number;
  schedule: string;
  newdata: boolean;
  reuse: boolean;
  skip: number;
  lora: boolean;
  lora_lr: number;
  lora_subset: number;
  lora_epochs: number;
  log_lora: boolean;
  log_root: string;
  save_model: boolean;
  resume: boolean;
  help: boolean;
  double: boolean;
  zerofix8: boolean;
  save_curvature: number;
  batch_size: number;
  lr: number;
  epochs: number;
  curvature_dev: string;
  buffer_dev: string | null;
  lowmem: boolean;
}

/**
 * The pruning structure a `--structures` list denotes.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type StructureSpec, structureOf } from "./cli_flags.ts";
 * const s: StructureSpec = structureOf(["column", "row"]);
 * assert.deepEqual(s, { kind: "rowcol" });
 * ```
 */
export type StructureSpec = { kind: "rowcol" } | { kind: "element" } | {
  kind: "nm";
  n: number;
  m: number;
};

/**
 * Interprets a `--structures` list: `row column` (either order), `element`, or one `N:M` with
 * 0 < N < M.
 * @param list the words given
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { structureOf } from "./cli_flags.ts";
 * assert.deepEqual(structureOf(["2:4"]), { kind: "nm", n: 2, m: 4 });
 * assert.deepEqual(structureOf(["element"]), { kind: "element" });
 * ```
 */
export function structureOf(list: readonly string[]): StructureSpec {
  const words = list.map((w) => w.trim().toLowerCase()).filter((w) => w !== "");
  const set = new Set(words);
  if (set.size === 2 && set.has("row") && set.has("column")) return { kind: "rowcol" };
  if (set.size === 1 && set.has("element")) return { kind: "element" };
  if (words.length === 1) {
    const m = /^(\d+):(\d+)$/.exec(words[0]);
    if (m) {
      const n = Number(m[1]), mm = Number(m[2]);
      if (n > 0 && n < mm) return { kind: "nm", n, m: mm };
      throw new FlagError("structures", `"${words[0]}" needs 0 < N < M`);
    }
  }
  if (set.size === 1 && (set.has("row") || set.has("column"))) {
    throw new FlagError(
      "structures",
      "rows and columns are always pruned together: use 'row column'",
    );
  }
  throw new FlagError(
    "structures",
    `unknown structure "${list.join(" ")}" (use 'row column', 'element' or N:M such as 2:4)`,
  );
}

/**
 * Rewrites `--kebab-case` to `--snake_case`, spreads argparse-style list values
 * (`--structures row column` → `--structures row --structures column`), and binds the next word
 * to a valued flag as `--flag=value` (so that `--max_correlate -1` works).
 */
function normaliseArgv(argv: readonly string[]): string[] {
  const out: string[] = [];
  let list: { name: string; count: number } | null = null;
  const closeList = () => {
    if (list && list.count === 0) out.push(`--${list.name}`); // parseArgs reports the missing value
    list = null;
  };
  for (let i = 0; i < argv.length; i++) {
    const raw = argv[i];
    const isFlag = (raw.startsWith("--") && raw.length > 2) || raw === "-h";
    if (!isFlag && list) {
      for (const p of raw.split(",")) out.push(`--${list.name}`, p);
      list.count++;
      continue;
    }
    if (!isFlag) {
      out.push(raw);
      continue;
    }
    closeList();
    if (raw === "-h") {
      out.push("--help");
      continue;
    }
    const eq = raw.indexOf("=");
    const name = (eq < 0 ? raw.slice(2) : raw.slice(2, eq)).replaceAll("-", "_");
    const spec = SPEC_BY_NAME.get(name);
    if (spec?.type === "list") {
      list = { name, count: 0 };
      if (eq >= 0) {
        for (const p of raw.slice(eq + 1).split(",")) out.push(`--${name}`, p);
        list.count++;
      }
    } else if (eq >= 0) out.push(`--${name}=${raw.slice(eq + 1)}`);
    else if (
      spec && spec.type !== "boolean" && i + 1 < argv.length && !/^--[a-z]/i.test(argv[i + 1])
    ) {
      out.push(`--${name}=${argv[++i]}`);
    } else out.push(`--${name}`);
  }
  closeList();
  return out;
}

function toNumber(spec: FlagSpec, v: string): number {
  const x = Number(v);
  if (v.trim() === "" || !Number.isFinite(x)) {
    throw new FlagError(spec.name, `"${v}" is not a number`);
  }
  if (spec.type === "int" && !Number.isInteger(x)) {
    throw new FlagError(spec.name, `"${v}" is not an integer`);
  }
  return x;
}

/**
 * Parses a command line into the resolved settings, without validating combinations (see
 * {@link validateConfig}). Unknown flags, missing values and non-numbers throw {@link FlagError}.
 * @param argv the arguments (e.g. `Deno.args`)
 * @param env environment lookup for `LOG_ROOT` (default: none)
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseFlags } from "./cli_flags.ts";
 * const cfg = parseFlags(["--sparsity", "0.3", "--structures", "row", "column", "--use-iad"]);
 * assert.equal(cfg.sparsity, 0.3);
 * assert.deepEqual(cfg.structures, ["row", "column"]);
 * assert.equal(cfg.use_iad, true); // kebab-case alias of --use_iad
 * ```
 */
export function parseFlags(
  argv: readonly string[],
  env: (name: string) => string | undefined = () => undefined,
): SurgeonConfig {
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean }> = {};
  for (const f of FLAGS) {
    options[f.name] = f.type === "boolean"
      ? { type: "boolean" }
      : { type: "string", multiple: f.type === "list" };
  }
  let values: Record<string, unknown>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: normaliseArgv(argv),
      options,
      strict: true,
      allowPositionals: true,
    }));
  } catch (e) {
    const msg = (e as Error).message;
    const m = /'--?([^' ]+)/.exec(msg);
    const flag = m ? m[1] : "?";
    if (/Unknown option/.test(msg)) throw new FlagError(flag, `unknown flag (see --help)`);
    if (/argument missing|ambiguous/.test(msg)) throw new FlagError(flag, "needs a value");
    if (/does not take an argument/.test(msg)) {
      throw new FlagError(flag, "is a switch and takes no value");
    }
    throw new FlagError(flag, msg.replace(/^[^:]*: /, ""));
  }
  if (positionals.length > 0) {
    throw new FlagError(
      "",
      `unexpected argument "${positionals[0]}" (flags take the form --name value; see --help)`,
    );
  }
  const cfg: Record<string, unknown> = {};
  for (const f of FLAGS) {
    const v = values[f.name];
    if (v === undefined) {
      cfg[f.name] = Array.isArray(f.default) ? [...f.default] : f.default;
      continue;
    }
    if (f.type === "boolean") cfg[f.name] = v;
    else if (f.type === "list") {
      const list = (v as string[]).map((s) => s.trim()).filter((s) => s !== "");
      if (list.length === 0) throw new FlagError(f.name, "needs at least one value");
      cfg[f.name] = list;
    } else if (f.type === "string") cfg[f.name] = v;
    else cfg[f.name] = toNumber(f, v as string);
  }
  if (cfg.log_root == null) cfg.log_root = env("LOG_ROOT") || "runs";
  return cfg as unknown as SurgeonConfig;
}

const DATASETS = ["wikitext2", "c4", "ptb", "tinystories"];
const SPLITS = ["train", "valid", "validation", "val", "test"];

/**
 * Checks every value and combination of the settings (no file or network access; see
 * {@link checkModelFolder} for the model folder). Throws {@link FlagError} naming the flag.
 * @param cfg settings from {@link parseFlags}
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseFlags, validateConfig } from "./cli_flags.ts";
 * validateConfig(parseFlags(["--curvature", "kfac", "--use_iad"])); // passes
 * assert.throws(() => validateConfig(parseFlags(["--sparsity", "-0.1"])));
 * ```
 */
export function validateConfig(cfg: SurgeonConfig): void {
  const inRange = (name: keyof SurgeonConfig, ok: boolean, what: string) => {
    if (!ok) throw new FlagError(name, `${cfg[name]} is out of range: ${what}`);
  };
  if (cfg.model_str.trim() === "") {
    throw new FlagError("model_str", "must name a Hub id or a folder");
  }
  inRange("sparsity", cfg.sparsity >= 0 && cfg.sparsity < 1, "must be in [0, 1)");
  const structure = structureOf(cfg.structures);
  if (!["identity", "activations", "kfac"].includes(cfg.curvature)) {
    throw new FlagError(
      "curvature",
      `unknown curvature "${cfg.curvature}" (use identity, activations or kfac)`,
    );
  }
  inRange("shots", cfg.shots >= 1, "must be ≥ 1");
  inRange("nsamples", cfg.nsamples >= 1, "must be ≥ 1");
  if (cfg.seqlen !== null) inRange("seqlen", cfg.seqlen >= 2, "must be ≥ 2");
  if (cfg.eval_samples !== null) inRange("eval_samples", cfg.eval_samples >= 1, "must be ≥ 1");
  inRange(
    "seed",
    cfg.seed >= 0 && Number.isSafeInteger(cfg.seed),
    "must be a non-negative integer",
  );
  inRange("damp_g", cfg.damp_g >= 0, "must be ≥ 0");
  inRange("damp_a", cfg.damp_a >= 0, "must be ≥ 0");
  inRange("max_correlate", cfg.max_correlate >= -1, "must be -1, 0 or a positive chunk size");
  inRange(
    "curvature_groups",
    cfg.curvature_groups >= 1,
    "must be a positive number of layer groups",
  );
  inRange("kpca_iter", cfg.kpca_iter >= 1, "must be ≥ 1");
  inRange("krank", cfg.krank === 1 || cfg.krank === 2, "must be 1 or 2");
  inRange("fisher_samples", cfg.fisher_samples >= 0, "must be ≥ 0");
  inRange("max_outgrad", cfg.max_outgrad >= 0, "must be ≥ 0 (0 = off)");
  inRange("skip", cfg.skip >= 0 && cfg.skip < cfg.shots, `must be in [0, shots = ${cfg.shots})`);
  inRange("lora_lr", cfg.lora_lr > 0, "must be > 0");
  inRange("lora_subset", cfg.lora_subset > 0 && cfg.lora_subset <= 1, "must be in (0, 1]");
  inRange("lora_epochs", cfg.lora_epochs >= 1, "must be ≥ 1");
  if (cfg.schedule !== "linear") {
    throw new FlagError("schedule", `unknown schedule "${cfg.schedule}" (only linear exists)`);
  }
  for (const d of cfg.eval_langs) {
    if (!DATASETS.includes(d)) {
      throw new FlagError("eval_langs", `unknown dataset "${d}" (use ${DATASETS.join(", ")})`);
    }
  }
  if (new Set(cfg.eval_langs).size !== cfg.eval_langs.length) {
    throw new FlagError("eval_langs", "lists a dataset twice");
  }
  if (!DATASETS.includes(cfg.train_lang)) {
    throw new FlagError(
      "train_lang",
      `unknown dataset "${cfg.train_lang}" (use ${DATASETS.join(", ")})`,
    );
  }
  if (!SPLITS.includes(cfg.train_split)) {
    throw new FlagError(
      "train_split",
      `unknown split "${cfg.train_split}" (use train, valid or test)`,
    );
  }
  // combinations
  if (!cfg.obd && cfg.curvature === "identity") {
    throw new FlagError(
      "curvature",
      "identity curvature has no OBS form: add --obd (magnitude pruning)",
    );
  }
  const powerIteration = cfg.curvature === "kfac" && (!cfg.use_iad || cfg.krank > 1);
  if (powerIteration && cfg.kpca_iter % 2 === 1) {
    throw new FlagError(
      "kpca_iter",
      `${cfg.kpca_iter} is odd, but power iteration (kfac ${
        cfg.use_iad ? "with --krank 2" : "without --use_iad"
      }) ` +
        "only writes factors after an even number of half-steps (ALGORITHM.md §14 Q1): use an even count such as 10, or --use_iad",
    );
  }
  if (cfg.max_correlate < 0 && structure.kind === "rowcol") {
    throw new FlagError(
      "max_correlate",
      "-1 (one row per chunk) exists only for element and N:M structures",
    );
  }
  if (cfg.use_diagonal && !cfg.diagonal) {
    throw new FlagError("use_diagonal", "needs --diagonal (the diagonal must be estimated)");
  }
  if (cfg.use_diagonal && cfg.curvature !== "kfac") {
    throw new FlagError("use_diagonal", "needs --curvature kfac");
  }
  if ((cfg.eigenfix || cfg.rank1cost) && cfg.krank !== 2) {
    throw new FlagError(cfg.eigenfix ? "eigenfix" : "rank1cost", "only applies with --krank 2");
  }
  if (cfg.krank === 2 && cfg.curvature !== "kfac") {
    throw new FlagError("krank", "2 needs --curvature kfac");
  }
  if (cfg.reuse && cfg.curvature !== "kfac") {
    throw new FlagError("reuse", "only applies to kfac power iteration");
  }
  if (cfg.reuse && cfg.curvature_groups > 1) {
    throw new FlagError(
      "reuse",
      "keeps the previous shot's factors on the GPU; it cannot be combined with --curvature_groups > 1",
    );
  }
  if (cfg.double) {
    throw new FlagError(
      "double",
      "float64 accumulation is not available on WebGPU (WGSL has no f64)",
    );
  }
  if (cfg.zerofix8) {
    throw new FlagError(
      "zerofix8",
      "is broken in the reference (ALGORITHM.md §14 Q11) and not implemented",
    );
  }
  if (cfg.save_curvature !== 0) {
    throw new FlagError("save_curvature", "the diagnostic mini-Fisher is not implemented; use 0");
  }
  if (cfg.batch_size !== 1) {
    throw new FlagError("batch_size", "only 1 (the reference's loaders hard-code it)");
  }
  if (cfg.log_lora) throw new FlagError("log_lora", "the diagnostic LoRA fits are not implemented");
  if (cfg.newdata && cfg.train_lang === "c4" && cfg.nsamples * cfg.shots > 1e6) {
    throw new FlagError("nsamples", "newdata with C4 would need more than a million windows");
  }
}

/**
 * Checks that a local model folder exists and holds a supported config and weights; Hub ids
 * (`org/name`) pass (they are checked when downloaded). Throws {@link FlagError} for
 * `--model_str`.
 * @param modelStr the `--model_str` value
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkModelFolder, FlagError } from "./cli_flags.ts";
 * await checkModelFolder("facebook/opt-125m"); // a Hub id: checked when downloaded
 * await assert.rejects(checkModelFolder("/no/such/folder"), FlagError);
 * ```
 */
export async function checkModelFolder(modelStr: string): Promise<void> {
  let isDir = false;
  try {
    isDir = (await Deno.stat(modelStr)).isDirectory;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new FlagError("model_str", `cannot read ${modelStr}: ${(e as Error).message}`);
    }
  }
  if (!isDir) {
    if (/^[A-Za-z0-9][\w.-]*\/[\w.-]+$/.test(modelStr) && !modelStr.startsWith(".")) return;
    throw new FlagError(
      "model_str",
      `"${modelStr}" is neither a folder nor a Hub id of the form org/name`,
    );
  }
  const has = async (f: string) => {
    try {
      return (await Deno.stat(`${modelStr}/${f}`)).isFile;
    } catch {
      return false;
    }
  };
  if (!await has("config.json")) {
    throw new FlagError("model_str", `folder ${modelStr} has no config.json`);
  }
  let modelType: unknown;
  try {
    modelType = JSON.parse(await Deno.readTextFile(`${modelStr}/config.json`)).model_type;
  } catch (e) {
    throw new FlagError(
      "model_str",
      `${modelStr}/config.json is not valid JSON (${(e as Error).message})`,
    );
  }
  if (!["opt", "llama", "mistral"].includes(String(modelType))) {
    throw new FlagError(
      "model_str",
      `${modelStr}/config.json has model_type "${modelType}"; supported: opt, llama, mistral`,
    );
  }
  if (await has("model.safetensors") || await has("model.safetensors.index.json")) return;
  if (await has("pytorch_model.bin")) {
    throw new FlagError(
      "model_str",
      `folder ${modelStr} has only pytorch_model.bin; convert it to model.safetensors (Python: ` +
        `AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True))`,
    );
  }
  throw new FlagError(
    "model_str",
    `folder ${modelStr} has no weights (model.safetensors or model.safetensors.index.json)`,
  );
}

/**
 * Creates the log root if needed and checks that it can be written (a sandboxed run without
 * write permission there fails here, before any work). Throws {@link FlagError} for `--log_root`.
 * @param logRoot the `--log_root` value
 *
 * @example Usage
 * ```ts ignore
 * import { checkLogRoot } from "./cli_flags.ts";
 * await checkLogRoot("runs"); // creates runs/ if needed, or throws FlagError for --log_root
 * ```
 */
export async function checkLogRoot(logRoot: string): Promise<void> {
  try {
    await Deno.mkdir(logRoot, { recursive: true });
  } catch (e) {
    throw new FlagError("log_root", `cannot create or write ${logRoot}: ${(e as Error).message}`);
  }
}

/**
 * The `--help` text: usage, then every flag with its default and explanation, by section.
 * @param program how the program is invoked (first usage line)
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { helpText } from "./cli_flags.ts";
 * const help = helpText("deno task prune");
 * assert.ok(help.startsWith("Usage: deno task prune [--flag value …]"));
 * assert.ok(help.includes("--sparsity"));
 * ```
 */
export function helpText(program = "deno task surgeon"): string {
  const lines = [
    `Usage: ${program} [--flag value …]`,
    "",
    "Prunes an OPT or Llama model with LLM Surgeon (or magnitude / L-OBD / Kron-OBD), reports",
    "perplexity after every shot, and writes a run folder (config.json, metrics.jsonl,",
    "summary.json, report.md with plots, checkpoints for --resume) under --log_root.",
    "Flags accept their reference names (--max_correlate) and kebab-case (--max-correlate);",
    "lists take several words (--structures row column).",
  ];
  let group = "";
  for (const f of FLAGS) {
    if (f.group !== group) {
      group = f.group;
      lines.push("", `${group[0].toUpperCase()}${group.slice(1)}:`);
    }
    const kebab = f.name.includes("_") ? ` (--${f.name.replaceAll("_", "-")})` : "";
    const value = f.type === "boolean"
      ? ""
      : f.type === "list"
      ? " <v …>"
      : f.type === "string"
      ? " <s>"
      : " <n>";
    const def = f.default === null || f.type === "boolean"
      ? ""
      : ` [default: ${Array.isArray(f.default) ? f.default.join(" ") : f.default}]`;
    lines.push(`  --${f.name}${value}${kebab}${def}`);
    lines.push(...wrap(f.help, 88).map((l) => `      ${l}`));
  }
  lines.push(
    "",
    "Examples:",
    "  deno task surgeon --model_str facebook/opt-125m --structures row column --use_iad --shots 40",
    "  deno task surgeon --model_str ../shared/data/models/hf/stories260K --data_dir ../shared/data \\",
    "      --train_split valid --nsamples 8 --shots 4 --sparsity 0.3 --use_iad --eval_samples 16",
  );
  return lines.join("\n");
}

function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = "";
  for (const w of text.split(" ")) {
    if (line && line.length + 1 + w.length > width) {
      out.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) out.push(line);
  return out;
}

/**
 * Settings that decide a run's results, for the run folder's name and for checking that a
 * `--resume` continues the same run: everything except output placement and network options.
 * @param cfg resolved settings
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseFlags, resultSettings } from "./cli_flags.ts";
 * const a = resultSettings(parseFlags(["--log_root", "/tmp/a"]));
 * const b = resultSettings(parseFlags(["--log_root", "/tmp/b"]));
 * assert.deepEqual(a, b); // where the run is written does not change its results
 * assert.ok(!("log_root" in a));
 * ```
 */
export function resultSettings(cfg: SurgeonConfig): Record<string, unknown> {
  const skip = new Set([
    "log_root",
    "resume",
    "help",
    "offline",
    "save_model",
    "lr",
    "epochs",
    "curvature_dev",
    "buffer_dev",
    "lowmem",
    "low_memory", // the same results up to f32 rounding, with less memory (resumable either way)
    "curvature_groups", // the same factors, bit for bit
  ]);
  return Object.fromEntries(Object.entries(cfg).filter(([k]) => !skip.has(k)));
}

/**
 * The options of the pruner's multi-shot schedule (`runSchedule`) for a set of settings: the
 * one place where flags become curvature, pruning and schedule options.
 * @param cfg validated settings
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseFlags, scheduleOptions } from "./cli_flags.ts";
 * const opts = scheduleOptions(parseFlags(["--structures", "2:4", "--use_iad"]));
 * assert.deepEqual(opts.structure, { n: 2, m: 4 });
 * assert.equal(opts.useIad, true);
 * ```
 */
export function scheduleOptions(cfg: SurgeonConfig): {
  kind: "identity" | "activations" | "kfac";
  useIad: boolean;
  kpcaIter: number;
  krank: number;
  fisherSamples: number;
  maxOutgrad: number;
  diagonal: boolean;
  curvatureGroups: number;
  structure: "element" | "rowcol" | { n: number; m: number };
  obd: boolean;
  dampG: number;
  dampA: number;
  maxCorrelate: number;
  addupdate: boolean;
  strictmax: boolean;
  lowMemory: boolean;
  updateScale: number;
  useDiagonal: boolean;
  rank1cost: boolean;
  eigenfix: boolean;
  sparsity: number;
  shots: number;
  nsamples: number;
  newdata: boolean;
  reuse: boolean;
  lora: { lr: number; subset: number; epochs: number } | null;
  seed: number;
} {
  const s = structureOf(cfg.structures);
  return {
    kind: cfg.curvature,
    useIad: cfg.use_iad,
    kpcaIter: cfg.kpca_iter,
    krank: cfg.krank,
    fisherSamples: cfg.fisher_samples,
    maxOutgrad: cfg.max_outgrad,
    diagonal: cfg.diagonal,
    curvatureGroups: cfg.curvature_groups,
    structure: s.kind === "nm" ? { n: s.n, m: s.m } : s.kind,
    obd: cfg.obd,
    dampG: cfg.damp_g,
    dampA: cfg.damp_a,
    maxCorrelate: cfg.max_correlate,
    addupdate: cfg.addupdate,
    strictmax: cfg.strictmax,
    lowMemory: cfg.low_memory,
    updateScale: cfg.update_scale,
    useDiagonal: cfg.use_diagonal,
    rank1cost: cfg.rank1cost,
    eigenfix: cfg.eigenfix,
    sparsity: cfg.sparsity,
    shots: cfg.shots,
    nsamples: cfg.nsamples,
    newdata: cfg.newdata,
    reuse: cfg.reuse,
    lora: cfg.lora ? { lr: cfg.lora_lr, subset: cfg.lora_subset, epochs: cfg.lora_epochs } : null,
    seed: cfg.seed,
  };
}

/**
 * A script's preset flags with the user's flags on top: every flag the user gives replaces the
 * preset's value for that flag (lists included), everything else keeps the preset.
 * @param preset the script's flags
 * @param user the flags given on the command line
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { mergeArgs } from "./cli_flags.ts";
 * assert.deepEqual(
 *   mergeArgs(["--structures", "row", "column", "--shots", "40"], ["--structures", "element"]),
 *   ["--shots=40", "--structures", "element"],
 * );
 * ```
 */
export function mergeArgs(preset: readonly string[], user: readonly string[]): string[] {
  const groups = (argv: readonly string[]) => {
    const out: { name: string; tokens: string[] }[] = [];
    for (const t of normaliseArgv(argv)) {
      if (t.startsWith("--")) {
        const name = t.slice(2).split("=")[0];
        const last = out[out.length - 1];
        // list values come as repeated "--name v" pairs: keep them in one group
        if (last && last.name === name && SPEC_BY_NAME.get(name)?.type === "list") {
          last.tokens.push(t);
        } else out.push({ name, tokens: [t] });
      } else if (out.length > 0) out[out.length - 1].tokens.push(t);
      else out.push({ name: "", tokens: [t] });
    }
    return out;
  };
  const given = new Set(groups(user).map((g) => g.name));
  return [
    ...groups(preset).filter((g) => !given.has(g.name)).flatMap((g) => g.tokens),
    ...normaliseArgv(user),
  ];
}
