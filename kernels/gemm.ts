/**
 * GEMM: `C = α·op(A)·op(B) + β·C (+ bias)`, optionally batched. One kernel family serves every
 * matrix product of the toolkit (linear layers, attention, curvature factors, pruning updates).
 *
 * Shapes: `op(A)` is `[M, K]`, `op(B)` is `[K, N]`, `C` is `[M, N]`; with `transA` A is stored
 * `[K, M]`, with `transB` B is stored `[N, K]`. A leading batch dimension on A (and optionally B
 * and C) runs `batch` independent products; a 2-D B is shared across the batch.
 *
 * Operands: A and B may each be f32 or f16 (halves packed in words, see `tensor.ts`); halves are
 * widened with WGSL's core `unpack2x16float` as they are loaded, so every product and sum is f32
 * and C (and the bias) stay f32. A linear layer can thus keep its weights (B with `transB`) in
 * half the memory. The element type of each operand is one more flag of the kernel variant, in
 * both the register-blocked and the workgroup-tile families.
 *
 * How it is computed: one WGSL generator ({@link gemmSource}) emits a fully unrolled
 * register-blocked kernel: each invocation owns an `R×C` block of C (C a multiple of 4, held as
 * `vec4f` accumulators) and walks K four at a time, loading A and B as `vec4f` along whichever
 * dimension is contiguous in memory. The configuration comes from {@link gemmConfig}: on software
 * adapters (llvmpipe) large 16×16 blocks with no workgroup memory (PLATFORM.md §4); on real GPUs
 * smaller blocks that stage A and B through workgroup-memory tiles.
 *
 * The driver around it:
 * - pads an operand whose contiguous dimension is not a multiple of 4 into a zero-padded
 *   temporary when the product is large enough for the vec4 path to pay off (an f16 operand
 *   needing this is widened to an f32 temporary first);
 * - splits K into chunks (accumulating through C) so that the panel of B streamed by a group of
 *   invocations stays in the CPU cache on software adapters;
 * - splits operands and outputs larger than `maxStorageBufferBindingSize` into bindable pieces
 *   (aligned binding offsets plus element offsets in the parameters);
 * - computes `Xᵀ·X` and `X·Xᵀ` (same tensor on both sides) once per pair of blocks and writes
 *   both halves, which halves the work of curvature-factor accumulation.
 *
 * @module
 */
import { f32, GpuError, packParams, type Runtime } from "./device.ts";
import { Tensor } from "./tensor.ts";
import { padCols, unpadCols } from "./matrix.ts";
import { toF32 } from "./cast.ts";
import { rowOrder } from "./_order.ts";

/**
 * Options of {@link matmul}.
 *
 * @example Usage
 * ```ts ignore
 * import { type GemmOptions, matmul, Tensor } from "@llm-surgeon/toolkit";
 * const x = await Tensor.from([1, 2, 3, 4], [2, 2]); // [tokens, in]
 * const w = await Tensor.from([1, 0, 0, 1], [2, 2]); // [out, in], as nn.Linear stores it
 * const b = await Tensor.from([10, 20]);
 * const opts: GemmOptions = { transB: true, bias: b }; // y = x·Wᵀ + b
 * console.log(await matmul(x, w, opts).read()); // Float32Array [11, 22, 13, 24]
 * ```
 */
export interface GemmOptions {
  /** Use Aᵀ (A stored `[K, M]`). */
  transA?: boolean;
  /** Use Bᵀ (B stored `[N, K]`). */
  transB?: boolean;
  /** α, default 1. */
  alpha?: number;
  /** β, default 0; needs `out`. `beta: 1` accumulates (C += …). */
  beta?: number;
  /** Output tensor (required when β ≠ 0). */
  out?: Tensor;
  /** A length-N row vector added to every row of C (after α·A·B + β·C). */
  bias?: Tensor;
  /** Name of a new output tensor. */
  name?: string;
  /** Overrides of the automatically chosen kernel configuration (for tests and benchmarks). */
  config?: Partial<GemmConfig>;
  /**
   * Band hints that let the kernel skip work (causal attention). Indices are those of one
   * product of the batch: row i and column j of C, k of the inner dimension.
   * - `out: [lo, hi]`: only elements with `lo ≤ j − i ≤ hi` are needed; the others are left
   *   unspecified (blocks entirely outside are skipped).
   * - `a: [lo, hi]`: op(A)[i, k] is zero unless `lo ≤ k − i ≤ hi`; each block of rows runs its
   *   K loop over its band only (the result is the same).
   *
   * A kernel may ignore the hints (the workgroup-memory family, and the tall product of a 3-D A
   * with a 2-D B, do).
   */
  band?: GemmBand;
}

/**
 * Band hints of {@link GemmOptions}: `out` bounds j − i of the needed elements of C, `a` bounds
 * k − i of the non-zero elements of op(A). Use ±{@link BAND_OPEN} for an open side.
 *
 * @example Usage
 * ```ts ignore
 * // causal scores q·kᵀ (query i sees keys j ≤ i), then probabilities · v
 * const s = matmul(q, k, { transB: true, band: { out: [-BAND_OPEN, 0] } });
 * const o = matmul(p, v, { band: { a: [-BAND_OPEN, 0] } });
 * ```
 */
export interface GemmBand {
  /** Needed elements of C: lo ≤ j − i ≤ hi. */
  out?: [number, number];
  /** Non-zero elements of op(A): lo ≤ k − i ≤ hi. */
  a?: [number, number];
}

/** An open side of a {@link GemmBand} (2³⁰: beyond any index). */
export const BAND_OPEN = 1 << 30;

/**
 * Kernel configuration of the GEMM generator.
 *
 * @example Usage
 * ```ts ignore
 * import { gemmConfig, type GemmConfig, gpu, matmul } from "@llm-surgeon/toolkit";
 * const cfg: GemmConfig = gemmConfig(await gpu(), 2048, 768, 768); // what matmul would pick
 * console.log(cfg.rows, cfg.cols, cfg.kChunk);
 * // Force a smaller K chunk to exercise chunked accumulation in a test.
 * const y = matmul(a, b, { config: { kChunk: 64 } });
 * ```
 */
