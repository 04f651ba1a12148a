/**
 * GEMM: `C = α·op(A)·op(B) + β·C (+ bias)`, optionally batched. One kernel family serves every
 * matrix product of the toolkit (linear layers, attention, curvature factors, pruning updates).
 *
 * Shapes: `op(A)` is `[M, K]`, `op(B)` is `[K, N]`, `C` is `[M, N]`; with `transA` A is stored
 * `[K, M]`, with `transB` B is stored `[N, K]`. A leading batch dimension on A (and optionally B
 * and C) runs `batch` independent products; a 2-D B is shared across the batch.
 *
 * @module
 */
import { f32, GpuError, packParams } from "./device.ts";
import { Tensor } from "./tensor.ts";

/** Options of {@link matmul}. */
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
}

const TM = 4;
const TN = 4;
const WGX = 8;
const WGY = 8;

function source(transA: boolean, transB: boolean, hasBias: boolean): string {
  const aIdx = transA ? "(k) * p.M + (m)" : "(m) * p.K + (k)";
  const bIdx = transB ? "(n) * p.K + (k)" : "(k) * p.N + (n)";
  return `
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
${hasBias ? "@group(0) @binding(3) var<storage, read> bias: array<f32>;" : ""}
struct P { M: u32, N: u32, K: u32, batch: u32, sA: u32, sB: u32, sC: u32, pad: u32,
           alpha: f32, beta: f32, p2: f32, p3: f32 };
@group(0) @binding(${hasBias ? 4 : 3}) var<uniform> p: P;

fn loadA(base: u32, m: u32, k: u32) -> f32 { return A[base + ${aIdx}]; }
fn loadB(base: u32, k: u32, n: u32) -> f32 { return B[base + ${bIdx}]; }

@compute @workgroup_size(${WGX}, ${WGY})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let bz = gid.z;
  let m0 = gid.y * ${TM}u;
  let n0 = gid.x * ${TN}u;
  if (m0 >= p.M || n0 >= p.N) { return; }
  let baseA = bz * p.sA;
  let baseB = bz * p.sB;
  let baseC = bz * p.sC;
  var acc: array<array<f32, ${TN}>, ${TM}>;
  var mi: array<u32, ${TM}>;
  var ni: array<u32, ${TN}>;
  for (var r = 0u; r < ${TM}u; r++) { mi[r] = min(m0 + r, p.M - 1u); }
  for (var c = 0u; c < ${TN}u; c++) { ni[c] = min(n0 + c, p.N - 1u); }
  for (var k = 0u; k < p.K; k++) {
    var av: array<f32, ${TM}>;
    for (var r = 0u; r < ${TM}u; r++) { av[r] = loadA(baseA, mi[r], k); }
    for (var c = 0u; c < ${TN}u; c++) {
      let bv = loadB(baseB, k, ni[c]);
      for (var r = 0u; r < ${TM}u; r++) { acc[r][c] = acc[r][c] + av[r] * bv; }
    }
  }
  for (var r = 0u; r < ${TM}u; r++) {
    let m = m0 + r;
    if (m >= p.M) { break; }
    for (var c = 0u; c < ${TN}u; c++) {
      let n = n0 + c;
      if (n >= p.N) { break; }
      let idx = baseC + m * p.N + n;
      var v = p.alpha * acc[r][c];
      if (p.beta != 0.0) { v = v + p.beta * C[idx]; }
      ${hasBias ? "v = v + bias[n];" : ""}
      C[idx] = v;
    }
  }
}`;
}

/**
 * `C = α·op(A)·op(B) + β·C (+ bias)`. Records the work; returns C (new, or `opts.out`).
 *
 * @example Usage
 * ```ts ignore
 * const y = matmul(x, w, { transB: true, bias: b });        // linear layer y = x·Wᵀ + b
 * matmul(x, x, { transA: true, beta: 1, out: acc });         // acc += xᵀ·x
 * ```
 */
export function matmul(a: Tensor, b: Tensor, opts: GemmOptions = {}): Tensor {
  const { transA = false, transB = false, alpha = 1, beta = 0 } = opts;
  const op = `matmul(${a.name}, ${b.name})`;
  if (a.shape.length < 2 || a.shape.length > 3 || b.shape.length < 2 || b.shape.length > 3) {
    throw new GpuError(op, `expects 2-D or 3-D operands, got [${a.shape}] and [${b.shape}]`);
  }
  const batch = a.shape.length === 3 ? a.shape[0] : 1;
  const bBatch = b.shape.length === 3 ? b.shape[0] : 1;
  if (bBatch !== 1 && bBatch !== batch) {
    throw new GpuError(op, `batch sizes differ: [${a.shape}] vs [${b.shape}]`);
  }
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
  } else {
    if (beta !== 0) throw new GpuError(op, "beta ≠ 0 needs an output tensor");
    out = new Tensor(a.rt, cShape, "f32", opts.name ?? "matmul");
  }
  if (opts.bias && opts.bias.size !== N) {
    throw new GpuError(op, `bias ${opts.bias} must have ${N} elements`);
  }
  if (M === 0 || N === 0 || batch === 0) return out;
  const rt = a.rt;
  const kernel = rt.kernel(
    `gemm_naive_${transA ? "t" : "n"}${transB ? "t" : "n"}${opts.bias ? "_bias" : ""}`,
    source(transA, transB, Boolean(opts.bias)),
  );
  const sA = batch > 1 ? M * K : 0;
  const sB = bBatch > 1 ? K * N : 0;
  const sC = M * N;
  const bindings = [a.range(), b.range(), out.range()];
  if (opts.bias) bindings.push(opts.bias.range());
  if (K === 0) {
    // Empty inner dimension: C = β·C (+ bias), still through the kernel (acc = 0).
  }
  rt.dispatch(
    kernel,
    bindings,
    packParams(M, N, K, batch, sA, sB, sC, 0, f32(alpha), f32(beta), f32(0), f32(0)),
    [Math.ceil(N / (TN * WGX)), Math.ceil(M / (TM * WGY)), batch],
  );
  return out;
}
