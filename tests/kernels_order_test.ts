import assert from "node:assert/strict";
import { rowOrder } from "../kernels/_order.ts";

Deno.test("rowOrder(): (w·s) mod T is a permutation of the rows, and every half samples them evenly", () => {
  for (let T = 1; T <= 600; T++) {
    const s = rowOrder(T);
    const seen = new Uint8Array(T);
    for (let w = 0; w < T; w++) seen[(w * s) % T]++;
    assert.ok(seen.every((c) => c === 1), `T = ${T}, s = ${s}: not a permutation`);
    if (T < 64) continue;
    // A triangular profile (row r costs r): each contiguous half of the order gets 50 ± 4 %
    // (the natural order gives 25 / 75).
    const total = (T * (T - 1)) / 2;
    let first = 0;
    for (let w = 0; w < Math.floor(T / 2); w++) first += (w * s) % T;
    assert.ok(Math.abs(first / total - 0.5) < 0.04, `T = ${T}: first half holds ${first / total}`);
  }
  // The kernels pass s as a u32 and multiply it by a workgroup index below 65,536.
  assert.ok(rowOrder(65535) * 65535 < 2 ** 32);
});
