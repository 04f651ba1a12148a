/**
 * The run report: `report.md` with two SVG plots — perplexity per shot (log scale, one line per
 * dataset, the dense model as a dashed reference) and the fraction of weights kept per decoder
 * layer and module type (a heat map) — plus tables of the numbers behind them.
 *
 * The SVGs are self-contained (no fonts or scripts to fetch) and render in any Markdown viewer
 * that shows images.
 *
 * @module
 */
import type { MetricsLine } from "./run.ts";

/**
 * Kept fraction of one prunable module (from the pruner's sparsity statistics).
 *
 * @example Usage
 * ```ts
 * import type { ModuleKept } from "@llm-surgeon/toolkit";
 * // fc1 of decoder layer 3 keeps 70% of its entries.
 * const cell: ModuleKept = { layer: 3, kind: "fc1", kept: 0.7 };
 * console.log(`${cell.kind}@${cell.layer}: ${100 * cell.kept}%`); // "fc1@3: 70%"
 * ```
 */
export interface ModuleKept {
  /** Decoder layer index. */
  layer: number;
  /** Module kind (q_proj, fc1, …). */
  kind: string;
  /** Fraction of its entries that are non-zero. */
  kept: number;
}

const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777"];
const FONT = `font-family="Helvetica, Arial, sans-serif"`;

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}

/** Ticks for a log axis between lo and hi: 1-2-5 per decade, denser for narrow ranges. */
function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (const steps of [[1, 2, 5], [1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9]]) {
    ticks.length = 0;
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const s of steps) {
        const v = s * 10 ** e;
        if (v >= lo && v <= hi) ticks.push(v);
      }
    }
    if (ticks.length >= 3) return ticks.length > 10 ? ticks.filter((_, i) => i % 2 === 0) : ticks;
  }
  // a very narrow range: five evenly spaced (in log) values
  return Array.from({ length: 5 }, (_, i) => lo * (hi / lo) ** ((i + 0.5) / 5));
}

/** A fraction as a percentage with at most one decimal ("7.5", "30"). */
function pct(f: number): string {
  return String(Math.round(1000 * f) / 10);
}

function fmt(v: number): string {
  if (v >= 1000) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1).replace(/\.0$/, "");
  return v.toPrecision(3).replace(/\.?0+$/, "");
}

/**
 * SVG line chart of perplexity against shot (bottom axis) and target sparsity (top axis), log
 * scale, one coloured line per dataset, the dense perplexity as a dashed line.
 * @param metrics the run's metrics lines (the `shot`/`dense` phases are plotted)
 * @param title chart title
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type MetricsLine, perplexityPlotSvg } from "@llm-surgeon/toolkit";
 * const line = (shot: number, s: number, ppl: number): MetricsLine => ({
 *   shot,
 *   phase: shot === 0 ? "dense" : "shot",
 *   target_sparsity: s,
 *   sparsity: s,
 *   sparsity_per_kind: {},
 *   ppl: { wikitext2: ppl },
 *   seconds: {},
 *   time: "",
 * });
 * const svg = perplexityPlotSvg([line(0, 0, 27.7), line(1, 0.25, 29.1)]);
 * assert.ok(svg.startsWith("<svg") && svg.endsWith("</svg>"));
 * assert.ok(svg.includes("wikitext2"));
 * ```
 */
