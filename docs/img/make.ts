/**
 * Draws the pictures of docs/method.md as hand-built SVG files next to this script. Every
 * number in a picture is computed here from small, fixed examples (no randomness that is not
 * seeded), so re-running the script reproduces the files byte for byte.
 *
 * Run: `./deno run --allow-write=docs/img docs/img/make.ts`
 *
 * @module
 */

const outDir = new URL("./", import.meta.url);

// ---------------------------------------------------------------- tiny SVG toolkit

const FONT = 'font-family="Helvetica, Arial, sans-serif"';
const INK = "#222";
const BLUE = "#2f6db5";
const RED = "#c0392b";
const GREEN = "#2e8b57";
const GREY = "#999";

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function num(x: number): string {
  return Number(x.toFixed(2)).toString();
}

function svg(width: number, height: number, body: string[], title: string): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(title)}">`,
    `<title>${esc(title)}</title>`,
    `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" ` +
    `orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="${INK}"/></marker></defs>`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    ...body,
    "</svg>",
    "",
  ].join("\n");
}

function text(
  x: number,
  y: number,
  s: string,
  opts: {
    size?: number;
    anchor?: "start" | "middle" | "end";
    fill?: string;
    weight?: string;
    italic?: boolean;
  } = {},
): string {
  const size = opts.size ?? 13;
  const style = opts.italic ? ' font-style="italic"' : "";
  return `<text x="${num(x)}" y="${num(y)}" ${FONT} font-size="${size}" text-anchor="${
    opts.anchor ?? "start"
  }" fill="${opts.fill ?? INK}"${opts.weight ? ` font-weight="${opts.weight}"` : ""}${style}>${
    esc(s)
  }</text>`;
}

function rect(
  x: number,
  y: number,
  w: number,
  h: number,
  fill: string,
  stroke = "none",
  extra = "",
): string {
  return `<rect x="${num(x)}" y="${num(y)}" width="${num(w)}" height="${
    num(h)
  }" fill="${fill}" stroke="${stroke}"${extra ? " " + extra : ""}/>`;
}

function line(x1: number, y1: number, x2: number, y2: number, stroke = INK, extra = ""): string {
  return `<line x1="${num(x1)}" y1="${num(y1)}" x2="${num(x2)}" y2="${num(y2)}" stroke="${stroke}"${
    extra ? " " + extra : ""
  }/>`;
}

function arrow(x1: number, y1: number, x2: number, y2: number, color = INK): string {
  return line(x1, y1, x2, y2, color, 'stroke-width="1.5" marker-end="url(#arrow)"');
}

function box(
  x: number,
  y: number,
  w: number,
  h: number,
  lines: string[],
  fill = "#eef3fa",
): string {
  const out = [rect(x, y, w, h, fill, BLUE, 'rx="6" stroke-width="1.2"')];
  const top = y + h / 2 - (lines.length - 1) * 8 + 4;
  lines.forEach((s, i) =>
    out.push(text(x + w / 2, top + i * 16, s, { anchor: "middle", weight: i === 0 ? "bold" : "" }))
  );
  return out.join("\n");
}

/** White → blue for a value in [0, 1]. */
function shade(v: number): string {
  const t = Math.max(0, Math.min(1, v));
  const mix = (a: number, b: number) => Math.round(a + (b - a) * t);
  return `rgb(${mix(255, 31)},${mix(255, 90)},${mix(255, 170)})`;
}

