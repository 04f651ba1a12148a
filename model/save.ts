/**
 * Writes a (pruned) model as a Hugging Face folder: `config.json`, `model.safetensors` (F32) and
 * the tokenizer/generation files copied from the source folder, atomically: everything goes into
 * `<dir>.tmp-<pid>` first, which then replaces `<dir>`.
 *
 * @module
 */
import { TOKENIZER_FILES } from "./hub.ts";
import { SafetensorsError, type TensorToWrite, writeSafetensors } from "./safetensors.ts";

/** Files copied from the source folder when present (tokenizer and generation settings). */
export const COPIED_FILES: readonly string[] = ["generation_config.json", ...TOKENIZER_FILES];

/**
 * An error while saving; the message names the folder.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { SaveError } from "@llm-surgeon/toolkit";
 * const err = new SaveError("out/opt-pruned", "exists and is not a folder");
 * assert.equal(err.message, "out/opt-pruned: exists and is not a folder");
 * ```
 */
export class SaveError extends Error {
  /**
   * Creates the error; the message is prefixed with the folder.
   * @param dir destination folder
   * @param message what went wrong
   */
  constructor(dir: string, message: string) {
    super(`${dir}: ${message}`);
    this.name = "SaveError";
  }
}

/**
 * What {@link saveHfFolder} writes.
 *
 * @example Usage
 * ```ts ignore
 * import { saveHfFolder, type SaveOptions } from "@llm-surgeon/toolkit";
 * // Tensors may come from a generator, so a large model never sits in memory twice.
 * function* tensors() {
 *   yield { name: "model.decoder.final_layer_norm.weight", shape: [768], data: new Float32Array(768).fill(1) };
 * }
 * const opts: SaveOptions = {
 *   config: { model_type: "opt", hidden_size: 768 },
 *   tensors: tensors(),
 *   sourceDir: "models/opt-125m", // tokenizer files and generation_config.json come from here
 *   metadata: { pruned_by: "llm-surgeon" },
 * };
 * await saveHfFolder("out/opt-pruned", opts);
 * ```
 */
export interface SaveOptions {
  /** The config.json object (written with `torch_dtype: "float32"`). */
  config: Record<string, unknown>;
  /** The tensors, in any order (streamed; an async iterable is spooled to disk, not memory). */
  tensors: AsyncIterable<TensorToWrite> | Iterable<TensorToWrite> | TensorToWrite[];
  /** Folder to copy tokenizer files and generation_config.json from. */
  sourceDir?: string | null;
  /** Extra `__metadata__` strings for model.safetensors. */
  metadata?: Record<string, string>;
}

function join(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/** Refuses to replace something that is not a model folder (or an empty folder). */
async function checkReplaceable(dir: string): Promise<boolean> {
  const st = await statOrNull(dir);
  if (!st) return false;
  if (!st.isDirectory) throw new SaveError(dir, "exists and is not a folder");
  let empty = true;
  for await (const _ of Deno.readDir(dir)) {
    empty = false;
    break;
  }
  if (!empty && !(await statOrNull(join(dir, "config.json")))) {
    throw new SaveError(
      dir,
      "exists and is not a model folder (no config.json); refusing to replace it",
    );
  }
  return true;
}

/**
 * Saves a model as a Hugging Face folder, atomically (a crash leaves either the old folder or
 * the new one, plus possibly a `<dir>.tmp-<pid>` leftover).
 *
 * @param dir destination folder; an existing model folder there is replaced
 * @param opts config, tensors, source folder for tokenizer files, safetensors metadata
 * @returns the names of the files written
 * @example Usage
 * ```ts ignore
 * import { saveHfFolder } from "@llm-surgeon/toolkit";
 * await saveHfFolder("out/opt-pruned", {
 *   config: { model_type: "opt", hidden_size: 4 },
 *   tensors: [{ name: "w", shape: [2, 2], data: new Float32Array(4) }],
 *   sourceDir: "models/opt-125m",
 * });
 * ```
 */
export async function saveHfFolder(dir: string, opts: SaveOptions): Promise<string[]> {
  const target = dir.replace(/\/+$/, "") || "/";
  const replacing = await checkReplaceable(target);
  const tmp = `${target}.tmp-${Deno.pid}`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp, { recursive: true });
  const written: string[] = [];
  try {
    const config = { ...opts.config, torch_dtype: "float32" };
    await Deno.writeTextFile(join(tmp, "config.json"), JSON.stringify(config, null, 2) + "\n");
    written.push("config.json");
    await writeSafetensors(join(tmp, "model.safetensors"), opts.tensors, opts.metadata ?? {});
    written.push("model.safetensors");
    if (opts.sourceDir) {
      for (const name of COPIED_FILES) {
        const src = join(opts.sourceDir, name);
        if (!(await statOrNull(src))?.isFile) continue;
        await Deno.copyFile(src, join(tmp, name));
        written.push(name);
      }
    }
    if (replacing) {
      const old = `${target}.old-${Deno.pid}`;
      await Deno.remove(old, { recursive: true }).catch(() => {});
      await Deno.rename(target, old);
      try {
        await Deno.rename(tmp, target);
      } catch (e) {
        await Deno.rename(old, target);
        throw e;
      }
      await Deno.remove(old, { recursive: true });
    } else {
      await Deno.rename(tmp, target);
    }
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    if (e instanceof SaveError || e instanceof SafetensorsError) throw e;
    throw new SaveError(target, `saving failed: ${(e as Error).message}`);
  }
  return written;
}