export function perplexityPlotSvg(
  metrics: MetricsLine[],
  title = "Perplexity after each shot",
): string {
  const pts = metrics.filter((m) => m.phase !== "lora");
  const datasets = [...new Set(pts.flatMap((m) => Object.keys(m.ppl)))];
  const W = 720, H = 420, L = 70, R = 150, T = 62, B = 56;
  const pw = W - L - R, ph = H - T - B;
  const values = pts.flatMap((m) => Object.values(m.ppl)).filter((v) =>
    Number.isFinite(v) && v > 0
  );
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ${FONT}>`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${L}" y="24" font-size="17" font-weight="bold" fill="#111827">${esc(title)}</text>`,
  ];
  if (values.length === 0 || pts.length === 0) {
    out.push(
      `<text x="${W / 2}" y="${
        H / 2
      }" text-anchor="middle" fill="#6b7280">no evaluations yet</text></svg>`,
    );
    return out.join("\n");
  }
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi / lo < 1.2) {
    lo /= 1.1;
    hi *= 1.1;
  }
  lo /= 1.05;
  hi *= 1.05;
  const maxShot = Math.max(1, ...pts.map((m) => m.shot));
  const x = (shot: number) => L + (shot / maxShot) * pw;
  const y = (v: number) =>
    T + ph - ((Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo))) * ph;
  out.push(
    `<rect x="${L}" y="${T}" width="${pw}" height="${ph}" fill="#f9fafb" stroke="#d1d5db"/>`,
  );
  for (const v of logTicks(lo, hi)) {
    out.push(
      `<line x1="${L}" x2="${L + pw}" y1="${y(v).toFixed(1)}" y2="${
        y(v).toFixed(1)
      }" stroke="#e5e7eb"/>`,
      `<text x="${L - 8}" y="${
        (y(v) + 4).toFixed(1)
      }" text-anchor="end" font-size="12" fill="#374151">${fmt(v)}</text>`,
    );
  }
  const step = Math.max(1, Math.ceil(maxShot / 10));
  for (let s = 0; s <= maxShot; s += step) {
    const m = pts.find((p) => p.shot === s);
    out.push(
      `<line x1="${x(s).toFixed(1)}" x2="${x(s).toFixed(1)}" y1="${T + ph}" y2="${
        T + ph + 5
      }" stroke="#6b7280"/>`,
      `<text x="${x(s).toFixed(1)}" y="${
        T + ph + 19
      }" text-anchor="middle" font-size="12" fill="#374151">${s}</text>`,
    );
    if (m) {
      out.push(
        `<text x="${x(s).toFixed(1)}" y="${
          T - 8
        }" text-anchor="middle" font-size="11" fill="#6b7280">${pct(m.target_sparsity)}%</text>`,
      );
    }
  }
  out.push(
    `<text x="${L + pw / 2}" y="${
      H - 12
    }" text-anchor="middle" font-size="13" fill="#111827">shot</text>`,
    `<text x="${L - 20}" y="${
      T - 8
    }" text-anchor="end" font-size="11" fill="#6b7280">sparsity</text>`,
    `<text transform="translate(18 ${
      T + ph / 2
    }) rotate(-90)" text-anchor="middle" font-size="13" fill="#111827">perplexity (log scale)</text>`,
  );
  datasets.forEach((d, i) => {
    const color = PALETTE[i % PALETTE.length];
    const series = pts.filter((m) => Number.isFinite(m.ppl[d])).sort((a, b) => a.shot - b.shot);
    const dense = series.find((m) => m.shot === 0);
    if (dense) {
      out.push(
        `<line x1="${L}" x2="${L + pw}" y1="${y(dense.ppl[d]).toFixed(1)}" y2="${
          y(dense.ppl[d]).toFixed(1)
        }" stroke="${color}" stroke-dasharray="5 4" stroke-opacity="0.6"/>`,
      );
    }
    const path = series.map((m, k) =>
      `${k ? "L" : "M"}${x(m.shot).toFixed(1)} ${y(m.ppl[d]).toFixed(1)}`
    ).join(" ");
    out.push(
      `<path d="${path}" fill="none" stroke="${color}" stroke-width="2.2" stroke-linejoin="round"/>`,
    );
    for (const m of series) {
      out.push(
        `<circle cx="${x(m.shot).toFixed(1)}" cy="${
          y(m.ppl[d]).toFixed(1)
        }" r="3.2" fill="${color}"><title>${esc(d)} shot ${m.shot}: ${
          m.ppl[d].toFixed(3)
        }</title></circle>`,
      );
    }
    const last = series[series.length - 1];
    const ly = T + 14 + i * 40;
    out.push(
      `<rect x="${L + pw + 14}" y="${ly - 9}" width="14" height="4" fill="${color}"/>`,
      `<text x="${L + pw + 34}" y="${ly - 3}" font-size="13" fill="#111827">${esc(d)}</text>`,
      `<text x="${L + pw + 34}" y="${ly + 13}" font-size="11" fill="#6b7280">${
        dense ? fmt(dense.ppl[d]) + " → " : ""
      }${last ? fmt(last.ppl[d]) : ""}</text>`,
    );
  });
  out.push(
    `<text x="${L + pw + 14}" y="${T + ph}" font-size="11" fill="#6b7280">dashed: dense</text>`,
    "</svg>",
  );
  return out.join("\n");
}