export interface GemmConfig {
  /** Rows of C per invocation (1, 2, 4, 8 or 16). */
  rows: number;
  /** Columns of C per invocation (a multiple of 4, ≤ 16). */
  cols: number;
  /** Workgroup size along N. */
  wgX: number;
  /** Workgroup size along M. */
  wgY: number;
  /** Largest K handled by one dispatch (a multiple of 4); longer products accumulate chunks. */
  kChunk: number;
  /** Stage A and B through workgroup memory (real GPUs); 0 = off, else the K-tile depth (4 or 8). */
  tileK: number;
  /**
   * Bind A and B as `array<vec4f>` (padding an operand whose rows are not a multiple of 4 into
   * a zero-padded copy). Needs `rows % 4 == 0` when A is transposed.
   */
  vec: boolean;
}

/** Variant flags that select one compiled kernel. Few flags keep compile time down: lavapipe
 * spends 0.5–2 s in LLVM on each fully unrolled 16×16 variant the first time it meets it. */
interface Variant {
  cfg: GemmConfig;
  transA: boolean;
  transB: boolean;
  sym: boolean;
  /** A is stored as f16 (halves packed in u32 words), widened to f32 as it is loaded. */
  halfA: boolean;
  /** B is stored as f16. */
  halfB: boolean;
  /** Band hints are applied (parameters `mBase … aHi` follow the common ones). */
  band: boolean;
}

/** The small scalar configuration: cheap to compile, used for small products and K tails. */
const SCALAR: GemmConfig = { rows: 4, cols: 4, wgX: 8, wgY: 8, kChunk: 1024, tileK: 0, vec: false };

/**
 * Chooses the GEMM configuration for a product of the given size on the runtime's adapter.
 * Software adapters get 16×16 vec4 register blocks without workgroup memory for products of
 * at least 2¹⁸ multiply-adds (4×16 when M ≤ 4; 8×8 for outputs of at most 256×256), and a small
 * scalar 4×4 block below that (cheap to compile); real GPUs get 4×4 vec4 blocks in 16×16 workgroups (the workgroup-memory tiled
 * family stays available through `config.tileK`).
 *
 * @param rt the runtime (its adapter decides the family)
 * @param M rows of C
 * @param N columns of C
 * @param K the inner dimension
 * @example Usage
 * ```ts ignore
 * const cfg = gemmConfig(await gpu(), 2048, 2048, 2048);
 * ```
 */
export function gemmConfig(rt: Runtime, M: number, N: number, K: number): GemmConfig {
  if (rt.adapter.isSoftware) {
    if (M * N * K < 1 << 18) {
      return { ...SCALAR };
    }
    // Outputs of at most 256×256 (and at most 2²⁴ multiply-adds): 16×16 blocks would leave the
    // product to 1–4 workgroups; 8×8 blocks measured 15–45 % faster at 64–256.
    if (Math.max(M, N) <= 256 && M * N * K <= 1 << 24) {
      return { rows: M <= 4 ? 4 : 8, cols: 8, wgX: 8, wgY: 8, kChunk: 256, tileK: 0, vec: true };
    }
    return { rows: M <= 4 ? 4 : 16, cols: 16, wgX: 8, wgY: 8, kChunk: 256, tileK: 0, vec: true };
  }
  // Real GPUs: measured on an NVIDIA H200 (bench/tune_gemm.ts, n = 4096), vec4 register blocks
  // reading through the caches beat every workgroup-memory tiling of this generator. 8×8 blocks
  // in 8×8 workgroups were fastest there (7.0 / 7.8 TFLOP/s NN / TN), 4×4 blocks in 16×16
  // workgroups close behind (6.9 / 6.8; 4.9 / 4.2 for the tiled 4×4). Model-sized products
  // (2048×768 outputs: a few hundred 64×64 tiles) have 4× more threads with the latter to fill
  // the GPU; after a switch to 8×8 blocks the OPT-125m forward pass measured 5,150 tokens/s
  // against 6,600 before, so the default is 4×4 in 16×16 (not yet re-measured on the H200).
  if (M * N * K < 1 << 18) return { ...SCALAR, kChunk: 1 << 30 };
  return { rows: 4, cols: 4, wgX: 16, wgY: 16, kChunk: 1 << 30, tileK: 0, vec: true };
}

function variantKey(v: Variant): string {
  const c = v.cfg;
  return `gemm_r${c.rows}c${c.cols}_wg${c.wgX}x${c.wgY}_t${c.tileK}_${v.transA ? "t" : "n"}${
    v.transB ? "t" : "n"
  }${c.vec ? "_vec" : ""}${v.sym ? "_sym" : ""}${v.halfA ? "_a16" : ""}${v.halfB ? "_b16" : ""}${
    v.band ? "_band" : ""
  }`;
}

/**
 * WGSL type of an operand binding: f32 as `f32`/`vec4f`; f16 as its words, `u32` (two halves)
 * or `vec2u` (four halves, the vec4 family's load unit).
 */
function operandArray(half: boolean, vec: boolean): string {
  if (half) return vec ? "array<vec2u>" : "array<u32>";
  return vec ? "array<vec4f>" : "array<f32>";
}

/**
 * WGSL of the scalar accessor `fn <name>(i: u32) -> f32` for element `i` of operand `X`,
 * widening halves with the core builtin `unpack2x16float` (no `shader-f16` feature needed).
 */
function elementAccessor(name: string, X: string, half: boolean, vec: boolean): string {
  let body: string;
  if (!half) body = vec ? `${X}[i >> 2u][i & 3u]` : `${X}[i]`;
  else if (vec) body = `unpack2x16float(${X}[i >> 2u][(i >> 1u) & 1u])[i & 1u]`;
  else body = `unpack2x16float(${X}[i >> 1u])[i & 1u]`;
  return `fn ${name}(i: u32) -> f32 { return ${body}; }`;
}

/** WGSL expression of one element of an operand in the scalar family (`X[i]` for f32). */
function scalarLoad(X: string, half: boolean, i: string): string {
  return half ? `e${X.toLowerCase()}(${i})` : `${X}[${i}]`;
}

