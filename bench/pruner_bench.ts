/**
 * Acceptance run of the pruning methods on a real small model: WikiText-2 calibration windows from
 * the validation split, test perplexity before and after pruning with each method at equal target
 * sparsity. Prints one JSON line per (method, structure, sparsity) and a progress line per shot on
 * stderr.
 *
 * ```
 * ./deno run -A bench/pruner_bench.ts --model ../shared/data/models/hf/opt-tiny \
 *   --structures "row column" --sparsity 0.2 --methods magnitude,l-obd,kron-obd,surgeon
 * ```
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

const { values: a } = parseArgs({
  options: {
    model: { type: "string", default: "../shared/data/models/hf/opt-tiny" },
    data: { type: "string", default: "../shared/data" },
    structures: { type: "string", default: "row column" },
    sparsity: { type: "string", default: "0.2" },
    methods: { type: "string", default: "magnitude,l-obd,kron-obd,surgeon" },
    shots: { type: "string", default: "" },
    nsamples: { type: "string", default: "16" },
    seqlen: { type: "string", default: "256" },
    windows: { type: "string", default: "40" },
    "max-correlate": { type: "string", default: "" },
    seed: { type: "string", default: "100" },
  },
});

const structure = parseStructures([a.structures!]);
const sparsity = Number(a.sparsity);
const seqlen = Number(a.seqlen);
const log = (m: string) => console.error(m);
const tok = (await loadModel(a.model!)).tokenizer!;
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

for (const m of a.methods!.split(",")) {
  const name: MethodName = m === "surgeon" ? surgeonFor(structure) : m as MethodName;
  const model = await loadModel(a.model!);
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
  };
  const t0 = performance.now();
  let last = { sparsity: 0, ppl: NaN };
  await runSchedule(model, calib, opts, {
    onProgress: log,
    onShot: async (k, r) => {
      const ppl = k === opts.shots ? (await perplexity(model, test, pplOpts)).ppl : NaN;
      last = { sparsity: r.sparsity, ppl };
      log(
        `${name} shot ${k}/${opts.shots}: sparsity ${r.sparsity.toFixed(4)} ppl ${ppl.toFixed(3)}`,
      );
    },
  });
  console.log(JSON.stringify({
    model: a.model,
    method: name,
    structure: structureName(structure),
    target: sparsity,
    shots: opts.shots,
    nsamples: calib.length,
    seqlen,
    windows: pplOpts.maxWindows,
    denseppl: dense.ppl,
    sparsity: last.sparsity,
    ppl: last.ppl,
    seconds: (performance.now() - t0) / 1000,
  }));
  model.dispose();
}
