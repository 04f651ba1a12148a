/**
 * Acceptance run of the pruning methods on a real small model: WikiText-2 calibration windows from
 * the validation split, test perplexity before and after pruning with each method at equal target
 * sparsity. One JSON line per (method, structure, sparsity):
 * `{"bench": "prune_surgeon-structured_rowcol_0.2", "n": NSAMPLES, "ms": …, "ppl": …, …}`, and a
 * progress line per shot on stderr.
 *
 * Under `deno task bench` it prunes stories260K (MANIFEST.md §8) by 20 % rows and columns with
 * magnitude, K-OBD and LLM Surgeon (2 shots each), 8 calibration windows and 16 test windows of 256
 * tokens, and reports a skip line when the model is not there. Run alone for any setting:
 *
 * ```
 * ./deno run --allow-read bench/pruner_bench.ts --model ../shared/data/models/hf/babyllama-tok105 \
 *   --structures "row column" --sparsity 0.2 --methods magnitude,l-obd,kron-obd,surgeon
 * ```
 *
 * Each line also reports `peak_mib`, the peak GPU buffer memory of the schedule (model included);
 * `--low-memory 1` and `--curvature-groups G` select the memory modes of the command line.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { loadModel } from "../model/load.ts";
import { loadSplit, testStream } from "../eval/datasets.ts";
import { calibrationWindows } from "../eval/calibration.ts";
import { perplexity } from "../eval/perplexity.ts";
import {
  type MethodName,
  parseStructures,
  presetFor,
  runSchedule,
  type ScheduleOptions,
  structureName,
} from "../pruner/mod.ts";

/** Settings of one acceptance run (strings, as on the command line). */
export interface PrunerBenchOptions {
  /** Model folder. */
  model: string;
  /** Folder holding `wikitext-2-raw/`. */
  data: string;
  /** Structures, e.g. "row column", "element", "2:4". */
  structures: string;
  /** Target sparsity. */
  sparsity: string;
  /** Comma-separated methods: magnitude, l-obd, kron-obd, surgeon. */
  methods: string;
  /** Shots of every method ("" = each method's preset). */
  shots: string;
  /** Calibration windows. */
  nsamples: string;
  /** Window length in tokens. */
  seqlen: string;
  /** Test windows for perplexity. */
  windows: string;
  /** `--max_correlate` ("" = preset). */
  "max-correlate": string;
  /** Calibration seed. */
  seed: string;
  /** "1": `--low_memory` (one buffer per factor, one module's inverses at a time). */
  "low-memory": string;
  /** `--curvature_groups` ("1": one pass over all layers). */
  "curvature-groups": string;
}

/** The `deno task bench` settings (see the module doc). */
export const BENCH_DEFAULTS: PrunerBenchOptions = {
  model: "../shared/data/models/hf/stories260K",
  data: "../shared/data",
  structures: "row column",
  sparsity: "0.2",
  methods: "magnitude,kron-obd,surgeon",
  shots: "2",
  nsamples: "8",
  seqlen: "256",
  windows: "16",
  "max-correlate": "",
  seed: "100",
  "low-memory": "",
  "curvature-groups": "1",
};

/**
 * Prunes a fresh copy of the model with each method and reports one line per method.
 *
 * @param emit receives one result line per method
 * @param a the settings (default {@link BENCH_DEFAULTS})
 * @example Usage
 * ```ts ignore
 * await run((r) => console.log(JSON.stringify(r)), { ...BENCH_DEFAULTS, methods: "surgeon" });
 * ```
 */
export async function run(
  emit: (r: Record<string, unknown>) => void,
  a: PrunerBenchOptions = BENCH_DEFAULTS,
): Promise<void> {
  try {
    await Deno.stat(`${a.model}/config.json`);
  } catch {
    emit({ bench: "prune", skipped: `no model at ${a.model}` });
    return;
  }
  const structure = parseStructures([a.structures]);
  const sparsity = Number(a.sparsity);
  const seqlen = Number(a.seqlen);
  const log = (m: string) => console.error(m);
  const tok = (await loadModel(a.model)).tokenizer!;
  const calibData = await loadSplit("wikitext2", "validation", { dataDir: a.data });
  const testData = await loadSplit("wikitext2", "test", { dataDir: a.data });
  const calib = calibrationWindows(calibData, tok, {
    nsamples: Number(a.nsamples),
    seqlen,
    seed: Number(a.seed),
  });
  const test = testStream(testData, tok, seqlen);
  const pplOpts = { seqlen, maxWindows: Number(a.windows) };

  const surgeonFor = (s: typeof structure): MethodName =>
    s === "rowcol"
      ? "surgeon-structured"
      : s === "element"
      ? "surgeon-unstructured"
      : "surgeon-semistructured";

  for (const m of a.methods.split(",")) {
    const name: MethodName = m === "surgeon" ? surgeonFor(structure) : m as MethodName;
    const model = await loadModel(a.model);
    try {
      const dense = await perplexity(model, test, pplOpts);
      const preset = presetFor(name, structure);
      const opts: ScheduleOptions = {
        ...preset,
        kind: preset.kind,
        structure,
        sparsity,
        shots: a.shots ? Number(a.shots) : (preset.shots ?? 1),
        seed: Number(a.seed),
        ...(a["max-correlate"] ? { maxCorrelate: Number(a["max-correlate"]) } : {}),
        lowMemory: a["low-memory"] === "1",
        curvatureGroups: Number(a["curvature-groups"] || "1"),
      };
      const rt = model.linears()[0].weight.rt;
      rt.resetPeak();
      const t0 = performance.now();
      let last = { sparsity: 0, ppl: NaN };
      await runSchedule(model, calib, opts, {
        onProgress: log,
        onShot: async (k, r) => {
          const ppl = k === opts.shots ? (await perplexity(model, test, pplOpts)).ppl : NaN;
          last = { sparsity: r.sparsity, ppl };
          // Perplexity is measured after the last shot only.
          const tail = Number.isNaN(ppl) ? "" : ` ppl ${ppl.toFixed(3)}`;
          log(`${name} shot ${k}/${opts.shots}: sparsity ${r.sparsity.toFixed(4)}${tail}`);
        },
      });
      emit({
        bench: `prune_${name}_${structureName(structure).replace(/\s+/g, "+")}_${sparsity}`,
        n: calib.length,
        ms: Math.round(performance.now() - t0),
        model: a.model,
        shots: opts.shots,
        seqlen,
        windows: pplOpts.maxWindows,
        denseppl: dense.ppl,
        sparsity: last.sparsity,
        ppl: last.ppl,
        // Peak GPU buffer memory of the schedule (model included), MiB.
        peak_mib: Math.round(rt.peakBytes / 2 ** 20 * 10) / 10,
        ...(opts.lowMemory ? { low_memory: true } : {}),
        ...(opts.curvatureGroups! > 1 ? { curvature_groups: opts.curvatureGroups } : {}),
      });
    } finally {
      model.dispose();
    }
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: Object.fromEntries(
      Object.entries(BENCH_DEFAULTS).map(([k, v]) => [k, { type: "string" as const, default: v }]),
    ),
  });
  await run((r) => console.log(JSON.stringify(r)), values as unknown as PrunerBenchOptions);
}
