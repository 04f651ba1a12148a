/**
 * Selection on the GPU: the exact k-th smallest value of one or several large f32 arrays (radix
 * select; one read-back), and a stable ascending sort that also returns the permutation.
 *
 * Both work on order-preserving u32 keys: a float's bits with the sign bit flipped for positive
 * numbers and all bits flipped for negative ones, so that unsigned key order is float order
 * (−∞ < … < −0 < +0 < … < +∞; NaNs sort below −∞ when their sign bit is set, above +∞ otherwise).
 *
 * @module
 */
import { GpuError, grid, packParams, type Runtime } from "./device.ts";
import { Tensor } from "./tensor.ts";

const WG = 256;
// Order-preserving map of f32 to u32; −0 maps like +0 (they are equal numbers).
const KEY_FN = `fn key(x: f32) -> u32 {
  var b = bitcast<u32>(x);
  if (b == 0x80000000u) { b = 0u; }
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}`;

function limitElems(rt: Runtime): number {
  const align = rt.offsetAlign / 4;
  return Math.floor(rt.maxBinding / 4 / align) * align;
}

/** Inverse of the key map, on the host. */
function keyToFloat(k: number): number {
  const bits = (k & 0x80000000) !== 0 ? (k & 0x7fffffff) >>> 0 : (~k) >>> 0;
  return new Float32Array(new Uint32Array([bits]).buffer)[0];
}

/** An order statistic with the counts a threshold needs. */
export interface KthSmallest {
  /** The k-th smallest value (−0 is reported as 0). */
  value: number;
  /** How many elements are strictly smaller than `value`. */
  below: number;
  /** How many elements are ≤ `value` (so ties at `value` are `atOrBelow − below`). */
  atOrBelow: number;
}

/**
 * Exact k-th smallest value (0-based) over all elements of `ts` taken together. Four histogram
 * passes of 8 bits each plus a one-invocation scan per pass, all recorded in one submission; the
 * only wait is the final 16-byte read-back. −0 and +0 count as equal.
 *
 * @param ts f32 tensors (any shapes; each may exceed one storage binding)
 * @param k 0 ≤ k < total number of elements
 * @example Usage
 * ```ts ignore
 * const tau = await kthSmallestOf([costsA, costsB], Math.floor(0.3 * total));
 * ```
 */
export async function kthSmallestOf(ts: Tensor[], k: number): Promise<number> {
  return (await kthSmallestCounts(ts, k)).value;
}

/**
 * {@link kthSmallestOf} with the number of elements below and at-or-below the value, which a
 * global threshold needs to know how many units it removes (ties included). Same single
 * submission and read-back.
 *
 * @param ts f32 tensors (any shapes; each may exceed one storage binding)
 * @param k 0 ≤ k < total number of elements
 * @example Usage
 * ```ts ignore
 * const { value: tau, atOrBelow } = await kthSmallestCounts([costsA, costsB], k);
 * ```
 */
export async function kthSmallestCounts(ts: Tensor[], k: number): Promise<KthSmallest> {
  if (ts.length === 0) throw new GpuError("kthSmallest", "no tensors given");
  const total = ts.reduce((s, t) => s + t.size, 0);
  if (!Number.isInteger(k) || k < 0 || k >= total) {
    throw new GpuError(
      "kthSmallest",
      `k = ${k} is outside [0, ${total}) for ${ts.map(String).join(", ")}`,
    );
  }
  for (const t of ts) {
    if (t.dtype !== "f32") throw new GpuError("kthSmallest", `${t} must be f32`);
  }
  const rt = ts[0].rt;
  // state: [prefix, remaining k, count in the chosen bin, 0]; hist: 4 passes × 256 bins (fresh
  // buffers are zero).
  const state = Tensor.fromSync(rt, new Uint32Array([0, k, 0, 0]), [4], "u32", "kth_state");
  const hist = Tensor.emptySync(rt, [4 * 256], "u32", "kth_hist");
  const histK = rt.kernel(
    "kth_hist",
    `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> hist: array<atomic<u32>>;
@group(0) @binding(2) var<storage, read> state: array<u32>;
struct P { n: u32, off: u32, shift: u32, pass_: u32 };
@group(0) @binding(3) var<uniform> p: P;
var<workgroup> local: array<atomic<u32>, 256>;
${KEY_FN}
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u,
        @builtin(num_workgroups) nw: vec3u) {
  atomicStore(&local[lid.x], 0u);
  workgroupBarrier();
  let hiMask = select(0xffffffffu << (p.shift + 8u), 0u, p.shift == 24u);
  let prefix = state[0];
  let base = (wid.x + wid.y * nw.x) * ${WG * 16}u;
  for (var j = 0u; j < 16u; j = j + 1u) {
    let i = base + j * ${WG}u + lid.x;
    if (i < p.n) {
      let kx = key(x[p.off + i]);
      if ((kx & hiMask) == (prefix & hiMask)) { atomicAdd(&local[(kx >> p.shift) & 255u], 1u); }
    }
  }
  workgroupBarrier();
  let c = atomicLoad(&local[lid.x]);
  if (c != 0u) { atomicAdd(&hist[p.pass_ * 256u + lid.x], c); }
}`,
  );
  const scanK = rt.kernel(
    "kth_scan",
    `@group(0) @binding(0) var<storage, read> hist: array<u32>;
@group(0) @binding(1) var<storage, read_write> state: array<u32>;
struct P { shift: u32, pass_: u32, p0: u32, p1: u32 };
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(1)
fn main() {
  var rem = state[1];
  var b = 0u;
  for (; b < 255u; b = b + 1u) {
    let h = hist[p.pass_ * 256u + b];
    if (rem < h) { break; }
    rem = rem - h;
  }
  state[0] = state[0] | (b << p.shift);
  state[1] = rem;
  state[2] = hist[p.pass_ * 256u + b];
}`,
  );
  const lim = limitElems(rt);
  for (let pass = 0; pass < 4; pass++) {
    const shift = 24 - 8 * pass;
    for (const t of ts) {
      for (let s = 0; s < t.size; s += lim) {
        const n = Math.min(lim, t.size - s);
        rt.dispatch(
          histK,
          [t.range(s, n), hist.range(), state.range()],
          packParams(n, 0, shift, pass),
          grid(Math.ceil(n / (WG * 16))),
        );
      }
    }
    rt.dispatch(scanK, [hist.range(), state.range()], packParams(shift, pass, 0, 0), [1]);
  }
  const st = await state.readU32();
  state.dispose();
  hist.dispose();
  // After the last pass the chosen bin holds exactly the elements equal to the value, and `rem`
  // of them come before rank k.
  const below = k - st[1];
  return { value: keyToFloat(st[0]), below, atOrBelow: below + st[2] };
}