/** WGSL expression of the vec4f at vec4 index `q` of an operand in the vec4 family. */
function vecLoad(X: string, half: boolean, q: string): string {
  return half ? `h4(${X}[${q}])` : `${X}[${q}]`;
}

/**
 * Generates the WGSL of one GEMM variant. Exposed for inspection and tests; {@link matmul}
 * calls it through the kernel cache.
 *
 * Parameters (uniform, in elements): M, N, K, lda, ldb, ldc, offA, offB, offC, sA, sB, sC
 * (batch strides), offBias, hasBias, then α and β. With `cfg.vec` A and B are bound as
 * `array<vec4f>` and need their leading dimension, offset and batch stride to be multiples of 4.
 * The bias binding is always present (bound to A when there is no bias; `hasBias` = 0).
 */
function gemmSource(v: Variant): string {
  const { rows: R, cols: C, wgX, wgY, tileK } = v.cfg;
  const CV = C / 4;
  const L: string[] = [];
  const vec = v.cfg.vec;
  L.push(`@group(0) @binding(0) var<storage, read> A: ${operandArray(v.halfA, vec)};`);
  L.push(`@group(0) @binding(1) var<storage, read> B: ${operandArray(v.halfB, vec)};`);
  L.push(`@group(0) @binding(2) var<storage, read_write> C: ${operandArray(false, vec)};`);
  L.push(`@group(0) @binding(3) var<storage, read> bias: array<f32>;`);
  // Band variants: offsets of this dispatch's chunk in the whole product, which hints are on
  // (bit 0: out, bit 1: a), and the bands.
  const bandFields = v.band
    ? `,
  mBase: u32, nBase: u32, kBase: u32, bflags: u32, oLo: i32, oHi: i32, aLo: i32, aHi: i32,
  perm: u32`
    : "";
  L.push(`struct P { M: u32, N: u32, K: u32, lda: u32, ldb: u32, ldc: u32, offA: u32, offB: u32,
  offC: u32, sA: u32, sB: u32, sC: u32, offBias: u32, hasBias: u32, alpha: f32, beta: f32${bandFields} };`);
  L.push(`@group(0) @binding(4) var<uniform> p: P;`);
  // Scalar element access, whatever the binding type; four halves widened at once.
  L.push(elementAccessor("ea", "A", v.halfA, vec), elementAccessor("eb", "B", v.halfB, vec));
  if (vec && (v.halfA || v.halfB)) {
    L.push(
      `fn h4(w: vec2u) -> vec4f { return vec4f(unpack2x16float(w.x), unpack2x16float(w.y)); }`,
    );
  }
  // Scalar store of one element of C (bounds checked by the caller).
  if (!vec) {
    L.push(`fn put(i: u32, n: u32, x: f32) {
  var y = p.alpha * x;
  if (p.beta != 0.0) { y = y + p.beta * C[i]; }
  if (p.hasBias != 0u) { y = y + bias[p.offBias + n]; }
  C[i] = y;
}`);
  } else {
    L.push(`fn biasAt(n: u32) -> vec4f {
  let b = p.offBias + n;
  return vec4f(bias[b], bias[b + 1u], bias[b + 2u], bias[b + 3u]);
}`);
  }
  if (tileK > 0) L.push(...sharedDecls(v));

  L.push(`@compute @workgroup_size(${wgX}, ${wgY})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u${
    v.sym || v.band ? ", @builtin(num_workgroups) nwg: vec3u" : ""
  }) {`);
  const B_ = L; // body lines pushed below with indentation
  const body = (...s: string[]) => B_.push(...s.map((x) => "  " + x));
  if (v.sym) {
    // Only tiles on or above the diagonal work; each computes its blocks once and writes both
    // (r, c) and (c, r). Inside diagonal tiles the lower-triangle invocations step aside.
    // Row tile t has (tiles − t) tiles of work, and llvmpipe hands each worker thread one
    // contiguous run of workgroups: the rows are folded (0, T−1, 1, T−2, …) so that every pair
    // of consecutive rows holds the same work, which splits evenly between the threads.
    body(`let wy = select(nwg.y - (wid.y + 1u) / 2u, wid.y / 2u, (wid.y & 1u) == 0u);`);
    body(`if (wy > wid.x) { return; }`);
    body(`if (wy == wid.x && lid.y > lid.x) { return; }`);
  } else if (v.band) {
    // Work varies along the rows here too, in steps when K is chunked: rows in the order of the
    // stride p.perm (kernels/_order.ts).
    body(`let wy = (wid.y * p.perm) % nwg.y;`);
  } else {
    body(`let wy = wid.y;`);
  }
  body(`let m0 = (wy * ${wgY}u + lid.y) * ${R}u;`);
  body(`let n0 = (wid.x * ${wgX}u + lid.x) * ${C}u;`);
  if (tileK === 0) body(`if (m0 >= p.M || n0 >= p.N) { return; }`);
  if (v.band) body(...bandPrologue(R, C));
  body(`let bz = wid.z;`);
  body(`let baseA = p.offA + bz * p.sA;`);
  body(`let baseB = p.offB + bz * p.sB;`);
  body(`let baseC = p.offC + bz * p.sC;`);
  body(`let mLast = p.M - 1u;`);
  body(`let nLast = p.N - 1u;`);
  for (let r = 0; r < R; r++) body(`let mi${r} = min(m0 + ${r}u, mLast);`);
  for (let c = 0; c < C; c++) body(`let ni${c} = min(n0 + ${c}u, nLast);`);
  if (v.transA && vec) {
    for (let g = 0; g < R / 4; g++) body(`let mg${g} = min(m0 + ${4 * g}u, mLast & ~3u);`);
  }
  if (!v.transB && vec) {
    for (let g = 0; g < CV; g++) body(`let ng${g} = min(n0 + ${4 * g}u, nLast & ~3u);`);
  }
  for (let r = 0; r < R; r++) {
    for (let g = 0; g < CV; g++) body(`var acc${r}_${g} = vec4f(0.0);`);
  }
  if (tileK > 0) {
    L.push(...sharedLoop(v));
  } else {
    body(`let K4 = p.K & ~3u;`);
    if (v.band) body(...bandKRange());
    body(`for (var k = ${v.band ? "kLo" : "0u"}; k < ${v.band ? "kHi" : "K4"}; k = k + 4u) {`);
    for (const s of loadStep(v)) body("  " + s);
    for (const s of fmaStep(R, CV, 4)) body("  " + s);
    body(`}`);
    // Tail of K when it is not a multiple of 4 (the vec4 family never sees one: the driver
    // hands such tails to the scalar kernel).
    if (!vec) {
      body(`for (var k = K4; k < p.K; k = k + 1u) {`);
      for (let r = 0; r < R; r++) {
        const idx = v.transA ? `baseA + k * p.lda + mi${r}` : `baseA + mi${r} * p.lda + k`;
        body(`  let a${r}_0 = ea(${idx});`);
      }
      for (let g = 0; g < CV; g++) {
        const comps = [0, 1, 2, 3].map((j) => {
          const c = 4 * g + j;
          return v.transB ? `eb(baseB + ni${c} * p.ldb + k)` : `eb(baseB + k * p.ldb + ni${c})`;
        });
        body(`  let b0_${g} = vec4f(${comps.join(", ")});`);
      }
      for (const s of fmaStep(R, CV, 1)) body("  " + s);
      body(`}`);
    }
  }
  if (tileK > 0) body(`if (m0 >= p.M || n0 >= p.N) { return; }`);
  // Store the block (and, in symmetric mode, its mirror image).
  if (vec) body(...vecStores(v));
  else {
    for (let r = 0; r < R; r++) {
      body(`if (m0 + ${r}u < p.M) {`);
      body(`  let row${r} = baseC + (m0 + ${r}u) * p.ldc;`);
      for (let g = 0; g < CV; g++) {
        const n = `n0 + ${4 * g}u`;
        for (let j = 0; j < 4; j++) {
          body(
            `  if (${n} + ${j}u < p.N) { put(row${r} + ${n} + ${j}u, ${n} + ${j}u, acc${r}_${g}[${j}]); }`,
          );
        }
      }
      body(`}`);
    }
  }
  L.push(`}`);
  return L.join("\n");
}