/** Colour for a kept fraction: red (0) → amber → green (1). */
function keptColor(f: number): string {
  const stops: [number, number[]][] = [[0, [220, 38, 38]], [0.5, [245, 158, 11]], [1, [
    22,
    163,
    74,
  ]]];
  const v = Math.min(1, Math.max(0, f));
  let i = 0;
  while (i < stops.length - 2 && v > stops[i + 1][0]) i++;
  const [a, ca] = stops[i], [b, cb] = stops[i + 1];
  const t = (v - a) / (b - a);
  const c = ca.map((x, k) => Math.round(x + t * (cb[k] - x)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/**
 * SVG heat map of the fraction of weights kept per decoder layer (columns) and module type
 * (rows), with the value printed in each cell and a colour legend.
 * @param modules kept fraction per module
 * @param title chart title
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { keptPlotSvg } from "@llm-surgeon/toolkit";
 * const svg = keptPlotSvg([
 *   { layer: 0, kind: "fc1", kept: 0.8 },
 *   { layer: 1, kind: "fc1", kept: 0.55 },
 * ]);
 * assert.ok(svg.startsWith("<svg") && svg.endsWith("</svg>"));
 * assert.ok(svg.includes("layer 1 fc1: 55.0% kept")); // the tooltip of a cell
 * ```
 */
export function keptPlotSvg(modules: ModuleKept[], title = "Fraction of weights kept"): string {
  const kinds = [...new Set(modules.map((m) => m.kind))];
  const layers = [...new Set(modules.map((m) => m.layer))].sort((a, b) => a - b);
  const cw = Math.max(26, Math.min(56, Math.floor(640 / Math.max(1, layers.length))));
  const chh = 30, L = 96, T = 52, B = 70;
  const W = Math.max(420, L + cw * layers.length + 30), H = T + chh * kinds.length + B;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ${FONT}>`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${L}" y="24" font-size="17" font-weight="bold" fill="#111827">${esc(title)}</text>`,
  ];
  const cell = new Map(modules.map((m) => [`${m.layer}|${m.kind}`, m.kept]));
  kinds.forEach((k, r) => {
    out.push(
      `<text x="${L - 8}" y="${
        T + r * chh + chh / 2 + 4
      }" text-anchor="end" font-size="12" fill="#374151">${esc(k)}</text>`,
    );
    layers.forEach((l, c) => {
      const v = cell.get(`${l}|${k}`);
      const x = L + c * cw, y = T + r * chh;
      if (v === undefined) {
        out.push(`<rect x="${x}" y="${y}" width="${cw - 2}" height="${chh - 2}" fill="#f3f4f6"/>`);
        return;
      }
      out.push(
        `<rect x="${x}" y="${y}" width="${cw - 2}" height="${chh - 2}" rx="3" fill="${
          keptColor(v)
        }"><title>layer ${l} ${esc(k)}: ${(100 * v).toFixed(1)}% kept</title></rect>`,
      );
      if (cw >= 30) {
        out.push(
          `<text x="${x + (cw - 2) / 2}" y="${y + chh / 2 + 3}" text-anchor="middle" font-size="${
            cw >= 40 ? 11 : 9
          }" fill="${v > 0.3 && v < 0.8 ? "#111827" : "#ffffff"}">${Math.round(100 * v)}</text>`,
        );
      }
    });
  });
  layers.forEach((l, c) => {
    out.push(
      `<text x="${L + c * cw + (cw - 2) / 2}" y="${
        T + kinds.length * chh + 16
      }" text-anchor="middle" font-size="11" fill="#374151">${l}</text>`,
    );
  });
  const ly = T + kinds.length * chh + 30;
  out.push(
    `<text x="${L + (cw * layers.length) / 2}" y="${
      ly + 4
    }" text-anchor="middle" font-size="12" fill="#111827">decoder layer (cells: % of weights kept)</text>`,
  );
  for (let i = 0; i <= 10; i++) {
    out.push(
      `<rect x="${L + i * 18}" y="${ly + 14}" width="18" height="10" fill="${keptColor(i / 10)}"/>`,
    );
  }
  out.push(
    `<text x="${L - 4}" y="${ly + 23}" text-anchor="end" font-size="11" fill="#374151">0%</text>`,
    `<text x="${L + 11 * 18 + 4}" y="${ly + 23}" font-size="11" fill="#374151">100%</text>`,
    "</svg>",
  );
  return out.join("\n");
}

/**
 * What {@link reportMarkdown} summarises.
 *
 * @example Usage
 * ```ts
 * import type { ReportInput } from "@llm-surgeon/toolkit";
 * // A run that stopped right after its dense evaluation.
 * const input: ReportInput = {
 *   name: "opt-125m_row_kfac-obs",
 *   settings: { sparsity: 0.5 },
 *   metrics: [],
 *   modules: [],
 *   seconds: 12.5,
 *   plots: { ppl: "ppl.svg", kept: "kept.svg" },
 * };
 * console.log(input.plots.ppl); // "ppl.svg"
 * ```
 */
export interface ReportInput {
  /** Run name (the folder name). */
  name: string;
  /** Resolved settings (shown in a collapsed table). */
  settings: Record<string, unknown>;
  /** All metrics lines. */
  metrics: MetricsLine[];
  /** Kept fraction per module after the last shot. */
  modules: ModuleKept[];
  /** Total seconds of the run. */
  seconds: number;
  /** File names of the two plots, relative to report.md. */
  plots: { ppl: string; kept: string };
}

/**
 * The Markdown report: headline numbers, the two plots, a table per evaluation, the kept
 * fraction per module type, and the settings.
 * @param r what to report
 * @returns the Markdown text of report.md
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { type MetricsLine, reportMarkdown } from "@llm-surgeon/toolkit";
 * const line = (shot: number, s: number, ppl: number): MetricsLine => ({
 *   shot,
 *   phase: shot === 0 ? "dense" : "shot",
 *   target_sparsity: s,
 *   sparsity: s,
 *   sparsity_per_kind: { fc1: s },
 *   ppl: { wikitext2: ppl },
 *   seconds: { eval: 2 },
 *   time: "",
 * });
 * const md = reportMarkdown({
 *   name: "demo",
 *   settings: { sparsity: 0.5 },
 *   metrics: [line(0, 0, 27.65), line(1, 0.5, 31.2)],
 *   modules: [{ layer: 0, kind: "fc1", kept: 0.5 }],
 *   seconds: 40,
 *   plots: { ppl: "ppl.svg", kept: "kept.svg" },
 * });
 * assert.ok(md.startsWith("# Pruning run `demo`"));
 * assert.ok(md.includes("27.650 (dense) → **31.200**"));
 * ```
 */
export function reportMarkdown(r: ReportInput): string {
  const datasets = [...new Set(r.metrics.flatMap((m) => Object.keys(m.ppl)))];
  const dense = r.metrics.find((m) => m.shot === 0);
  const last = r.metrics[r.metrics.length - 1];
  const lines = [`# Pruning run \`${r.name}\``, ""];
  if (dense && last) {
    for (const d of datasets) {
      lines.push(
        `- **${d}** perplexity: ${dense.ppl[d]?.toFixed(3)} (dense) → **${
          last.ppl[d]?.toFixed(3)
        }** at ` +
          `${
            (100 * last.sparsity).toFixed(2)
          }% sparsity of the prunable weights (shot ${last.shot}).`,
      );
    }
  }
  lines.push(`- Total time: ${r.seconds.toFixed(1)} s.`, "");
  lines.push(
    `![Perplexity per shot](${r.plots.ppl})`,
    "",
    `![Fraction of weights kept](${r.plots.kept})`,
    "",
  );
  lines.push("## Evaluations", "");
  const kinds = [...new Set(r.metrics.flatMap((m) => Object.keys(m.sparsity_per_kind)))];
  lines.push(
    `| shot | phase | target | achieved | ${
      datasets.map((d) => `ppl ${d}`).join(" | ")
    } | seconds |`,
    `| ---: | --- | ---: | ---: | ${datasets.map(() => "---:").join(" | ")} | ---: |`,
  );
  for (const m of r.metrics) {
    const secs = Object.values(m.seconds).reduce((a, b) => a + b, 0);
    lines.push(
      `| ${m.shot} | ${m.phase} | ${(100 * m.target_sparsity).toFixed(2)}% | ${
        (100 * m.sparsity).toFixed(2)
      }% | ${
        datasets.map((d) => (m.ppl[d] !== undefined ? m.ppl[d].toFixed(3) : "")).join(" | ")
      } | ${secs.toFixed(1)} |`,
    );
  }
  if (last && kinds.length > 0) {
    lines.push(
      "",
      "## Sparsity per module type (last evaluation)",
      "",
      "| module | sparsity |",
      "| --- | ---: |",
    );
    for (const k of kinds) {
      lines.push(`| ${k} | ${(100 * last.sparsity_per_kind[k]).toFixed(2)}% |`);
    }
  }
  lines.push(
    "",
    "## Settings",
    "",
    "<details><summary>all resolved settings</summary>",
    "",
    "| setting | value |",
    "| --- | --- |",
  );
  for (const [k, v] of Object.entries(r.settings)) {
    lines.push(`| ${k} | \`${JSON.stringify(v)}\` |`);
  }
  lines.push("", "</details>", "");
  return lines.join("\n");
}
