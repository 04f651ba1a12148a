/**
 * The command line: prune a model with LLM Surgeon (or magnitude, L-OBD, Kron-OBD) with the
 * reference's flags, report perplexity after every shot, and keep everything in a run folder
 * that `--resume` can continue after a crash or a kill.
 *
 * ```sh
 * deno task surgeon --model_str facebook/opt-125m --structures row column --use_iad
 * deno task surgeon --help
 * ```
 *
 * @module
 */
import { gpu } from "../kernels/device.ts";
import { loadModel } from "../model/load.ts";
import type { CausalLM, PrunableLinear } from "../model/types.ts";
import { runSchedule, sparsityStats } from "../pruner/mod.ts";
import { calibrationWindows } from "../eval/calibration.ts";
import { datasetName, evalSplit, loadSplit, testStream } from "../eval/datasets.ts";
import { perplexity } from "../eval/perplexity.ts";
import { formatDuration, Progress } from "../eval/progress.ts";
import { keptPlotSvg, type ModuleKept, perplexityPlotSvg, reportMarkdown } from "../eval/report.ts";
import { type MetricsLine, RunFolder, runName, TOOLKIT_VERSION } from "../eval/run.ts";
import {
  checkLogRoot,
  checkModelFolder,
  FlagError,
  helpText,
  parseFlags,
  resultSettings,
  scheduleOptions,
  type SurgeonConfig,
  validateConfig,
} from "./cli_flags.ts";

/** Achieved sparsity of the prunable weights (what the pruner's `sparsityStats` returns). */
export interface SparsityReport {
  /** Fraction of zero entries over all prunable weights. */
  overall: number;
  /** The same per module kind. */
  perKind: Record<string, number>;
  /** Per module: kept fraction. */
  perModule: { name: string; kind: string; layer: number; kept: number }[];
}

/** The model and pruning layers the command line drives (injectable for tests). */
export interface SurgeonDeps {
  /** Loads a model from a Hub id or folder. */
  loadModel(
    idOrPath: string,
    opts: { revision?: string; offline?: boolean; onProgress?: (msg: string) => void },
  ): Promise<CausalLM>;
  /** Runs shots `startShot + 1 … shots`, calling `onShot` after each. */
  runSchedule(
    model: CausalLM,
    calibration: Int32Array[],
    opts: ReturnType<typeof scheduleOptions> & {
      startShot: number;
      onProgress?: (msg: string) => void;
    },
    hooks: {
      onShot?: (shot: number, report: unknown) => Promise<void>;
      onProgress?: (msg: string) => void;
    },
  ): Promise<void>;
  /** Achieved sparsity of the model. */
  sparsityStats(model: CausalLM): Promise<SparsityReport>;
  /** Adapter description for config.json. */
  adapterName(): Promise<string>;
}

/** The real model and pruning layers. */
export const defaultDeps: SurgeonDeps = {
  loadModel,
  runSchedule,
  sparsityStats,
  adapterName: async () => (await gpu()).adapter.description,
};

/** What a finished run reports. */
export interface SurgeonResult {
  /** The run folder. */
  dir: string;
  /** Contents of summary.json. */
  summary: Record<string, unknown>;
}

/** Module-level sparsity per kind computed from the model, in case the pruner's stats lack it. */
async function modulesOf(model: CausalLM): Promise<ModuleKept[]> {
  const out: ModuleKept[] = [];
  for (const lin of model.linears() as PrunableLinear[]) {
    const w = await lin.weight.read();
    let nz = 0;
    for (const v of w) if (v !== 0) nz++;
    out.push({ layer: lin.layer, kind: lin.kind, kept: nz / w.length });
  }
  return out;
}

