/**
 * MT19937 and the CPython `random` emulation against published test vectors of the reference C
 * code (mt19937ar.c) and outputs of CPython 3.11 (`random.seed(...)` then the named call).
 */
import assert from "node:assert/strict";
import { MT19937, PyRandom } from "../eval/mt19937.ts";

Deno.test("MT19937 init_genrand(5489) gives the reference first output 3499211612", () => {
  const mt = new MT19937(5489);
  assert.equal(mt.nextUint32(), 3499211612);
});

Deno.test("MT19937 init_by_array([0x123, 0x234, 0x345, 0x456]) gives mt19937ar.out's first outputs", () => {
  const mt = new MT19937();
  mt.initByArray([0x123, 0x234, 0x345, 0x456]);
  assert.deepEqual([mt.nextUint32(), mt.nextUint32(), mt.nextUint32()], [
    1067595299,
    955945823,
    477289528,
  ]);
  // Output 1000 of mt19937ar.out (the last one printed): crosses the 624-word regeneration.
  for (let i = 3; i < 999; i++) mt.nextUint32();
  assert.equal(mt.nextUint32(), 3460025646);
});

Deno.test("PyRandom matches CPython getrandbits, random and randint after seed()", () => {
  const r = new PyRandom(100);
  assert.deepEqual([r.getrandbits(32), r.getrandbits(32), r.getrandbits(32)], [
    625644691,
    1973661107,
    1953896601,
  ]);
  const r42 = new PyRandom(42);
  assert.equal(r42.random(), 0.6394267984578837);
  assert.equal(r42.randint(1, 100), 4);
  assert.equal(new PyRandom(1).random(), 0.13436424411240122);
  // seed wider than 32 bits → two key words; getrandbits above 32 bits fills words low-first
  const big = new PyRandom(2 ** 40 + 7);
  assert.deepEqual([big.getrandbits(32), big.getrandbits(40), big.randint(3, 17)], [
    2635837658,
    896562930786,
    13,
  ]);
  assert.equal(new PyRandom(-5).getrandbits(7), 79, "negative seeds use |seed|");
});

Deno.test("PyRandom.sample matches CPython for the set branch and the pool branch", () => {
  assert.deepEqual(new PyRandom(100).sample(1000000, 5), [152745, 481850, 477025, 997948, 808225]);
  assert.deepEqual(new PyRandom(100).sample(286000 - 2048, 128).slice(0, 6), [
    76372,
    240925,
    238512,
    91618,
    206062,
    183362,
  ]);
  // n = 50 ≤ setsize (21 + 4^3) → pool algorithm
  assert.deepEqual(new PyRandom(0).sample(50, 8), [24, 48, 26, 2, 16, 32, 31, 25]);
  const s = new PyRandom(3).sample(40, 40);
  assert.deepEqual([...s].sort((a, b) => a - b), Array.from({ length: 40 }, (_, i) => i));
  assert.throws(() => new PyRandom(3).sample(4, 5), /larger than population/);
});