/**
 * Band variants, after the bounds check: the invocation's rows and columns in the whole product,
 * and an early return when its block of C lies outside the output band.
 */
function bandPrologue(R: number, C: number): string[] {
  return [
    `let gi0 = i32(p.mBase + m0); let gi1 = i32(p.mBase + min(m0 + ${R - 1}u, p.M - 1u));`,
    `let gj0 = i32(p.nBase + n0); let gj1 = i32(p.nBase + min(n0 + ${C - 1}u, p.N - 1u));`,
    `if ((p.bflags & 1u) != 0u && (gj0 - gi1 > p.oHi || gj1 - gi0 < p.oLo)) { return; }`,
  ];
}

/**
 * Band variants: the K range [kLo, kHi) of this chunk (multiples of 4 within K4) that holds the
 * non-zero band of the invocation's rows of op(A); the whole chunk without an A band.
 */
function bandKRange(): string[] {
  return [
    `var kLo = 0u; var kHi = K4;`,
    `if ((p.bflags & 2u) != 0u) {`,
    `  let kb = i32(p.kBase);`,
    `  let hi = clamp(gi1 + p.aHi + 1 - kb, 0, i32(K4));`,
    `  let lo = clamp(gi0 + p.aLo - kb, 0, hi);`,
    `  kLo = u32(lo) & ~3u;`,
    `  kHi = min(K4, (u32(hi) + 3u) & ~3u);`,
    `}`,
  ];
}

/**
 * Epilogue of the vec4 family. C is read (for β) at clamped, always valid indices and the bias
 * once per column group, so that the only branches are the final bounds checks: on lavapipe
 * every memory access and branch in this unrolled code costs LLVM compile time.
 */
function vecStores(v: Variant): string[] {
  const { rows: R, cols: C } = v.cfg;
  const CV = C / 4;
  const o: string[] = [];
  o.push(`let useBeta = p.beta != 0.0;`);
  o.push(`let cLast = (p.N - 1u) & ~3u;`);
  for (let g = 0; g < CV; g++) o.push(`let cg${g} = min(n0 + ${4 * g}u, cLast);`);
  if (v.sym) {
    // Mirror first (it needs the raw products): C[n0 + c, m0 + r] for off-diagonal blocks.
    o.push(`if (m0 != n0) {`);
    for (let q = 0; q < R / 4; q++) o.push(`  let cq${q} = min(m0 + ${4 * q}u, (p.M - 1u) & ~3u);`);
    for (let q = 0; q < R / 4; q++) {
      o.push(`  let bq${q} = select(vec4f(0.0), biasAt(m0 + ${4 * q}u), p.hasBias != 0u);`);
    }
    for (let c = 0; c < C; c++) {
      const g = Math.floor(c / 4), j = c % 4;
      o.push(`  let rowT${c} = baseC + min(n0 + ${c}u, nLast) * p.ldc;`);
      for (let q = 0; q < R / 4; q++) {
        const comps = [0, 1, 2, 3].map((t) => `acc${4 * q + t}_${g}[${j}]`).join(", ");
        o.push(
          `  let t${c}_${q} = p.alpha * vec4f(${comps}) + select(vec4f(0.0), p.beta * C[(rowT${c} + cq${q}) >> 2u], useBeta) + bq${q};`,
        );
      }
    }
    for (let c = 0; c < C; c++) {
      o.push(`  if (n0 + ${c}u < p.N) {`);
      for (let q = 0; q < R / 4; q++) {
        o.push(
          `    if (m0 + ${4 * q}u < p.M) { C[(rowT${c} + m0 + ${4 * q}u) >> 2u] = t${c}_${q}; }`,
        );
      }
      o.push(`  }`);
    }
    o.push(`}`);
  }
  for (let g = 0; g < CV; g++) {
    o.push(`let bg${g} = select(vec4f(0.0), biasAt(n0 + ${4 * g}u), p.hasBias != 0u);`);
  }
  for (let r = 0; r < R; r++) {
    o.push(`let rowC${r} = baseC + mi${r} * p.ldc;`);
    for (let g = 0; g < CV; g++) {
      o.push(
        `acc${r}_${g} = p.alpha * acc${r}_${g} + select(vec4f(0.0), p.beta * C[(rowC${r} + cg${g}) >> 2u], useBeta) + bg${g};`,
      );
    }
  }
  for (let r = 0; r < R; r++) {
    o.push(`if (m0 + ${r}u < p.M) {`);
    for (let g = 0; g < CV; g++) {
      o.push(
        `  if (n0 + ${4 * g}u < p.N) { C[(rowC${r} + n0 + ${4 * g}u) >> 2u] = acc${r}_${g}; }`,
      );
    }
    o.push(`}`);
  }
  return o;
}

