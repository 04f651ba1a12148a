/**
 * Fakes for the evaluation tests: a character tokenizer with BOS and a CPU "model" whose
 * next-token distribution is a fixed function of the previous token.
 */
import type { TextTokenizer } from "../model/types.ts";

/** Character-level tokenizer: BOS = 1, then one id per UTF-16 unit (code % 250 + 3). */
export class CharTokenizer implements TextTokenizer {
  readonly bosId = 1;
  readonly eosId = 2;
  readonly vocabSize = 253;
  readonly chatTemplate = null;
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): Int32Array {
    const bos = opts.addSpecialTokens === false ? 0 : 1;
    const out = new Int32Array(text.length + bos);
    if (bos) out[0] = 1;
    for (let i = 0; i < text.length; i++) out[i + bos] = (text.charCodeAt(i) % 250) + 3;
    return out;
  }
  decode(ids: ArrayLike<number>): string {
    return Array.from(ids, (i) => (i >= 3 ? String.fromCharCode(i - 3) : "")).join("");
  }
}

/** A CPU model: logits at a position are `logitsOf(previous token)`; nll as the CausalLM contract. */
export class CpuBigramModel {
  constructor(
    readonly vocab: number,
    readonly logitsOf: (tok: number) => Float64Array,
    readonly maxSeqLen = 16,
  ) {}
  calls = 0;
  nll(ids: Int32Array): Promise<number> {
    this.calls++;
    let s = 0;
    for (let t = 0; t + 1 < ids.length; t++) {
      const z = this.logitsOf(ids[t]);
      let m = -Infinity;
      for (const v of z) m = Math.max(m, v);
      let se = 0;
      for (const v of z) se += Math.exp(v - m);
      s += m + Math.log(se) - z[ids[t + 1]];
    }
    return Promise.resolve(s / (ids.length - 1));
  }
}