/** A deterministic generator (xorshift32) for the example matrices. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

// ---------------------------------------------------------------- 1. the pipeline

function pipeline(): string {
  const b: string[] = [];
  const y = 40, h = 74, w = 150, gap = 38;
  const steps: [string, string[]][] = [
    ["calibration", ["Calibration", "n windows of T", "tokens"]],
    ["curvature", ["Curvature", "G, A per layer", "(forward + backward)"]],
    ["costs", ["Local costs", "per element / row /", "column / N:M group"]],
    ["threshold", ["Global threshold", "one τ for the", "whole model"]],
    ["update", ["OBS update", "remove cost ≤ τ,", "fix the rest"]],
  ];
  steps.forEach(([, lines], i) => {
    const x = 20 + i * (w + gap);
    b.push(box(x, y, w, h, lines, i === 0 ? "#f4f4f4" : "#eef3fa"));
    if (i > 0) b.push(arrow(x - gap + 2, y + h / 2, x - 3, y + h / 2));
  });
  const right = 20 + 4 * (w + gap) + w;
  const loopY = y + h + 52;
  b.push(box(20 + 2 * (w + gap), loopY - 20, w, 44, ["optional LoRA", ""], "#f3faf5"));
  b.push(
    `<path d="M${right - w / 2},${y + h + 2} L${right - w / 2},${loopY} L${
      20 + 3 * (w + gap) - gap + 2
    },${loopY}" ` +
      `fill="none" stroke="${INK}" stroke-width="1.5" marker-end="url(#arrow)"/>`,
  );
  b.push(
    `<path d="M${20 + 2 * (w + gap) - 2},${loopY} L${20 + w + gap + w / 2},${loopY} L${
      20 + w + gap + w / 2
    },${y + h + 4}" fill="none" stroke="${INK}" stroke-width="1.5" marker-end="url(#arrow)"/>`,
  );
  b.push(
    text(
      20 + w + gap + w / 2 + 8,
      loopY + 34,
      "next shot k+1: target s·(k+1)/S, curvature re-estimated",
      {
        size: 12,
        fill: "#555",
      },
    ),
  );
  b.push(
    text(20, 22, "One shot of LLM Surgeon; S shots reach the final sparsity s.", {
      size: 14,
      weight: "bold",
    }),
  );
  return svg(right + 20, loopY + 56, b, "The pruning pipeline");
}

// ---------------------------------------------------------------- 2. Kronecker factors

function matmulT(x: number[][]): number[][] {
  // xᵀx / rows
  const n = x.length, c = x[0].length;
  const out = Array.from({ length: c }, () => new Array<number>(c).fill(0));
  for (const row of x) {
    for (let i = 0; i < c; i++) for (let j = 0; j < c; j++) out[i][j] += row[i] * row[j] / n;
  }
  return out;
}

function heat(
  b: string[],
  m: number[][],
  x: number,
  y: number,
  cell: number,
  maxAbs: number,
): void {
  m.forEach((row, i) =>
    row.forEach((v, j) =>
      b.push(rect(x + j * cell, y + i * cell, cell, cell, shade(Math.abs(v) / maxAbs)))
    )
  );
  b.push(rect(x, y, m[0].length * cell, m.length * cell, "none", INK, 'stroke-width="1"'));
}

function kronecker(): string {
  const r = rng(7);
  const T = 12, R = 3, C = 4;
  const g = Array.from({ length: T }, () => Array.from({ length: R }, () => r() * 2 - 1));
  const a = Array.from({ length: T }, () => Array.from({ length: C }, () => r() * 2 - 0.3));
  const G = matmulT(g), A = matmulT(a);
  const maxOf = (m: number[][]) => Math.max(...m.flat().map(Math.abs));
  const b: string[] = [];
  const cell = 16;
  b.push(text(20, 24, "KFAC: one layer's Fisher block F ≈ G ⊗ A", { size: 14, weight: "bold" }));
  // taps
  heat(b, g, 30, 60, 10, maxOf(g));
  heat(b, a, 80, 60, 10, maxOf(a));
  b.push(
    text(45, 52, "g", { anchor: "middle", italic: true }),
    text(100, 52, "a", { anchor: "middle", italic: true }),
  );
  b.push(
    text(30, 195, "taps: T tokens ×", { size: 11 }),
    text(30, 208, "R outputs / C inputs", { size: 11 }),
  );
  b.push(arrow(135, 120, 175, 120));
  // factors
  heat(b, G, 190, 70, cell, maxOf(G));
  heat(b, A, 190, 135, cell, maxOf(A));
  b.push(text(250, 95, "G = gᵀg / N", { size: 12 }), text(262, 170, "A = aᵀa / N", { size: 12 }));
  b.push(
    text(250, 111, `(${R}×${R})`, { size: 11, fill: "#555" }),
    text(262, 186, `(${C}×${C})`, { size: 11, fill: "#555" }),
  );
  b.push(arrow(345, 120, 385, 120));
  // Kronecker product
  const K: number[][] = [];
  for (let i = 0; i < R; i++) {
    for (let k = 0; k < C; k++) {
      const row: number[] = [];
      for (let j = 0; j < R; j++) for (let l = 0; l < C; l++) row.push(G[i][j] * A[k][l]);
      K.push(row);
    }
  }
  const kc = 11, kx = 400, ky = 50;
  heat(b, K, kx, ky, kc, maxOf(K));
  for (let i = 1; i < R; i++) {
    b.push(line(kx + i * C * kc, ky, kx + i * C * kc, ky + R * C * kc, RED, 'stroke-width="1.2"'));
    b.push(line(kx, ky + i * C * kc, kx + R * C * kc, ky + i * C * kc, RED, 'stroke-width="1.2"'));
  }
  b.push(
    text(
      kx + (R * C * kc) / 2,
      ky + R * C * kc + 20,
      `G ⊗ A: ${R * C}×${R * C}; block (i, j) = G_ij · A`,
      {
        anchor: "middle",
        size: 12,
      },
    ),
  );
  b.push(
    text(
      kx + (R * C * kc) / 2,
      ky + R * C * kc + 36,
      "only R² + C² numbers are stored, not (RC)²",
      {
        anchor: "middle",
        size: 11,
        fill: "#555",
      },
    ),
  );
  return svg(600, 250, b, "Kronecker-factored curvature of one layer");
}

// ---------------------------------------------------------------- 3. OBD versus OBS on a quadratic

function obs(): string {
  // loss increase ½ dᵀ F d around the trained weights w; remove w₁ (d₁ = −w₁)
  const F = [[2, 0.9], [0.9, 1]];
  const w = [1.2, 0.8];
  const det = F[0][0] * F[1][1] - F[0][1] * F[1][0];
  const inv11 = F[1][1] / det;
  const obdPoint = [0, w[1]];
  const obsPoint = [0, w[1] + (F[1][0] / F[1][1]) * w[0]];
  const obdCost = 0.5 * F[0][0] * w[0] ** 2;
  const obsCost = 0.5 * w[0] ** 2 / inv11;
  const unit = 115, x0 = -0.45, y0 = -0.3, span = 2.5;
  const left = 40, top = 44, size = span * unit;
  const sx = (x: number) => left + (x - x0) * unit;
  const sy = (y: number) => top + size - (y - y0) * unit;
  const b: string[] = [];
  b.push(text(20, 26, "Removing weight w₁: OBD versus OBS", { size: 14, weight: "bold" }));
  b.push(
    `<clipPath id="plot"><rect x="${left}" y="${top}" width="${num(size)}" height="${
      num(size)
    }"/></clipPath>`,
    rect(left, top, size, size, "none", "#ccc"),
  );
  // contour ellipses from the eigen-decomposition of F
  const tr = F[0][0] + F[1][1];
  const l1 = tr / 2 + Math.sqrt(tr * tr / 4 - det), l2 = tr / 2 - Math.sqrt(tr * tr / 4 - det);
  const v1 = [F[0][1], l1 - F[0][0]];
  const n1 = Math.hypot(v1[0], v1[1]);
  const e1 = [v1[0] / n1, v1[1] / n1], e2 = [-e1[1], e1[0]];
  const levels: [number, string, number][] = [
    [0.2, "#c4d2e6", 1],
    [obsCost, GREEN, 1.6],
    [obdCost, RED, 1.6],
    [2.3, "#c4d2e6", 1],
    [3.4, "#c4d2e6", 1],
  ];
  for (const [c, color, width] of levels) {
    const pts: string[] = [];
    for (let k = 0; k <= 120; k++) {
      const t = (2 * Math.PI * k) / 120;
      const u = Math.sqrt((2 * c) / l1) * Math.cos(t), v = Math.sqrt((2 * c) / l2) * Math.sin(t);
      pts.push(`${num(sx(w[0] + u * e1[0] + v * e2[0]))},${num(sy(w[1] + u * e1[1] + v * e2[1]))}`);
    }
    b.push(
      `<polyline points="${pts.join(" ")}" fill="none" stroke="${color}" stroke-width="${width}" ` +
        `stroke-opacity="0.8" clip-path="url(#plot)"/>`,
    );
  }
  // axes: the constraint line w₁ = 0 is the vertical axis
  b.push(line(sx(x0), sy(0), sx(x0 + span), sy(0), GREY));
  b.push(line(sx(0), sy(y0), sx(0), sy(y0 + span), INK, 'stroke-width="2.5"'));
  b.push(text(sx(x0 + span) - 6, sy(0) + 16, "w₁", { anchor: "end", italic: true }));
  b.push(text(sx(0) + 6, top + 14, "w₂", { italic: true }));
  b.push(text(sx(0) - 6, top + 14, "w₁ = 0", { anchor: "end", size: 11, fill: "#555" }));
  const dot = (p: number[], fill: string) =>
    `<circle cx="${num(sx(p[0]))}" cy="${
      num(sy(p[1]))
    }" r="5" fill="${fill}" stroke="white" stroke-width="1.5"/>`;
  b.push(arrow(sx(w[0]) - 6, sy(w[1]), sx(obdPoint[0]) + 7, sy(obdPoint[1]), RED));
  b.push(arrow(sx(w[0]) - 5, sy(w[1]) - 4, sx(obsPoint[0]) + 6, sy(obsPoint[1]) + 3, GREEN));
  b.push(dot(w, INK), dot(obdPoint, RED), dot(obsPoint, GREEN));
  b.push(text(sx(w[0]) + 9, sy(w[1]) + 16, "trained w", { size: 12 }));
  // legend on the right
  const lx = left + size + 24;
  b.push(text(lx, 80, "ΔL(d) = ½ dᵀ F d", { size: 13 }));
  b.push(
    text(lx, 98, `F = [[${F[0].join(", ")}], [${F[1].join(", ")}]]`, { size: 11, fill: "#555" }),
  );
  b.push(text(lx, 138, "OBD: set w₁ = 0, keep w₂", { size: 13, fill: RED, weight: "bold" }));
  b.push(text(lx, 156, `ΔL = ½ F₁₁ w₁² = ${obdCost.toFixed(2)}`, { size: 12, fill: RED }));
  b.push(text(lx, 196, "OBS: set w₁ = 0, move w₂", { size: 13, fill: GREEN, weight: "bold" }));
  b.push(text(lx, 214, `ΔL = ½ w₁² / [F⁻¹]₁₁ = ${obsCost.toFixed(2)}`, { size: 12, fill: GREEN }));
  b.push(text(lx, 254, "OBS lands where the line w₁ = 0", { size: 12, fill: "#555" }));
  b.push(text(lx, 270, "touches the smallest ellipse.", { size: 12, fill: "#555" }));
  return svg(lx + 230, top + size + 20, b, "OBD and OBS on a two-weight quadratic");
}

// ---------------------------------------------------------------- 4. pruning structures

function structures(): string {
  const R = 6, C = 8;
  const r = rng(11);
  const cost = Array.from({ length: R }, () => Array.from({ length: C + 1 }, () => r()));
  const b: string[] = [];
  const cell = 18;
  const panel = (
    x0: number,
    title: string,
    sub: string,
    masked: (i: number, j: number) => boolean,
  ) => {
    b.push(text(x0 + ((C + 1) * cell) / 2, 48, title, { anchor: "middle", weight: "bold" }));
    b.push(text(x0 + ((C + 1) * cell) / 2, 64, sub, { anchor: "middle", size: 11, fill: "#555" }));
    for (let i = 0; i < R; i++) {
      for (let j = 0; j <= C; j++) {
        const bias = j === C;
        const fill = masked(i, j) ? "#f6d5d1" : bias ? "#d9e6d4" : "#cfdcef";
        b.push(rect(x0 + j * cell + (bias ? 4 : 0), 76 + i * cell, cell - 2, cell - 2, fill));
        if (masked(i, j)) {
          b.push(
            text(x0 + j * cell + (bias ? 4 : 0) + 8, 76 + i * cell + 13, "×", {
              anchor: "middle",
              fill: RED,
              size: 12,
            }),
          );
        }
      }
    }
  };
  // element: cheapest 40 % of all entries (bias column included)
  const flat = cost.flat().sort((p, q) => p - q);
  const tauE = flat[Math.floor(0.4 * flat.length)];
  panel(20, "element", "any entry, bias included", (i, j) => cost[i][j] <= tauE);
  // 2:4: in every group of 4 weight columns drop the two cheapest (bias excluded)
  panel(220, "N:M (2:4)", "2 of every 4 weight columns", (i, j) => {
    if (j === C) return false;
    const g = Math.floor(j / 4) * 4;
    const group = cost[i].slice(g, g + 4).slice().sort((p, q) => p - q);
    return cost[i][j] <= group[1];
  });
  // structured: rows 1 and 4, columns 2, 5 and 6
  const rows = new Set([1, 4]), cols = new Set([2, 5, 6]);
  panel(
    420,
    "row + column",
    "whole output neurons and inputs",
    (i, j) => rows.has(i) || cols.has(j),
  );
  b.push(
    text(20, 24, "What one pruning unit is (a 6 × 8 weight matrix with a bias column)", {
      size: 14,
      weight: "bold",
    }),
  );
  b.push(rect(20, 200, 12, 12, "#f6d5d1"), text(38, 210, "removed", { size: 11 }));
  b.push(rect(100, 200, 12, 12, "#d9e6d4"), text(118, 210, "bias column", { size: 11 }));
  b.push(rect(200, 200, 12, 12, "#cfdcef"), text(218, 210, "kept weight", { size: 11 }));
  return svg(600, 222, b, "Pruning structures");
}

// ---------------------------------------------------------------- 5. the global threshold

function threshold(): string {
  const r = rng(5);
  const modules = [
    { name: "layer 0 q_proj", scale: 0.5 },
    { name: "layer 0 fc1", scale: 1.6 },
    { name: "layer 1 fc2", scale: 3.5 },
  ];
  const costs = modules.map((m) =>
    Array.from({ length: 30 }, () => m.scale * Math.exp(2.2 * (r() - 0.5) * 2))
  );
  const all = costs.flat().sort((p, q) => p - q);
  const tau = all[Math.floor(0.45 * all.length)];
  const lo = Math.log10(all[0]) - 0.1, hi = Math.log10(all[all.length - 1]) + 0.1;
  const sx = (c: number) => 150 + ((Math.log10(c) - lo) / (hi - lo)) * 400;
  const b: string[] = [];
  b.push(
    text(20, 24, "One threshold τ for every layer (here: 45 % of all units)", {
      size: 14,
      weight: "bold",
    }),
  );
  costs.forEach((cs, i) => {
    const y = 70 + i * 46;
    const pruned = cs.filter((c) => c <= tau).length;
    b.push(text(140, y + 4, modules[i].name, { anchor: "end", size: 12 }));
    b.push(line(150, y, 550, y, "#ddd"));
    for (const c of cs) {
      b.push(
        `<circle cx="${num(sx(c))}" cy="${y}" r="4" fill="${
          c <= tau ? RED : BLUE
        }" fill-opacity="0.75"/>`,
      );
    }
    b.push(
      text(560, y + 4, `${Math.round((100 * pruned) / cs.length)} % removed`, {
        size: 12,
        fill: "#555",
      }),
    );
  });
  b.push(line(sx(tau), 45, sx(tau), 200, INK, 'stroke-dasharray="5,4" stroke-width="1.5"'));
  b.push(text(sx(tau), 216, "τ", { anchor: "middle", italic: true, size: 14 }));
  b.push(text(150, 240, "cost (log scale) →", { size: 12, fill: "#555" }));
  b.push(text(330, 240, "red: cost ≤ τ, removed", { size: 12, fill: RED }));
  return svg(680, 252, b, "The global threshold");
}

// ---------------------------------------------------------------- 6. the multi-shot schedule

function schedule(): string {
  const S = 5, s = 0.5;
  const sx = (k: number) => 90 + k * 80;
  const sy = (v: number) => 250 - v * 330;
  const b: string[] = [];
  b.push(text(20, 24, `Linear schedule: shot k prunes up to s_k = k·s/S (s = ${s}, S = ${S})`, {
    size: 14,
    weight: "bold",
  }));
  b.push(line(sx(0), sy(0), sx(S + 0.6), sy(0)), line(sx(0), sy(0), sx(0), sy(0.6)));
  for (let k = 0; k <= S; k++) {
    b.push(text(sx(k), sy(0) + 18, `${k}`, { anchor: "middle", size: 12 }));
  }
  for (const v of [0, 0.1, 0.2, 0.3, 0.4, 0.5]) {
    b.push(
      line(sx(0) - 4, sy(v), sx(0), sy(v)),
      text(sx(0) - 8, sy(v) + 4, v.toFixed(1), { anchor: "end", size: 11 }),
    );
  }
  // one shot for comparison: everything removed with the curvature of the dense model
  b.push(
    `<path d="M${sx(0)},${sy(0)} L${sx(1)},${sy(0)} L${sx(1)},${sy(s)} L${sx(S)},${
      sy(s)
    }" fill="none" ` +
      `stroke="${GREY}" stroke-width="1.5" stroke-dasharray="6,4"/>`,
    text(sx(1) + 6, sy(s) - 8, "one shot (S = 1)", { size: 11, fill: GREY }),
  );
  let path = `M${sx(0)},${sy(0)}`;
  for (let k = 1; k <= S; k++) {
    const before = ((k - 1) * s) / S, target = (k * s) / S;
    path += ` L${sx(k)},${sy(before)} L${sx(k)},${num(sy(target))}`;
    const mid = sx(k - 0.5);
    b.push(rect(mid - 14, sy(before) - 9, 28, 18, "#f3faf5", GREEN, 'rx="3"'));
    b.push(text(mid, sy(before) + 4, "G,A", { anchor: "middle", size: 10, fill: GREEN }));
    b.push(`<circle cx="${sx(k)}" cy="${num(sy(target))}" r="4" fill="${BLUE}"/>`);
  }
  b.push(`<path d="${path}" fill="none" stroke="${BLUE}" stroke-width="2"/>`);
  b.push(text(sx(S + 0.6), sy(0) + 36, "shot k", { anchor: "end", size: 12 }));
  b.push(text(sx(0) + 8, sy(0.6) + 4, "sparsity of the prunable weights", { size: 12 }));
  b.push(
    text(
      20,
      310,
      "Green: curvature re-estimated on the partly pruned model; blue: prune up to s_k, update the rest.",
      {
        size: 12,
        fill: "#555",
      },
    ),
  );
  return svg(640, 322, b, "Multi-shot schedule");
}

// ---------------------------------------------------------------- write

const pictures: Record<string, () => string> = {
  "pipeline.svg": pipeline,
  "kfac.svg": kronecker,
  "obs.svg": obs,
  "structures.svg": structures,
  "threshold.svg": threshold,
  "schedule.svg": schedule,
};

for (const [file, draw] of Object.entries(pictures)) {
  const url = new URL(file, outDir);
  await Deno.writeTextFile(url, draw());
  console.log(`wrote ${url.pathname}`);
}
