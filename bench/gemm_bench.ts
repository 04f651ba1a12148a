/**
 * GEMM benchmarks: our kernels (`gemm_nn_1024`, `gemm_nn_2048`, `gemm_tn_2048`,
 * `syrk_acc_2048`), a plain TypeScript baseline (`ts_gemm_1024`) and jax-js on its WebGPU
 * backend on the same adapter (`jaxjs_gemm_2048`, `jaxjs_cholesky_2048`).
 *
 * Every timing is a median over several runs after a warm-up (the first dispatch compiles).
 * The host is noisy (PLATFORM.md §4), so the 2048² comparison with jax-js alternates the two
 * implementations sample by sample and reports the ratio from the same process.
 *
 * Besides the wall-clock median (`ms`, `gflops`), GPU benchmarks report `cpu_gflops`: flops per
 * second of process CPU time, times the adapter's 2 worker threads (`LP_NUM_THREADS`). On the
 * software adapter the "GPU" is the CPU, so this estimates what the run reaches on an otherwise
 * idle 2-core host when other processes compete for the cores; it is an estimate, not a timing.
 *
 * Products per sample: on a real GPU one product takes a few milliseconds, less than the ~10–15 ms
 * that Deno's WebGPU takes to report a finished submission, so a sample records as many products
 * as fill about 200 ms (`per_sample`, 1 on the software adapter) and reports the time per product:
 * the throughput, as GPU benchmarks usually do. jax-js samples queue the same number of products
 * before waiting.
 *
 * Flop counts: 2n³ for a product (also for `syrk_acc_2048`, although the symmetric kernel does
 * about half of them, so that the figure compares with a general GEMM), n³/3 for Cholesky.
 *
 * @module
 */
import process from "node:process";
import { gpu, type Runtime } from "../kernels/device.ts";
import { Tensor } from "../kernels/tensor.ts";
import { type GemmOptions, matmul } from "../kernels/gemm.ts";
import { type Emit, median, pseudoRandom } from "./main.ts";

const gflops = (flops: number, ms: number) => Math.round((flops / ms / 1e6) * 100) / 100;
const THREADS = Number(Deno.env.get("LP_NUM_THREADS") ?? 2) || 2;

/** Wall and process-CPU milliseconds of `fn`. */
async function measure(fn: () => Promise<unknown>): Promise<{ ms: number; cpu: number }> {
  const c0 = process.cpuUsage(), t0 = performance.now();
  await fn();
  const c = process.cpuUsage(c0);
  return { ms: performance.now() - t0, cpu: (c.user + c.system) / 1000 };
}

/** `cpu_gflops` from a CPU-time median (see the module doc). */
const cpuGflops = (flops: number, cpuMs: number) => gflops(flops, cpuMs / THREADS);

/** Median wall and CPU ms of `inner` products recorded in one submission, per product. */
async function timeOurs(
  rt: Runtime,
  a: Tensor,
  b: Tensor,
  opts: GemmOptions,
  samples: number,
  inner: number,
): Promise<{ ms: number; cpu: number }> {
  matmul(a, b, opts);
  await rt.sync(); // warm-up: compiles the kernel
  const ts: number[] = [], cs: number[] = [];
  for (let s = 0; s < samples; s++) {
    const m = await measure(async () => {
      for (let i = 0; i < inner; i++) matmul(a, b, opts);
      await rt.sync();
    });
    ts.push(m.ms / inner);
    cs.push(m.cpu / inner);
  }
  return { ms: median(ts), cpu: median(cs) };
}

/** Products per sample so that one sample lasts about `targetMs` (1 to 64), from one timed run. */
async function productsPerSample(rt: Runtime, run: () => void, targetMs = 200): Promise<number> {
  const t0 = performance.now();
  run();
  await rt.sync();
  const ms = performance.now() - t0;
  return Math.max(1, Math.min(64, Math.round(targetMs / Math.max(ms, 1e-3))));
}