/**
 * Exact k-th smallest value (0-based) of `t`. See {@link kthSmallestOf}.
 *
 * @param t an f32 tensor (up to ~10⁹ elements; larger than one binding is fine)
 * @param k 0 ≤ k < t.size
 * @example Usage
 * ```ts ignore
 * const median = await kthSmallest(x, Math.floor(x.size / 2));
 * ```
 */
export function kthSmallest(t: Tensor, k: number): Promise<number> {
  return kthSmallestOf([t], k);
}

/**
 * Stable ascending sort of all elements of `t` (flattened), on the GPU: `values[i]` is the i-th
 * smallest element and `indices[i]` its position in `t`; equal values keep their original order.
 * A bitonic network on (key, index) pairs: about log²(n)/2 dispatches in one submission, no
 * read-back. Up to 2²⁵ elements.
 *
 * @param t an f32 tensor
 * @example Usage
 * ```ts ignore
 * const { values, indices } = sortWithIndices(rowCosts);
 * ```
 */
export function sortWithIndices(t: Tensor): { values: Tensor; indices: Tensor } {
  if (t.dtype !== "f32") throw new GpuError("sortWithIndices", `${t} must be f32`);
  const rt = t.rt;
  const n = t.size;
  const values = new Tensor(rt, [n], "f32", `${t.name}_sorted`);
  const indices = new Tensor(rt, [n], "u32", `${t.name}_order`);
  if (n === 0) return { values, indices };
  let P = 1;
  while (P < n) P *= 2;
  if (P * 4 > rt.maxBinding) {
    throw new GpuError(
      "sortWithIndices",
      `${t} has ${n} elements; at most ${rt.maxBinding / 8} are supported`,
    );
  }
  const keys = new Tensor(rt, [P], "u32", "sort_keys");
  const idx = new Tensor(rt, [P], "u32", "sort_idx");
  const init = rt.kernel(
    "sort_init",
    `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> keys: array<u32>;
@group(0) @binding(2) var<storage, read_write> idx: array<u32>;
struct P { n: u32, P: u32, p0: u32, p1: u32 };
@group(0) @binding(3) var<uniform> p: P;
${KEY_FN}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let i = gid.x + gid.y * nw.x * ${WG}u;
  if (i >= p.P) { return; }
  keys[i] = select(0xffffffffu, key(x[min(i, p.n - 1u)]), i < p.n);
  idx[i] = i;
}`,
  );
  rt.dispatch(
    init,
    [t.range(), keys.range(), idx.range()],
    packParams(n, P, 0, 0),
    grid(Math.ceil(P / WG)),
  );
  const step = rt.kernel(
    "sort_bitonic_step",
    `@group(0) @binding(0) var<storage, read_write> keys: array<u32>;
@group(0) @binding(1) var<storage, read_write> idx: array<u32>;
struct P { k: u32, j: u32, half: u32, p1: u32 };
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let t = gid.x + gid.y * nw.x * ${WG}u;
  if (t >= p.half) { return; }
  let l = 2u * p.j * (t / p.j) + t % p.j;
  let r = l + p.j;
  let up = (l & p.k) == 0u;
  let kl = keys[l]; let kr = keys[r];
  let il = idx[l]; let ir = idx[r];
  let greater = kl > kr || (kl == kr && il > ir);
  if (greater == up) {
    keys[l] = kr; keys[r] = kl;
    idx[l] = ir; idx[r] = il;
  }
}`,
  );
  const groups = grid(Math.ceil(P / 2 / WG));
  for (let k = 2; k <= P; k *= 2) {
    for (let j = k / 2; j >= 1; j /= 2) {
      rt.dispatch(step, [keys.range(), idx.range()], packParams(k, j, P / 2, 0), groups);
    }
  }
  const fin = rt.kernel(
    "sort_finish",
    `@group(0) @binding(0) var<storage, read> keys: array<u32>;
@group(0) @binding(1) var<storage, read> idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> values: array<f32>;
@group(0) @binding(3) var<storage, read_write> order: array<u32>;
struct P { n: u32, p0: u32, p1: u32, p2: u32 };
@group(0) @binding(4) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let i = gid.x + gid.y * nw.x * ${WG}u;
  if (i >= p.n) { return; }
  let k = keys[i];
  values[i] = bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
  order[i] = idx[i];
}`,
  );
  rt.dispatch(
    fin,
    [keys.range(), idx.range(), values.range(), indices.range()],
    packParams(n, 0, 0, 0),
    grid(Math.ceil(n / WG)),
  );
  keys.dispose();
  idx.dispose();
  return { values, indices };
}
