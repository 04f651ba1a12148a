/**
 * GEMM tuning sweep: times a set of kernel configurations ({@link GemmConfig}) of the one GEMM
 * generator on the current adapter and prints one JSON line per configuration and layout:
 * `{"bench": "tune_gemm_nn_4096", "config": "r8c8_wg16x16_t8", "ms": …, "gflops": …,
 * "maxRelDiff": …}`. Every configuration's product is checked against the default
 * configuration's (largest difference relative to the largest entry), so a configuration that
 * computes something wrong on a new adapter shows up at once.
 *
 * Not part of `deno task bench` (it is long on a software adapter). Run it on a new GPU to choose
 * `gemmConfig`'s real-GPU family:
 * `./deno run --allow-read --allow-env bench/tune_gemm.ts [n] [reps]` (default n = 4096 on a
 * GPU, 1024 on a software adapter).
 *
 * @module
 */
import { gpu } from "../kernels/device.ts";
import { type GemmConfig, gemmConfig, matmul } from "../kernels/gemm.ts";
import { reduce } from "../kernels/reduce.ts";
import { map } from "../kernels/elementwise.ts";
import { Tensor } from "../kernels/tensor.ts";
import { median, pseudoRandom } from "./main.ts";

/** The configurations tried: the tiled (workgroup-memory) family and the register-only family. */
export const CANDIDATES: GemmConfig[] = [
  { rows: 4, cols: 4, wgX: 16, wgY: 16, kChunk: 1 << 30, tileK: 8, vec: false },
  { rows: 4, cols: 4, wgX: 16, wgY: 16, kChunk: 1 << 30, tileK: 16, vec: false },
  { rows: 8, cols: 4, wgX: 16, wgY: 16, kChunk: 1 << 30, tileK: 8, vec: false },
  { rows: 4, cols: 8, wgX: 16, wgY: 16, kChunk: 1 << 30, tileK: 8, vec: false },
  { rows: 8, cols: 8, wgX: 16, wgY: 16, kChunk: 1 << 30, tileK: 8, vec: false },
  { rows: 8, cols: 8, wgX: 16, wgY: 16, kChunk: 1 << 30, tileK: 16, vec: false },
  { rows: 8, cols: 8, wgX: 8, wgY: 8, kChunk: 1 << 30, tileK: 16, vec: false },
  { rows: 8, cols: 8, wgX: 16, wgY: 8, kChunk: 1 << 30, tileK: 8, vec: false },
  { rows: 4, cols: 4, wgX: 16, wgY: 16, kChunk: 1 << 30, tileK: 0, vec: true },
  { rows: 8, cols: 8, wgX: 8, wgY: 8, kChunk: 1 << 30, tileK: 0, vec: true },
  { rows: 16, cols: 16, wgX: 8, wgY: 8, kChunk: 256, tileK: 0, vec: true },
];

function key(c: GemmConfig): string {
  return `r${c.rows}c${c.cols}_wg${c.wgX}x${c.wgY}_t${c.tileK}${c.vec ? "_vec" : ""}_k${
    c.kChunk >= 1 << 30 ? "all" : c.kChunk
  }`;
}

async function main(): Promise<void> {
  const rt = await gpu();
  const n = Number(Deno.args[0] ?? (rt.adapter.isSoftware ? 1024 : 4096));
  const reps = Number(Deno.args[1] ?? 5);
  console.log(JSON.stringify({
    bench: "tune_gemm_adapter",
    adapter: rt.adapter.description,
    vendor: rt.adapter.vendor,
    default: key(gemmConfig(rt, n, n, n)),
  }));
  const A = await Tensor.from(pseudoRandom(n * n, 1), [n, n]);
  const B = await Tensor.from(pseudoRandom(n * n, 2), [n, n]);
  for (const transA of [false, true]) {
    const layout = transA ? "tn" : "nn";
    const ref = matmul(A, B, { transA });
    const refMaxT = reduce(ref, "absmax");
    const refMax = (await refMaxT.read())[0];
    refMaxT.dispose();
    for (const cfg of CANDIDATES) {
      let C: Tensor | null = null;
      try {
        C = matmul(A, B, { transA, config: cfg });
        await rt.sync();
        const diff = map("a - b", [C, ref]);
        const maxT = reduce(diff, "absmax");
        const maxDiff = (await maxT.read())[0];
        diff.dispose();
        maxT.dispose();
        const times: number[] = [];
        for (let i = 0; i < reps; i++) {
          const t0 = performance.now();
          matmul(A, B, { transA, config: cfg, out: C });
          await rt.sync();
          times.push(performance.now() - t0);
        }
        const ms = median(times);
        console.log(JSON.stringify({
          bench: `tune_gemm_${layout}_${n}`,
          n,
          config: key(cfg),
          ms: Math.round(ms * 100) / 100,
          gflops: Math.round(2 * n ** 3 / ms / 1e4) / 100,
          maxRelDiff: maxDiff / refMax,
        }));
      } catch (e) {
        console.log(JSON.stringify({
          bench: `tune_gemm_${layout}_${n}`,
          config: key(cfg),
          error: e instanceof Error ? e.message : String(e),
        }));
      } finally {
        C?.dispose();
      }
    }
    ref.dispose();
  }
  A.dispose();
  B.dispose();
}

if (import.meta.main) await main();