/**
 * Runs one pruning experiment end to end: validate, open the run folder, load the model and
 * data, evaluate the dense model, run the shots (evaluating and checkpointing after each), then
 * write summary.json, report.md with its plots and, with `--save_model`, the pruned model.
 * @param cfg settings (from {@link parseFlags})
 * @param opts `log` receives progress lines; `deps` replaces the model/pruner layers
 * @example
 * ```ts ignore
 * const cfg = parseFlags(["--model_str", "../shared/data/models/hf/stories260K", "--data_dir",
 *   "../shared/data", "--train_split", "valid", "--shots", "2", "--nsamples", "4", "--use_iad"]);
 * const { dir, summary } = await runSurgeon(cfg);
 * ```
 */
export async function runSurgeon(
  cfg: SurgeonConfig,
  opts: { log?: (msg: string) => void; deps?: SurgeonDeps } = {},
): Promise<SurgeonResult> {
  const log = opts.log ?? ((m: string) => console.log(m));
  validateConfig(cfg);
  await checkModelFolder(cfg.model_str);
  await checkLogRoot(cfg.log_root);
  const settings = resultSettings(cfg);
  const name = runName(settings);
  const run = await RunFolder.open(cfg.log_root, name, { resume: cfg.resume, settings });
  log(
    `run folder ${run.dir}${cfg.resume ? ` (resuming after shot ${run.state.completedShot})` : ""}`,
  );
  if (cfg.resume && run.state.completedShot >= cfg.shots) {
    const summary = await run.readJson<Record<string, unknown>>("summary.json");
    if (summary) {
      log("the run is already complete");
      return { dir: run.dir, summary };
    }
  }
  try {
    const deps = opts.deps ?? defaultDeps;
    const started = performance.now();

    log(`loading model ${cfg.model_str}`);
    const model = await deps.loadModel(cfg.model_str, {
      revision: cfg.revision,
      offline: cfg.offline || undefined, // unset: the Hub client follows HF_HUB_OFFLINE
      onProgress: log,
    });
    try {
      if (cfg.lora && model.family !== "opt") {
        throw new FlagError(
          "lora",
          `LoRA adapters exist for OPT attention projections only; ${cfg.model_str} is ${model.family}`,
        );
      }
      const tokenizer = model.tokenizer;
      if (!tokenizer) throw new FlagError("model_str", `${cfg.model_str} has no tokenizer files`);
      const seqlen = cfg.seqlen ?? model.maxSeqLen;
      if (seqlen > model.maxSeqLen) {
        throw new FlagError(
          "seqlen",
          `${seqlen} exceeds the model's context length ${model.maxSeqLen}`,
        );
      }

      // data
      const dataOpts = {
        dataDir: cfg.data_dir,
        offline: cfg.offline || undefined,
        onProgress: log,
      };
      const tests = new Map<string, Int32Array>();
      for (const d of cfg.eval_langs) {
        const t0 = performance.now();
        const split = await loadSplit(datasetName(d), evalSplit(datasetName(d)), dataOpts);
        const ids = testStream(split, tokenizer, seqlen);
        tests.set(d, ids);
        log(
          `eval data ${d} (${split.split}, ${split.source}): ${ids.length} tokens, ` +
            `${Math.floor(ids.length / seqlen)} windows of ${seqlen}, tokenized in ${
              secs(t0).toFixed(1)
            }s`,
        );
      }
      const t0 = performance.now();
      const train = await loadSplit(datasetName(cfg.train_lang), cfg.train_split, dataOpts);
      const total = cfg.nsamples * (cfg.newdata ? cfg.shots : 1);
      const calibration = calibrationWindows(train, tokenizer, {
        nsamples: total,
        seqlen,
        seed: cfg.seed,
      });
      log(
        `calibration: ${total} windows of ${seqlen} tokens from ${cfg.train_lang} ${train.split} (${
          secs(t0).toFixed(1)
        }s)`,
      );

      if (!await run.readJson("config.json")) {
        await run.writeJson("config.json", {
          run: name,
          settings,
          resolved: { ...cfg, seqlen },
          toolkit_version: TOOLKIT_VERSION,
          deno: Deno.version,
          adapter: await deps.adapterName(),
          model: { family: model.family, source: model.sourceDir, maxSeqLen: model.maxSeqLen },
          started: new Date().toISOString(),
        });
      }

      const evaluate = async (
        shot: number,
      ): Promise<{ ppl: Record<string, number>; seconds: number }> => {
        const e0 = performance.now();
        const ppl: Record<string, number> = {};
        for (const [d, ids] of tests) {
          const r = await perplexity(model, ids, {
            seqlen,
            maxWindows: cfg.eval_samples,
            label: `${d} (shot ${shot})`,
            onProgress: log,
          });
          ppl[d] = r.ppl;
        }
        return { ppl, seconds: secs(e0) };
      };
      const metricsLine = async (
        shot: number,
        phase: MetricsLine["phase"],
        ev: { ppl: Record<string, number>; seconds: number },
        seconds: Record<string, number>,
        extra: Record<string, unknown> = {},
      ): Promise<MetricsLine> => {
        const stats = await deps.sparsityStats(model);
        return {
          shot,
          phase,
          target_sparsity: shot === 0 ? 0 : (cfg.sparsity * shot) / cfg.shots,
          sparsity: stats.overall,
          sparsity_per_kind: stats.perKind,
          ppl: ev.ppl,
          seconds: { ...seconds, eval: ev.seconds },
          time: new Date().toISOString(),
          ...Object.fromEntries(
            Object.entries(extra).filter(([k]) => !(k in { sparsity: 1, target: 1 })),
          ),
        };
      };

      let completed = run.state.completedShot;
      if (completed < 0) {
        const ev = await evaluate(0);
        const line = await metricsLine(0, "dense", ev, {});
        await run.commitShot(0, [line], null);
        log(`dense: ${pplText(ev.ppl)}`);
        completed = 0;
      } else {
        completed = await run.restore(model);
        log(`restored the weights after shot ${completed}`);
        if (cfg.reuse && completed >= 1 && completed < cfg.shots) {
          log(
            "warning: --reuse seeds each shot's power iteration with the previous shot's factors, " +
              "which are not checkpointed: the first resumed shot starts from scratch, so the result " +
              "can differ slightly from an uninterrupted run",
          );
        }
      }

      const startShot = Math.max(completed, cfg.skip);
      if (startShot < cfg.shots) {
        const shots = new Progress("shots", cfg.shots - startShot, "shots");
        let shotStart = performance.now();
        let shotsDone = 0;
        // calibration-pass lines get the run's elapsed time and the estimate for the remaining shots
        const scheduleLog = (m: string) =>
          log(/^(curvature|calibration)/.test(m) ? `${m} | ${shots.line(shotsDone)}` : m);
        await deps.runSchedule(model, calibration, {
          ...scheduleOptions(cfg),
          startShot,
          onProgress: scheduleLog,
        }, {
          onProgress: scheduleLog,
          onShot: async (shot, report) => {
            const shotSeconds = secs(shotStart);
            const ev = await evaluate(shot);
            const extra = shotExtras(report);
            // phases: the pruner reports the pruning step; the rest of the shot is curvature
            // estimation (and the LoRA step, when on)
            const phases = { ...extra.seconds };
            if (phases.curvature === undefined) {
              phases.curvature = Math.max(0, shotSeconds - (phases.prune ?? 0));
            }
            const line = await metricsLine(shot, "shot", ev, phases, extra.fields);
            await run.commitShot(shot, [line], model);
            log(
              `${shots.line(shot - startShot)} | shot ${shot}: target ${
                (100 * line.target_sparsity).toFixed(2)
              }%, ` +
                `achieved ${(100 * line.sparsity).toFixed(2)}%, ${pplText(ev.ppl)}`,
            );
            shotsDone = shot - startShot;
            shotStart = performance.now();
          },
        });
      }

      // summary and report
      const metrics = run.metrics;
      const stats = await deps.sparsityStats(model);
      const modules: ModuleKept[] = stats.perModule?.length
        ? stats.perModule.map((m) => ({ layer: m.layer, kind: m.kind, kept: m.kept }))
        : await modulesOf(model);
      const dense = metrics.find((m) => m.shot === 0);
      const last = metrics[metrics.length - 1];
      const computeSeconds = metrics.reduce(
        (a, m) => a + Object.values(m.seconds).reduce((x, y) => x + y, 0),
        0,
      );
      const summary = {
        run: name,
        dense_ppl: dense?.ppl ?? {},
        final_ppl: last?.ppl ?? {},
        sparsity: stats.overall,
        sparsity_per_kind: stats.perKind,
        target_sparsity: cfg.sparsity,
        shots: cfg.shots,
        seconds: computeSeconds,
        session_seconds: secs(started),
        kept_per_module: stats.perModule,
        finished: new Date().toISOString(),
      };
      await run.writeText("perplexity.svg", perplexityPlotSvg(metrics));
      await run.writeText("kept.svg", keptPlotSvg(modules));
      await run.writeText(
        "report.md",
        reportMarkdown({
          name,
          settings: { ...cfg, seqlen },
          metrics,
          modules,
          seconds: computeSeconds,
          plots: { ppl: "perplexity.svg", kept: "kept.svg" },
        }),
      );
      if (cfg.save_model) {
        log(`saving the pruned model to ${run.dir}/model`);
        await model.save(`${run.dir}/model`);
      }
      await run.writeJson("summary.json", summary);
      log(
        `done in ${formatDuration(secs(started))}: ${pplText(summary.final_ppl)} at ${
          (100 * stats.overall).toFixed(2)
        }% sparsity`,
      );
      log(`report: ${run.dir}/report.md`);
      return { dir: run.dir, summary };
    } finally {
      model.dispose();
    }
  } catch (e) {
    // a run that failed before committing anything leaves no folder behind
    if (run.state.completedShot < 0) {
      await Deno.remove(run.dir, { recursive: true }).catch(() => {});
    }
    throw e;
  }
}

