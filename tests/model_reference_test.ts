/**
 * Real trained models from ../shared/data (MANIFEST.md §8): position-0 and prompt top-5 logits,
 * greedy decoding, teacher-forced NLL and the TinyStories 64-window perplexities. Skips cleanly
 * when the shared data folder is absent.
 */
import assert from "node:assert/strict";
import { generateIds } from "../model/generate.ts";
import { loadModel } from "../model/load.ts";
import type { DecoderLM } from "../model/transformer.ts";
import type { CausalLM } from "../model/types.ts";
import { assertClose } from "./_util.ts";

const DATA = new URL("../../shared/data/", import.meta.url).pathname;
const have = (() => {
  try {
    return Deno.statSync(`${DATA}models/hf/stories260K/model.safetensors`).isFile;
  } catch {
    return false;
  }
})();

function top5(z: Float32Array, V: number, row: number): [number, number][] {
  const r = Array.from(z.subarray(row * V, (row + 1) * V), (v, i) => [i, v] as [number, number]);
  return r.sort((a, b) => b[1] - a[1]).slice(0, 5);
}

function checkTop5(got: [number, number][], want: [number, number][], what: string) {
  assert.deepEqual(got.map((x) => x[0]), want.map((x) => x[0]), `${what} top-5 ids`);
  assertClose(got.map((x) => x[1]), want.map((x) => x[1]), 1e-4, 1e-3, `${what} top-5 logits`);
}

/** TinyStories stream (a): every story encoded with BOS, concatenated; first `n` windows of L. */
function tinyStoriesWindows(model: CausalLM, L: number, n: number): Int32Array[] {
  const text = Deno.readTextFileSync(`${DATA}tinystories/valid.txt`);
  const stream: number[] = [];
  for (const story of text.split("<|endoftext|>")) {
    const s = story.trim();
    if (s === "") continue;
    stream.push(...model.tokenizer!.encode(s));
    if (stream.length >= L * n) break;
  }
  return Array.from({ length: n }, (_, i) => Int32Array.from(stream.slice(i * L, (i + 1) * L)));
}

async function perplexity(model: CausalLM, windows: Int32Array[]): Promise<number> {
  let s = 0;
  for (const w of windows) s += await model.nll(w);
  return Math.exp(s / windows.length);
}

Deno.test({
  name:
    "stories260K: top-5 logits, greedy decoding, teacher-forced NLL and TinyStories ppl match MANIFEST §8",
  ignore: !have,
  fn: async () => {
    const model = await loadModel(`${DATA}models/hf/stories260K`);
    try {
      const V = 512;
      checkTop5(top5(await model.logits(Int32Array.from([1])), V, 0), [
        [403, 17.0235],
        [385, 15.4062],
        [410, 13.1083],
        [317, 12.7692],
        [407, 12.4181],
      ], "position 0");
      const prompt = model.tokenizer!.encode("Once upon a time, there was a little");
      assert.deepEqual([...prompt], [1, 403, 407, 261, 378, 432, 383, 286, 261, 376]);
      checkTop5(top5(await model.logits(prompt), V, prompt.length - 1), [
        [298, 16.95144],
        [268, 16.10766],
        [400, 13.55562],
        [280, 12.97065],
        [272, 12.77192],
      ], "prompt");
      const greedy = [
        1,
        403,
        407,
        261,
        378,
        432,
        383,
        286,
        261,
        376,
        298,
        315,
        421,
        395,
        317,
        426,
        338,
        401,
        396,
        267,
        337,
        410,
        408,
        419,
        292,
        411,
        322,
        265,
        282,
        295,
        433,
        426,
        385,
        328,
        432,
        358,
        394,
        261,
        370,
        432,
        352,
        266,
        268,
        388,
        426,
        338,
        391,
        266,
        267,
        337,
        335,
        312,
        432,
        398,
        312,
        286,
        267,
        414,
        270,
        333,
        415,
        426,
        13,
        438,
        310,
      ];
      const gen = await generateIds(model as DecoderLM, [1], { maxTokens: 64, eosId: null });
      assert.deepEqual([1, ...gen], greedy, "greedy ids");
      assertClose(
        [await model.nll(Int32Array.from(greedy))],
        [0.39729],
        0,
        2e-5,
        "teacher-forced NLL",
      );
      const ppl = await perplexity(model, tinyStoriesWindows(model, 512, 64));
      console.log(`stories260K TinyStories 64×512 ppl ${ppl.toFixed(5)} (MANIFEST 3.4998)`);
      assertClose([ppl], [3.4998], 1e-3, 0, "TinyStories ppl");
    } finally {
      model.dispose();
    }
  },
});

Deno.test({
  name: "babyllama-tok105: prompt top-5 logits and TinyStories ppl match MANIFEST §8",
  ignore: !have,
  fn: async () => {
    const model = await loadModel(`${DATA}models/hf/babyllama-tok105`);
    try {
      const prompt = model.tokenizer!.encode("Once upon a time, there was a little");
      assert.equal(prompt.length, 38);
      checkTop5(top5(await model.logits(prompt), 105, prompt.length - 1), [
        [3, 11.76277],
        [19, 4.9277],
        [25, 4.04249],
        [12, 2.64527],
        [4, 2.22608],
      ], "prompt");
      const ppl = await perplexity(model, tinyStoriesWindows(model, 256, 64));
      console.log(`babyllama-tok105 TinyStories 64×256 ppl ${ppl.toFixed(5)} (MANIFEST 2.0532)`);
      assertClose([ppl], [2.0532], 1e-3, 0, "TinyStories ppl");
    } finally {
      model.dispose();
    }
  },
});
