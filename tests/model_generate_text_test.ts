import assert from "node:assert/strict";
import { loadModel } from "../model/load.ts";

const dir = new URL("../../shared/data/models/hf/stories260K/", import.meta.url);
const present = await Deno.stat(dir).then(() => true, () => false);

Deno.test({
  name: "generate() keeps the space that starts the continuation (stories260K, greedy)",
  ignore: !present,
  fn: async () => {
    const model = await loadModel(dir.pathname);
    try {
      // MANIFEST.md §8: after this prompt the top token is 298 "▁g"; decoding the new ids alone
      // would drop its space and glue "little" and "girl" together.
      const text = await model.generate("Once upon a time, there was a little", { maxTokens: 3 });
      assert.ok(text.startsWith(" g"), `continuation ${JSON.stringify(text)} lost its space`);
    } finally {
      model.dispose();
    }
  },
});