/** Loads of one K-step of 4 from storage: defines `a{r}_{kk}` (f32) and `b{kk}_{g}` (vec4f). */
function loadStep(v: Variant): string[] {
  const { rows: R, cols: C } = v.cfg;
  const CV = C / 4;
  const out: string[] = [];
  // A: a{r}_{kk} = op(A)[m0 + r, k + kk]
  if (!v.transA) {
    for (let r = 0; r < R; r++) {
      const i = `baseA + mi${r} * p.lda + k`;
      if (v.cfg.vec) out.push(`let av${r} = ${vecLoad("A", v.halfA, `(${i}) >> 2u`)};`);
      else {
        const comps = [0, 1, 2, 3].map((j) => scalarLoad("A", v.halfA, j ? `${i} + ${j}u` : i));
        out.push(`let av${r} = vec4f(${comps.join(", ")});`);
      }
      for (let kk = 0; kk < 4; kk++) out.push(`let a${r}_${kk} = av${r}[${kk}];`);
    }
  } else {
    for (let kk = 0; kk < 4; kk++) {
      const row = `baseA + (k + ${kk}u) * p.lda`;
      if (v.cfg.vec) {
        for (let g = 0; g < R / 4; g++) {
          out.push(`let at${kk}_${g} = ${vecLoad("A", v.halfA, `(${row} + mg${g}) >> 2u`)};`);
          for (let j = 0; j < 4; j++) out.push(`let a${4 * g + j}_${kk} = at${kk}_${g}[${j}];`);
        }
      } else {
        for (let r = 0; r < R; r++) {
          out.push(`let a${r}_${kk} = ${scalarLoad("A", v.halfA, `${row} + mi${r}`)};`);
        }
      }
    }
  }
  // B: b{kk}_{g} = op(B)[k + kk, n0 + 4g .. n0 + 4g + 3]
  if (!v.transB) {
    for (let kk = 0; kk < 4; kk++) {
      const row = `baseB + (k + ${kk}u) * p.ldb`;
      for (let g = 0; g < CV; g++) {
        if (v.cfg.vec) {
          out.push(`let b${kk}_${g} = ${vecLoad("B", v.halfB, `(${row} + ng${g}) >> 2u`)};`);
        } else {
          const comps = [0, 1, 2, 3].map((j) =>
            scalarLoad("B", v.halfB, `${row} + ni${4 * g + j}`)
          );
          out.push(`let b${kk}_${g} = vec4f(${comps.join(", ")});`);
        }
      }
    }
  } else {
    for (let c = 0; c < C; c++) {
      const i = `baseB + ni${c} * p.ldb + k`;
      if (v.cfg.vec) out.push(`let bt${c} = ${vecLoad("B", v.halfB, `(${i}) >> 2u`)};`);
      else {
        const comps = [0, 1, 2, 3].map((j) => scalarLoad("B", v.halfB, j ? `${i} + ${j}u` : i));
        out.push(`let bt${c} = vec4f(${comps.join(", ")});`);
      }
    }
    for (let kk = 0; kk < 4; kk++) {
      for (let g = 0; g < CV; g++) {
        const comps = [0, 1, 2, 3].map((j) => `bt${4 * g + j}[${kk}]`);
        out.push(`let b${kk}_${g} = vec4f(${comps.join(", ")});`);
      }
    }
  }
  return out;
}

/** The multiply-adds of one K-step of `depth` (1 or 4). */
function fmaStep(R: number, CV: number, depth: number): string[] {
  const out: string[] = [];
  for (let r = 0; r < R; r++) {
    for (let g = 0; g < CV; g++) {
      const terms = [];
      for (let kk = 0; kk < depth; kk++) terms.push(`a${r}_${kk} * b${kk}_${g}`);
      out.push(`acc${r}_${g} = acc${r}_${g} + ${terms.join(" + ")};`);
    }
  }
  return out;
}

/** Workgroup-memory tiles for the shared-memory family (real GPUs). */
function sharedDecls(v: Variant): string[] {
  const { rows: R, cols: C, wgX, wgY, tileK } = v.cfg;
  const TM = R * wgY, TN = C * wgX;
  return [
    `var<workgroup> tA: array<f32, ${tileK * TM}>; // [tileK][TM]`,
    `var<workgroup> tB: array<f32, ${tileK * TN}>; // [tileK][TN]`,
  ];
}

/**
 * K loop of the shared-memory family: the workgroup cooperatively stages a `tileK × TM` panel of
 * op(A) and a `tileK × TN` panel of op(B) (zero outside the matrix), then every invocation runs
 * its register block from workgroup memory.
 */
