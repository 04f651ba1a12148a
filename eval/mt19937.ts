/**
 * CPython's `random` module, bit for bit, for the parts the calibration samplers need: the
 * MT19937 generator (Matsumoto & Nishimura), `random.seed(int)` (which goes through
 * `init_by_array`), `getrandbits`, `randbelow`, `randint`, `random()` and `sample(range(n), k)`.
 *
 * The reference draws its calibration windows with `random.sample(range(N − T), n)` after
 * `random.seed(seed)` (ALGORITHM.md §10.1); emulating it exactly gives the same windows as the
 * reference for the same token stream.
 *
 * @module
 */

const N = 624;
const M = 397;
const MATRIX_A = 0x9908b0df;
const UPPER_MASK = 0x80000000;
const LOWER_MASK = 0x7fffffff;

/**
 * The Mersenne Twister MT19937 with 32-bit outputs.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { MT19937 } from "@llm-surgeon/toolkit";
 * // The reference C code's default seed 5489 gives 3499211612 as its first output.
 * const mt = new MT19937();
 * assert.equal(mt.nextUint32(), 3499211612);
 * ```
 */
export class MT19937 {
  #mt = new Uint32Array(N);
  #mti = N + 1;

  /**
   * A generator seeded with `init_genrand(seed)` (the reference C code's default is 5489).
   * @param seed 32-bit seed
   */
  constructor(seed = 5489) {
    this.initGenrand(seed);
  }

  /**
   * Re-seeds with a single 32-bit value (`init_genrand` of the reference C code).
   * @param seed 32-bit seed
   */
  initGenrand(seed: number): void {
    const mt = this.#mt;
    mt[0] = seed >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
    this.#mti = N;
  }