/** Plain TypeScript f32 GEMM, 4×4 register blocks over an i-k-j order (the best TS variant). */
function tsGemm(a: Float32Array, b: Float32Array, c: Float32Array, n: number): void {
  c.fill(0);
  for (let i = 0; i < n; i += 4) {
    for (let j = 0; j < n; j += 4) {
      let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
      let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
      for (let k = 0; k < n; k++) {
        const a0 = a[i * n + k],
          a1 = a[(i + 1) * n + k],
          a2 = a[(i + 2) * n + k],
          a3 = a[(i + 3) * n + k];
        const o = k * n + j;
        const b0 = b[o], b1 = b[o + 1], b2 = b[o + 2], b3 = b[o + 3];
        c00 += a0 * b0, c01 += a0 * b1, c02 += a0 * b2, c03 += a0 * b3;
        c10 += a1 * b0, c11 += a1 * b1, c12 += a1 * b2, c13 += a1 * b3;
        c20 += a2 * b0, c21 += a2 * b1, c22 += a2 * b2, c23 += a2 * b3;
        c30 += a3 * b0, c31 += a3 * b1, c32 += a3 * b2, c33 += a3 * b3;
      }
      const r = [c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33];
      for (let q = 0; q < 16; q++) c[(i + (q >> 2)) * n + j + (q & 3)] = r[q];
    }
  }
}

// deno-lint-ignore no-explicit-any
type Jax = any;

async function loadJax(): Promise<Jax> {
  const jax = await import("@jax-js/jax");
  const devices: string[] = await jax.init();
  if (!devices.includes("webgpu")) {
    throw new Error(`jax-js found no WebGPU device (has ${devices.join(", ")})`);
  }
  jax.defaultDevice("webgpu");
  return jax;
}

/** `inner` jax-js matmuls queued, then waited for; wall and CPU ms per product. */
async function jaxMatmul(
  jax: Jax,
  a: Jax,
  b: Jax,
  inner = 1,
): Promise<{ ms: number; cpu: number }> {
  const cs: Jax[] = [];
  const m = await measure(async () => {
    for (let i = 0; i < inner; i++) cs.push(jax.numpy.matmul(a.ref, b.ref));
    await jax.blockUntilReady(cs[cs.length - 1]);
  });
  for (const c of cs) c.dispose();
  return { ms: m.ms / inner, cpu: m.cpu / inner };
}

/**
 * Runs the GEMM benchmarks.
 *
 * @param emit receives one result per benchmark
 * @example Usage
 * ```ts ignore
 * await run((r) => console.log(JSON.stringify(r)));
 * ```
 */