function sharedLoop(v: Variant): string[] {
  const { rows: R, cols: C, wgX, wgY, tileK } = v.cfg;
  const CV = C / 4;
  const TM = R * wgY, TN = C * wgX, NT = wgX * wgY;
  const aIdx = v.transA ? "baseA + kk * p.lda + mm" : "baseA + mm * p.lda + kk";
  const bIdx = v.transB ? "baseB + nn * p.ldb + kk" : "baseB + kk * p.ldb + nn";
  const s: string[] = [];
  const t = (x: string) => s.push("  " + x);
  t(`let tid = lid.y * ${wgX}u + lid.x;`);
  t(`let tm0 = wy * ${TM}u;`);
  t(`let tn0 = wid.x * ${TN}u;`);
  t(`let lm0 = lid.y * ${R}u;`);
  t(`let ln0 = lid.x * ${C}u;`);
  t(`for (var k0 = 0u; k0 < p.K; k0 = k0 + ${tileK}u) {`);
  t(`  for (var e = tid; e < ${tileK * TM}u; e = e + ${NT}u) {`);
  t(`    let kk = k0 + e / ${TM}u; let mm = tm0 + e % ${TM}u;`);
  t(`    var x = 0.0;`);
  t(`    if (kk < p.K && mm < p.M) { x = ea(${aIdx}); }`);
  t(`    tA[e] = x;`);
  t(`  }`);
  t(`  for (var e = tid; e < ${tileK * TN}u; e = e + ${NT}u) {`);
  t(`    let kk = k0 + e / ${TN}u; let nn = tn0 + e % ${TN}u;`);
  t(`    var x = 0.0;`);
  t(`    if (kk < p.K && nn < p.N) { x = eb(${bIdx}); }`);
  t(`    tB[e] = x;`);
  t(`  }`);
  t(`  workgroupBarrier();`);
  t(`  for (var q = 0u; q < ${tileK}u; q = q + 1u) {`);
  for (let r = 0; r < R; r++) t(`    let a${r}_0 = tA[q * ${TM}u + lm0 + ${r}u];`);
  for (let g = 0; g < CV; g++) {
    const comps = [0, 1, 2, 3].map((j) => `tB[q * ${TN}u + ln0 + ${4 * g + j}u]`);
    t(`    let b0_${g} = vec4f(${comps.join(", ")});`);
  }
  for (const x of fmaStep(R, CV, 1)) t("    " + x);
  t(`  }`);
  t(`  workgroupBarrier();`);
  t(`}`);
  return s;
}

/** One operand as the kernel sees it: a tensor plus leading dimension and batch stride. */
interface Operand {
  t: Tensor;
  ld: number;
  stride: number;
}

/**
 * `C = α·op(A)·op(B) + β·C (+ bias)`. Records the work; returns C (new, or `opts.out`).
 *
 * @param a `[M, K]` (or `[K, M]` with `transA`), optionally with a leading batch dimension;
 *   f32 or f16
 * @param b `[K, N]` (or `[N, K]` with `transB`), 2-D (shared over the batch) or batched like `a`;
 *   f32 or f16
 * @param opts transposes, α, β, output, bias, name
 * @example Usage
 * ```ts ignore
 * const y = matmul(x, w, { transB: true, bias: b });        // linear layer y = x·Wᵀ + b
 * matmul(x, x, { transA: true, beta: 1, out: acc });         // acc += xᵀ·x
 * const y16 = matmul(x, toF16(w), { transB: true });       // f16 weights, f32 result
 * ```
 */
export function matmul(a: Tensor, b: Tensor, opts: GemmOptions = {}): Tensor {
  const { transA = false, transB = false, alpha = 1, beta = 0 } = opts;
  const op = `matmul(${a.name}, ${b.name})`;
  if (a.shape.length < 2 || a.shape.length > 3 || b.shape.length < 2 || b.shape.length > 3) {
    throw new GpuError(op, `expects 2-D or 3-D operands, got [${a.shape}] and [${b.shape}]`);
  }
  for (const t of [a, b]) {
    if (t.dtype !== "f32" && t.dtype !== "f16") {
      throw new GpuError(op, `expects f32 or f16 operands, got ${a} and ${b}`);
    }
  }
  const aBatch = a.shape.length === 3 ? a.shape[0] : 1;
  const bBatch = b.shape.length === 3 ? b.shape[0] : 1;
  if (bBatch !== 1 && a.shape.length === 3 && bBatch !== aBatch) {
    throw new GpuError(op, `batch sizes differ: [${a.shape}] vs [${b.shape}]`);
  }
  const batch = Math.max(aBatch, bBatch);
  const [ar, ac] = a.shape.slice(-2);
  const [br, bc] = b.shape.slice(-2);
  const [M, K] = transA ? [ac, ar] : [ar, ac];
  const [K2, N] = transB ? [bc, br] : [br, bc];
  if (K !== K2) {
    throw new GpuError(
      op,
      `inner dimensions differ: op(A) is ${M}×${K} ([${a.shape}]${transA ? "ᵀ" : ""}), ` +
        `op(B) is ${K2}×${N} ([${b.shape}]${transB ? "ᵀ" : ""})`,
    );
  }
  const cShape = a.shape.length === 3 || b.shape.length === 3 ? [batch, M, N] : [M, N];
  let out = opts.out;
  if (out) {
    if (out.size !== batch * M * N) {
      throw new GpuError(op, `output ${out} does not have ${batch}×${M}×${N} elements`);
    }
    if (out === a || out === b) throw new GpuError(op, "output must not alias an input");
    if (out.dtype !== "f32") throw new GpuError(op, `output ${out} must be f32`);
  } else {
    if (beta !== 0) throw new GpuError(op, "beta ≠ 0 needs an output tensor");
    out = new Tensor(a.rt, cShape, "f32", opts.name ?? "matmul");
  }
  if (opts.bias && (opts.bias.size !== N || opts.bias.dtype !== "f32")) {
    throw new GpuError(op, `bias ${opts.bias} must be f32 with ${N} elements`);
  }
  if (!Number.isFinite(alpha) || !Number.isFinite(beta)) {
    throw new GpuError(op, `alpha ${alpha} and beta ${beta} must be finite`);
  }
  if (M === 0 || N === 0 || batch === 0) return out;
  const rt = a.rt;
  // A 3-D non-transposed A times a shared 2-D B is one tall product.
  let mRows = M, nBatch = batch;
  let sA = aBatch > 1 ? ar * ac : 0;
  const sB = bBatch > 1 ? br * bc : 0;
  if (batch > 1 && !transA && bBatch === 1) {
    mRows = M * batch;
    nBatch = 1;
    sA = 0;
  }
  const cfg: GemmConfig = { ...gemmConfig(rt, mRows, N, K * nBatch), ...opts.config };
  if (cfg.cols % 4 !== 0 || cfg.cols < 4 || cfg.rows < 1 || (cfg.vec && cfg.rows % 4 !== 0)) {
    throw new GpuError(
      op,
      `invalid configuration rows ${cfg.rows}, cols ${cfg.cols}, vec ${cfg.vec}`,
    );
  }
  if (K === 0 || cfg.tileK > 0) cfg.vec = false;
  const temps: Tensor[] = [];
  const pad = (t: Tensor): Tensor => {
    if (!cfg.vec || t.cols % 4 === 0) return t;
    // padCols moves 4-byte words: an f16 operand is widened first (a rare case: the weights
    // of real models have rows of a multiple of 4 halves).
    const wide = t.dtype === "f16" ? toF32(t, { name: `${t.name}_f32` }) : t;
    const p = padCols(wide, Math.ceil(t.cols / 4) * 4);
    if (wide !== t) wide.dispose();
    temps.push(p);
    return p;
  };
  const pa = pad(a);
  const pb = b === a ? pa : pad(b);
  // The vec4 kernel also stores C as vec4: an unaligned C goes through a padded temporary.
  let pc = out;
  if (cfg.vec && N % 4 !== 0) {
    pc = beta !== 0 ? padCols(out, Math.ceil(N / 4) * 4) : new Tensor(
      rt,
      [...out.shape.slice(0, -1), Math.ceil(N / 4) * 4],
      "f32",
      `${out.name}_padded`,
    );
    temps.push(pc);
  }
  const A: Operand = { t: pa, ld: pa.cols, stride: sA === 0 ? 0 : ar * pa.cols };
  const B: Operand = { t: pb, ld: pb.cols, stride: sB === 0 ? 0 : br * pb.cols };
  const C: Operand = { t: pc, ld: pc.cols, stride: nBatch > 1 ? M * pc.cols : 0 };
  const sym = a === b && transA !== transB && nBatch === 1 && cfg.rows === cfg.cols &&
    cfg.wgX === cfg.wgY && cfg.vec && cfg.tileK === 0 && M === N;
  // Band hints need whole products per batch element (not the tall product) and no barriers.
  const bandParams = opts.band && (opts.band.out || opts.band.a) ? checkBand(op, opts.band) : null;
  const band = bandParams && mRows === M && cfg.tileK === 0 && !sym ? bandParams : null;
  const dims = { M: mRows, N, K, batch: nBatch, alpha, beta };
  const flags = {
    transA,
    transB,
    sym,
    halfA: pa.dtype === "f16",
    halfB: pb.dtype === "f16",
    band: band !== null,
  };
  run(rt, op, cfg, flags, A, B, C, opts.bias ?? null, dims, band);
  if (pc !== out) unpadCols(pc, out);
  for (const t of temps) t.dispose();
  return out;
}

