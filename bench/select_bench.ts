/**
 * Selection benchmark: `kth_smallest_1e8`, the exact k-th smallest of 10⁸ f32 values (400 MB,
 * three storage bindings on the software adapter), k = n/3. The values are a hash of the index,
 * generated on the GPU, so nothing is uploaded; the result is checked against a host counting
 * sort (`exact` in the line).
 *
 * Run alone: `./deno run --allow-read --allow-env bench/main.ts bench/select_bench.ts`.
 *
 * @module
 */
import { gpu } from "../kernels/device.ts";
import { map } from "../kernels/elementwise.ts";
import { kthSmallest } from "../kernels/select.ts";
import { Tensor } from "../kernels/tensor.ts";
import { type Emit, median } from "./main.ts";

/** Value of element i: the top 24 bits of a multiplicative hash, as f32 in [−0.5, 0.5). */
const HASH = "f32((i * 2654435761u) >> 8u) / 16777216.0 - 0.5";

/** The k-th smallest (0-based) of the hashed values 0…n−1, by counting sort on the host. */
function hostKth(n: number, k: number): number {
  const counts = new Uint32Array(1 << 24);
  for (let i = 0; i < n; i++) counts[Math.imul(i, 2654435761) >>> 8]++;
  let seen = 0;
  for (let q = 0; q < counts.length; q++) {
    seen += counts[q];
    if (seen > k) return q / 16777216 - 0.5;
  }
  return NaN;
}

/**
 * Runs the selection benchmark.
 *
 * @param emit receives the result line
 * @example Usage
 * ```ts ignore
 * await run((r) => console.log(JSON.stringify(r)));
 * ```
 */
export async function run(emit: Emit): Promise<void> {
  const rt = await gpu();
  const n = 1e8, k = Math.floor(n / 3);
  const t = Tensor.emptySync(rt, [n], "f32", "bench:hashed");
  try {
    map(HASH, [], [], { out: t });
    await kthSmallest(t, k); // warm-up: compiles the radix passes
    const ms: number[] = [];
    let v = NaN;
    for (let s = 0; s < 3; s++) {
      const t0 = performance.now();
      v = await kthSmallest(t, k);
      ms.push(performance.now() - t0);
    }
    emit({ bench: "kth_smallest_1e8", n, ms: median(ms), k, exact: v === hostKth(n, k) });
  } finally {
    t.dispose();
  }
}
