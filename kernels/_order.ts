/**
 * Workgroup orders for dispatches whose work is uneven along their rows. llvmpipe hands each
 * worker thread one contiguous run of a dispatch's workgroups (x fastest), so such a kernel runs
 * at the speed of its busiest run unless its rows are permuted. Private to the kernels (not
 * exported from mod.ts).
 *
 * @module
 */

/**
 * The stride s of the row order w ↦ (w·s) mod T: s ≈ 0.618·T and coprime to T, so the order is a
 * permutation under which every contiguous run of workgroup rows samples all the rows evenly,
 * whatever the shape of the work (a triangle, a band, a step). 1 for T ≤ 2.
 *
 * @param T rows of workgroups in the dispatch
 * @returns the stride, to be passed to the kernel
 */
export function rowOrder(T: number): number {
  if (T <= 2) return 1;
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
  let s = Math.round(0.6180339887 * T);
  while (gcd(s, T) !== 1) s++;
  return s;
}
