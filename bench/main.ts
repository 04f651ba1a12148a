/**
 * Benchmark runner: `deno run --allow-read --allow-env --allow-write bench/main.ts [files…]`.
 * Runs every bench module named on the command line (default: all `bench/*_bench.ts`), each
 * exporting `run(emit)`, and prints one JSON object per line:
 * `{"bench": NAME, "n": N, "ms": MEDIAN_MS, "gflops": G, …}`. A module that fails prints
 * `{"bench": FILE, "error": "…"}` and the runner goes on with the next one.
 *
 * @module
 */

/** One benchmark result line. */
export interface BenchResult {
  /** Benchmark name, e.g. `gemm_nn_2048`. */
  bench: string;
  /** Problem size. */
  n: number;
  /** Median wall time in milliseconds. */
  ms: number;
  /** Achieved GFLOP/s, where a flop count is defined. */
  gflops?: number;
  /** Anything else worth recording (notes, ratios, errors). */
  [k: string]: unknown;
}

/** What a line may be: a result, or an error report for a bench that could not run. */
export type BenchLine = BenchResult | { bench: string; error: string; [k: string]: unknown };

/** The callback a bench module's `run` receives. */
export type Emit = (r: BenchLine) => void;

/** The shape of a bench module. */
export interface BenchModule {
  /** Runs the module's benchmarks, reporting each through `emit`. */
  run(emit: Emit): Promise<void>;
}

/**
 * Median of a list of numbers (the mean of the two middle values for an even count).
 *
 * @param xs samples
 * @example Usage
 * ```ts
 * import { median } from "./main.ts";
 * median([3, 1, 2]); // 2
 * ```
 */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Deterministic uniform numbers in [−0.5, 0.5) from a 32-bit LCG (the benches need no statistics,
 * only the same inputs in every run).
 *
 * @param count how many
 * @param seed the LCG seed
 * @example Usage
 * ```ts
 * import { pseudoRandom } from "./main.ts";
 * pseudoRandom(3, 1).length; // 3
 * ```
 */
export function pseudoRandom(count: number, seed: number): Float32Array {
  const out = new Float32Array(count);
  let s = seed >>> 0;
  for (let i = 0; i < count; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 4294967296 - 0.5;
  }
  return out;
}

async function defaultModules(): Promise<string[]> {
  const dir = new URL(".", import.meta.url);
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.endsWith("_bench.ts")) names.push(new URL(e.name, dir).href);
  }
  return names.sort();
}

function toUrl(arg: string): string {
  if (/^[a-z]+:\/\//.test(arg)) return arg;
  const abs = arg.startsWith("/") ? arg : `${Deno.cwd()}/${arg}`;
  return new URL(`file://${abs}`).href;
}

async function main(): Promise<void> {
  const mods = Deno.args.length > 0 ? Deno.args.map(toUrl) : await defaultModules();
  const emit: Emit = (r) => console.log(JSON.stringify(r));
  for (const url of mods) {
    const file = url.split("/").pop() ?? url;
    try {
      const mod = (await import(url)) as Partial<BenchModule>;
      if (typeof mod.run !== "function") throw new Error(`${file} does not export run(emit)`);
      await mod.run(emit);
    } catch (e) {
      emit({ bench: file, error: e instanceof Error ? e.message : String(e) });
    }
  }
}

if (import.meta.main) {
  // No top-level await: bench modules may import helpers from this file, and a top-level await
  // here would deadlock that import cycle. jax-js and the GPU runtime keep handles open; the
  // results are printed, so leave explicitly.
  main().then(() => Deno.exit(0), (e) => {
    console.error(e);
    Deno.exit(1);
  });
}