  /**
   * Re-seeds with an array of 32-bit words (`init_by_array` of the reference C code; this is
   * what CPython's `random.seed(n)` calls with the 32-bit words of |n|).
   * @param key the seed words
   * @example
   * ```ts
   * const mt = new MT19937();
   * mt.initByArray([0x123, 0x234, 0x345, 0x456]);
   * mt.nextUint32(); // 1067595299
   * ```
   */
  initByArray(key: ArrayLike<number>): void {
    const mt = this.#mt;
    this.initGenrand(19650218);
    let i = 1, j = 0;
    const len = Math.max(1, key.length);
    for (let k = Math.max(N, key.length); k > 0; k--) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = ((mt[i] ^ Math.imul(prev, 1664525)) + (key.length ? key[j] >>> 0 : 0) + j) >>> 0;
      i++;
      j++;
      if (i >= N) {
        mt[0] = mt[N - 1];
        i = 1;
      }
      if (j >= len) j = 0;
    }
    for (let k = N - 1; k > 0; k--) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = ((mt[i] ^ Math.imul(prev, 1566083941)) - i) >>> 0;
      i++;
      if (i >= N) {
        mt[0] = mt[N - 1];
        i = 1;
      }
    }
    mt[0] = 0x80000000;
    this.#mti = N;
  }

  /** The next 32-bit output (`genrand_uint32`), as an unsigned number. */
  nextUint32(): number {
    const mt = this.#mt;
    if (this.#mti >= N) {
      let kk = 0;
      for (; kk < N - M; kk++) {
        const y = (mt[kk] & UPPER_MASK) | (mt[kk + 1] & LOWER_MASK);
        mt[kk] = mt[kk + M] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
      }
      for (; kk < N - 1; kk++) {
        const y = (mt[kk] & UPPER_MASK) | (mt[kk + 1] & LOWER_MASK);
        mt[kk] = mt[kk + (M - N)] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
      }
      const y = (mt[N - 1] & UPPER_MASK) | (mt[0] & LOWER_MASK);
      mt[N - 1] = mt[M - 1] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
      this.#mti = 0;
    }
    let y = mt[this.#mti++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
}

/**
 * The subset of CPython's `random.Random` that calibration sampling uses, with identical
 * outputs for identical seeds.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { PyRandom } from "@llm-surgeon/toolkit";
 * // Python: random.seed(100); random.sample(range(1000000), 3)
 * assert.deepEqual(new PyRandom(100).sample(1000000, 3), [152745, 481850, 477025]);
 * // Python: random.seed(100); random.randint(1, 6), random.getrandbits(8)
 * const r = new PyRandom(100);
 * assert.equal(r.randint(1, 6), 2);
 * assert.equal(r.getrandbits(8), 117);
 * ```
 */
export class PyRandom {
  readonly #mt = new MT19937();

  /**
   * A generator seeded as `random.seed(seed)`.
   * @param seed a non-negative integer seed, as `random.seed(seed)` (negative seeds use |seed|, as
   * CPython does)
   */
  constructor(seed: number | bigint) {
    this.seed(seed);
  }

  /**
   * `random.seed(n)` for an integer `n`: `init_by_array` with the 32-bit words of |n|, least
   * significant first (`[0]` for zero).
   * @param seed an integer
   */
  seed(seed: number | bigint): void {
    if (typeof seed === "number" && !Number.isSafeInteger(seed)) {
      throw new RangeError(`PyRandom.seed: seed must be an integer, got ${seed}`);
    }
    let n = BigInt(seed);
    if (n < 0n) n = -n;
    const key: number[] = [];
    while (n > 0n) {
      key.push(Number(n & 0xffffffffn));
      n >>= 32n;
    }
    if (key.length === 0) key.push(0);
    this.#mt.initByArray(key);
  }

  /**
   * `random.getrandbits(k)` for 0 ≤ k ≤ 53 (returned as an exact JS number).
   * @param k number of bits
   */
  getrandbits(k: number): number {
    if (!Number.isInteger(k) || k < 0 || k > 53) {
      throw new RangeError(`PyRandom.getrandbits: k must be an integer in [0, 53], got ${k}`);
    }
    if (k === 0) return 0;
    if (k <= 32) return this.#mt.nextUint32() >>> (32 - k);
    // CPython fills 32-bit words from the least significant one; the last word is truncated.
    const low = this.#mt.nextUint32();
    const high = this.#mt.nextUint32() >>> (64 - k);
    return high * 4294967296 + low;
  }

  /**
   * `random._randbelow(n)`: a uniform integer in [0, n) by rejection on `getrandbits(bitlen(n))`.
   * @param n exclusive upper bound, 1 ≤ n < 2^53
   */
  randbelow(n: number): number {
    if (!Number.isSafeInteger(n) || n <= 0) {
      throw new RangeError(`PyRandom.randbelow: n must be a positive integer, got ${n}`);
    }
    const k = bitLength(n);
    let r = this.getrandbits(k);
    while (r >= n) r = this.getrandbits(k);
    return r;
  }

  /**
   * `random.randint(a, b)`: a uniform integer in [a, b], both ends included.
   * @param a lower bound
   * @param b upper bound (≥ a)
   */
  randint(a: number, b: number): number {
    if (!Number.isSafeInteger(a) || !Number.isSafeInteger(b) || b < a) {
      throw new RangeError(`PyRandom.randint: empty range [${a}, ${b}]`);
    }
    return a + this.randbelow(b - a + 1);
  }

  /** `random.random()`: a double in [0, 1) with 53 random bits. */
  random(): number {
    const a = this.#mt.nextUint32() >>> 5;
    const b = this.#mt.nextUint32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /**
   * `random.sample(range(n), k)`: k distinct integers of [0, n), in draw order, with CPython's
   * choice between the pool algorithm (small n) and the set algorithm (large n).
   * @param n population size
   * @param k sample size, 0 ≤ k ≤ n
   */
  sample(n: number, k: number): number[] {
    if (!Number.isSafeInteger(n) || !Number.isSafeInteger(k) || k < 0 || n < 0 || k > n) {
      throw new RangeError(`PyRandom.sample: sample size ${k} larger than population ${n}`);
    }
    const result: number[] = new Array(k);
    let setsize = 21;
    if (k > 5) setsize += 4 ** Math.ceil(Math.log(3 * k) / Math.log(4));
    if (n <= setsize) {
      const pool = Array.from({ length: n }, (_, i) => i);
      for (let i = 0; i < k; i++) {
        const j = this.randbelow(n - i);
        result[i] = pool[j];
        pool[j] = pool[n - i - 1];
      }
    } else {
      const selected = new Set<number>();
      for (let i = 0; i < k; i++) {
        let j = this.randbelow(n);
        while (selected.has(j)) j = this.randbelow(n);
        selected.add(j);
        result[i] = j;
      }
    }
    return result;
  }
}

/** Number of bits needed to write the non-negative integer `n` (Python's `int.bit_length`). */
function bitLength(n: number): number {
  let k = 0;
  while (n >= 4294967296) {
    n = Math.floor(n / 4294967296);
    k += 32;
  }
  return k + (n === 0 ? 0 : 32 - Math.clz32(n));
}