function secs(t0: number): number {
  return (performance.now() - t0) / 1000;
}

function pplText(ppl: Record<string, number>): string {
  return Object.entries(ppl).map(([d, v]) => `ppl ${d} ${v.toFixed(3)}`).join(", ");
}

/** Numbers worth keeping from the pruner's shot report (threshold, timings, …). */
function shotExtras(
  report: unknown,
): { seconds: Record<string, number>; fields: Record<string, unknown> } {
  const seconds: Record<string, number> = {};
  const fields: Record<string, unknown> = {};
  if (!report || typeof report !== "object") return { seconds, fields };
  for (const [k, v] of Object.entries(report as Record<string, unknown>)) {
    if (k === "seconds" && typeof v === "number") seconds.prune = v;
    else if (k === "seconds" && v && typeof v === "object") {
      for (const [p, s] of Object.entries(v as Record<string, unknown>)) {
        if (typeof s === "number") seconds[p] = s;
      }
    } else if (typeof v === "number" || typeof v === "string" || typeof v === "boolean") {
      fields[k] = v;
    }
  }
  return { seconds, fields };
}

/**
 * The command-line entry point: parses `args`, prints help or a flag error (exit code 2), runs,
 * and returns the process exit code.
 * @param args command-line arguments
 * @param program name shown in the usage line
 */
export async function main(args: string[], program = "deno task surgeon"): Promise<number> {
  let cfg: SurgeonConfig;
  try {
    cfg = parseFlags(args, (n) => {
      try {
        return Deno.env.get(n);
      } catch {
        return undefined;
      }
    });
    if (cfg.help) {
      console.log(helpText(program));
      return 0;
    }
    validateConfig(cfg);
    await checkModelFolder(cfg.model_str);
    await checkLogRoot(cfg.log_root);
  } catch (e) {
    if (e instanceof FlagError) {
      console.error(`error: ${e.message}\n(run with --help for every flag)`);
      return 2;
    }
    throw e;
  }
  try {
    await runSurgeon(cfg);
    return 0;
  } catch (e) {
    if (e instanceof FlagError) {
      console.error(`error: ${e.message}`);
      return 2;
    }
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