export async function run(emit: Emit): Promise<void> {
  const rt = await gpu();
  const adapter = rt.adapter.description;

  // 1024², NN: four products per submission.
  {
    const n = 1024;
    const a = Tensor.fromSync(rt, pseudoRandom(n * n, 1), [n, n]);
    const b = Tensor.fromSync(rt, pseudoRandom(n * n, 2), [n, n]);
    const out = Tensor.emptySync(rt, [n, n]);
    const inner = Math.max(4, await productsPerSample(rt, () => matmul(a, b, { out })));
    const { ms, cpu } = await timeOurs(rt, a, b, { out }, 7, inner);
    const f = 2 * n ** 3;
    emit({
      bench: "gemm_nn_1024",
      n,
      ms,
      gflops: gflops(f, ms),
      cpu_gflops: cpuGflops(f, cpu),
      per_sample: inner,
      adapter,
    });
    for (const t of [a, b, out]) t.dispose();
  }

  const n = 2048;
  const aHost = pseudoRandom(n * n, 3), bHost = pseudoRandom(n * n, 4);
  const a = Tensor.fromSync(rt, aHost, [n, n]);
  const b = Tensor.fromSync(rt, bHost, [n, n]);
  const out = Tensor.emptySync(rt, [n, n]);

  // 2048² NN, alternating with jax-js when it is available.
  let jax: Jax = null, jaxError = "";
  try {
    jax = await loadJax();
  } catch (e) {
    jaxError = `jax-js could not start its WebGPU backend under Deno: ${
      e instanceof Error ? e.message : e
    }`;
  }
  let inner = 1;
  {
    matmul(a, b, { out });
    await rt.sync();
    inner = await productsPerSample(rt, () => matmul(a, b, { out }));
    let ja: Jax = null, jb: Jax = null;
    if (jax) {
      try {
        ja = jax.numpy.array(aHost, { shape: [n, n] });
        jb = jax.numpy.array(bHost, { shape: [n, n] });
        await jaxMatmul(jax, ja, jb); // warm-up (compiles)
      } catch (e) {
        jaxError = `jax-js matmul failed: ${e instanceof Error ? e.message : e}`;
        ja = jb = null;
      }
    }
    const ours: { ms: number; cpu: number }[] = [], theirs: { ms: number; cpu: number }[] = [];
    for (let s = 0; s < 5; s++) {
      const m = await measure(async () => {
        for (let i = 0; i < inner; i++) matmul(a, b, { out });
        await rt.sync();
      });
      ours.push({ ms: m.ms / inner, cpu: m.cpu / inner });
      if (ja) theirs.push(await jaxMatmul(jax, ja, jb, inner));
    }
    const f = 2 * n ** 3;
    const ms = median(ours.map((x) => x.ms)), cpu = median(ours.map((x) => x.cpu));
    emit({
      bench: "gemm_nn_2048",
      n,
      ms,
      gflops: gflops(f, ms),
      cpu_gflops: cpuGflops(f, cpu),
      per_sample: inner,
      adapter,
    });
    if (ja) {
      const jms = median(theirs.map((x) => x.ms)), jcpu = median(theirs.map((x) => x.cpu));
      emit({
        bench: "jaxjs_gemm_2048",
        n,
        ms: jms,
        gflops: gflops(f, jms),
        cpu_gflops: cpuGflops(f, jcpu),
        ours_over_jaxjs: Math.round((jms / ms) * 100) / 100,
        per_sample: inner,
        note: "samples alternate with gemm_nn_2048 in the same process",
      });
      ja.dispose();
      jb.dispose();
    } else {
      emit({ bench: "jaxjs_gemm_2048", n, error: jaxError });
    }
  }

  // 2048², Aᵀ·B.
  {
    const { ms, cpu } = await timeOurs(rt, a, b, { out, transA: true }, 5, inner);
    const f = 2 * n ** 3;
    emit({
      bench: "gemm_tn_2048",
      n,
      ms,
      gflops: gflops(f, ms),
      cpu_gflops: cpuGflops(f, cpu),
      per_sample: inner,
    });
  }

  // Curvature-factor accumulation C += XᵀX, X 2048×2048 (symmetric kernel).
  {
    const { ms, cpu } = await timeOurs(rt, a, a, { out, transA: true, beta: 1 }, 5, inner);
    emit({
      bench: "syrk_acc_2048",
      n,
      ms,
      gflops: gflops(2 * n ** 3, ms),
      cpu_gflops: cpuGflops(2 * n ** 3, cpu),
      per_sample: inner,
      note: "flops counted as 2n³; the symmetric kernel computes each off-diagonal block once",
    });
  }
  for (const t of [a, b]) t.dispose();

  // jax-js Cholesky of an SPD 2048² matrix (M = XᵀX/n + I, built with our GEMM).
  if (jax) {
    try {
      const { addDiag } = await import("../kernels/matrix.ts");
      const x = Tensor.fromSync(rt, aHost, [n, n]);
      const spd = matmul(x, x, { transA: true, alpha: 1 / n });
      addDiag(spd, 1);
      const host = await spd.read();
      x.dispose();
      spd.dispose();
      const m = jax.numpy.array(host, { shape: [n, n] });
      const once = async () => {
        const t0 = performance.now();
        const L = jax.numpy.linalg.cholesky(m.ref);
        await jax.blockUntilReady(L);
        const ms = performance.now() - t0;
        L.dispose();
        return ms;
      };
      const first = await once(); // warm-up
      const ts = first > 60_000 ? [first] : [await once(), await once(), await once()];
      const ms = median(ts);
      emit({
        bench: "jaxjs_cholesky_2048",
        n,
        ms,
        gflops: gflops(n ** 3 / 3, ms),
        runs: ts.length,
      });
      m.dispose();
    } catch (e) {
      emit({
        bench: "jaxjs_cholesky_2048",
        n,
        error: `jax-js cholesky failed: ${e instanceof Error ? e.message : e}`,
      });
    }
  } else {
    emit({ bench: "jaxjs_cholesky_2048", n, error: jaxError });
  }
  out.dispose();

  // Plain TypeScript baseline, 1024², one thread.
  {
    const m = 1024;
    const ah = pseudoRandom(m * m, 5), bh = pseudoRandom(m * m, 6), ch = new Float32Array(m * m);
    tsGemm(ah, bh, ch, m); // warm-up (JIT)
    const ts: number[] = [];
    for (let s = 0; s < 3; s++) {
      const t0 = performance.now();
      tsGemm(ah, bh, ch, m);
      ts.push(performance.now() - t0);
    }
    const ms = median(ts);
    emit({ bench: "ts_gemm_1024", n: m, ms, gflops: gflops(2 * m ** 3, ms) });
  }
}