/** The band hints as kernel parameters: flags, out [lo, hi], a [lo, hi]; integers checked. */
function checkBand(op: string, band: GemmBand): number[] {
  const side = (name: string, b: [number, number] | undefined): [number, number] => {
    if (!b) return [-BAND_OPEN, BAND_OPEN];
    const [lo, hi] = b;
    if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo > hi) {
      throw new GpuError(op, `band.${name} [${lo}, ${hi}] must be integers with lo ≤ hi`);
    }
    const clip = (x: number) => Math.max(-BAND_OPEN, Math.min(BAND_OPEN, x));
    return [clip(lo), clip(hi)];
  };
  return [(band.out ? 1 : 0) | (band.a ? 2 : 0), ...side("out", band.out), ...side("a", band.a)];
}

/**
 * Longest K chunk whose K loop stays under 32,768 iterations per invocation. Mesa's llvmpipe
 * silently ends every loop of an invocation after 65,535 iterations in total, so on software
 * adapters K is split (accumulating through C) before that. The default software configurations
 * (kChunk 256 or 1024) are far below; this guards overrides such as a large `kChunk` or tiles.
 */
function loopSafeK(cfg: GemmConfig): number {
  const budget = 32768;
  if (cfg.tileK === 0) return 4 * (budget - 4);
  const TM = cfg.rows * cfg.wgY, TN = cfg.cols * cfg.wgX, NT = cfg.wgX * cfg.wgY;
  const perStep = 1 + Math.ceil((cfg.tileK * TM) / NT) + Math.ceil((cfg.tileK * TN) / NT) +
    cfg.tileK;
  return Math.floor(budget / perStep) * cfg.tileK;
}

/** Elements one binding may hold, minus slack for offset alignment and vec4 rounding. */
function bindLimit(rt: Runtime, t: Tensor): number {
  const eb = t.elementBytes;
  return Math.floor(rt.maxBinding / eb) - 2 * (rt.offsetAlign / eb) - 8;
}

/** A binding for elements `[start, end)` of `t`: aligned range plus the element offset inside it. */
function window(rt: Runtime, t: Tensor, start: number, end: number, vec: boolean) {
  const align = rt.offsetAlign / t.elementBytes;
  const s0 = Math.floor(start / align) * align;
  let e = vec ? Math.ceil(end / 4) * 4 : end;
  e = Math.min(Math.max(e, s0 + (vec ? 4 : 1)), t.size);
  return { range: t.range(s0, e - s0), off: start - s0 };
}

/**
 * Records the dispatches of one product: whole tensors bound at once when they fit (K split into
 * cache-sized chunks), otherwise per batch element and per (M, N, K) chunk with aligned windows.
 */
function run(
  rt: Runtime,
  op: string,
  cfg: GemmConfig,
  flags: Omit<Variant, "cfg">,
  A: Operand,
  B: Operand,
  C: Operand,
  bias: Tensor | null,
  dims: { M: number; N: number; K: number; batch: number; alpha: number; beta: number },
  band: number[] | null,
) {
  const { transA, transB } = flags;
  const { M, N, K, batch, alpha, beta } = dims;
  const [limA, limB, limC] = [bindLimit(rt, A.t), bindLimit(rt, B.t), bindLimit(rt, C.t)];
  const whole = A.t.size <= limA && B.t.size <= limB && C.t.size <= limC;
  const tileM = cfg.rows * cfg.wgY, tileN = cfg.cols * cfg.wgX;
  // Chunk sizes. K chunks keep the streamed panel cache-sized (and bindings small).
  let mc = M, nc = N, kc = Math.min(K, cfg.kChunk);
  if (!whole) {
    if (!transA) mc = Math.min(mc, Math.floor(limA / A.ld));
    mc = Math.min(mc, Math.floor(limC / C.ld));
    if (transB) nc = Math.min(nc, Math.floor(limB / B.ld));
    if (transA) kc = Math.min(kc, Math.floor(limA / A.ld));
    if (!transB) kc = Math.min(kc, Math.floor(limB / B.ld));
    if (mc < 1 || nc < 1 || kc < 1) {
      throw new GpuError(
        op,
        `a single row is larger than the binding limit ${rt.maxBinding} bytes`,
      );
    }
    if (mc < M) {
      mc = mc >= tileM ? Math.floor(mc / tileM) * tileM : mc >= 4 ? Math.floor(mc / 4) * 4 : mc;
    }
    if (nc < N) {
      nc = nc >= tileN ? Math.floor(nc / tileN) * tileN : Math.max(4, Math.floor(nc / 4) * 4);
    }
  }
  // A dispatch has at most maxComputeWorkgroupsPerDimension (65535) workgroups along N and M:
  // longer dimensions (an LM head over a large vocabulary on small GPU tiles) go in chunks of
  // whole tiles of the smallest kernel used (the scalar one handles K tails).
  const maxGroups = rt.device.limits.maxComputeWorkgroupsPerDimension;
  const minTileN = Math.min(tileN, SCALAR.cols * SCALAR.wgX);
  const minTileM = Math.min(tileM, SCALAR.rows * SCALAR.wgY);
  nc = Math.min(nc, maxGroups * minTileN);
  mc = Math.min(mc, maxGroups * minTileM);
  if (rt.adapter.loopLimited) kc = Math.min(kc, loopSafeK(cfg));
  if (kc < K) kc = Math.max(4, Math.floor(kc / 4) * 4);
  const sym = flags.sym && whole && mc === M && nc === N;
  // K chunks: [k0, length, kernel, tile]. The vec4 kernel walks K in steps of 4 only; a K that
  // is not a multiple of 4 leaves a tail of 1–3 that the small scalar kernel accumulates.
  const compile = (c: GemmConfig, symm: boolean) => ({
    kernel: rt.kernel(
      variantKey({ ...flags, cfg: c, sym: symm }),
      gemmSource({ ...flags, cfg: c, sym: symm }),
    ),
    tile: [c.rows * c.wgY, c.cols * c.wgX],
  });
  const main = compile(cfg, sym);
  const kMain = cfg.vec ? K - (K % 4) : K;
  const chunks: { k0: number; len: number; k: ReturnType<typeof compile> }[] = [];
  for (let k0 = 0; k0 < kMain; k0 += kc) {
    chunks.push({ k0, len: Math.min(kc, kMain - k0), k: main });
  }
  if (kMain < K) chunks.push({ k0: kMain, len: K - kMain, k: compile(SCALAR, false) });
  if (chunks.length === 0) chunks.push({ k0: 0, len: 0, k: main });
  for (let z = 0; z < (whole ? 1 : batch); z++) {
    for (let m0 = 0; m0 < M; m0 += mc) {
      const mLen = Math.min(mc, M - m0);
      for (let n0 = 0; n0 < N; n0 += nc) {
        const nLen = Math.min(nc, N - n0);
        for (const [ks, { k0, len: kLen, k }] of chunks.entries()) {
          let ra, rb, rc, offA: number, offB: number, offC: number;
          if (whole) {
            [ra, rb, rc] = [A.t.range(), B.t.range(), C.t.range()];
            offA = transA ? k0 * A.ld + m0 : m0 * A.ld + k0;
            offB = transB ? n0 * B.ld + k0 : k0 * B.ld + n0;
            offC = m0 * C.ld + n0;
          } else {
            const kl = Math.max(kLen, 1);
            const sa = z * A.stride + (transA ? k0 * A.ld + m0 : m0 * A.ld + k0);
            const ea = sa + (transA ? (kl - 1) * A.ld + mLen : (mLen - 1) * A.ld + kl);
            const sb = z * B.stride + (transB ? n0 * B.ld + k0 : k0 * B.ld + n0);
            const eb = sb + (transB ? (nLen - 1) * B.ld + kl : (kl - 1) * B.ld + nLen);
            const sc = z * C.stride + m0 * C.ld + n0;
            const wa = window(rt, A.t, sa, ea, cfg.vec);
            const wb = window(rt, B.t, sb, eb, cfg.vec);
            const wc = window(rt, C.t, sc, sc + (mLen - 1) * C.ld + nLen, cfg.vec);
            [ra, rb, rc, offA, offB, offC] = [wa.range, wb.range, wc.range, wa.off, wb.off, wc.off];
          }
          // The bias is added once, by the first K chunk; without one, A fills the binding slot.
          const useBias = ks === 0 && bias !== null;
          const params = packParams(
            mLen,
            nLen,
            kLen,
            A.ld,
            B.ld,
            C.ld,
            offA,
            offB,
            offC,
            whole ? A.stride : 0,
            whole ? B.stride : 0,
            whole ? C.stride : 0,
            useBias ? n0 : 0,
            useBias ? 1 : 0,
            f32(alpha),
            f32(ks === 0 ? beta : 1),
            ...(band ? [m0, n0, k0, ...band, rowOrder(Math.ceil(mLen / k.tile[0]))] : []),
          );
          const groups: [number, number, number] = [
            Math.ceil(nLen / k.tile[1]),
            Math.ceil(mLen / k.tile[0]),
            whole ? batch : 1,
          ];
          rt.dispatch(k.kernel, [ra, rb, rc, useBias ? bias!.range() : ra], params, groups);
        }
      }
    }
  }
}
