/**
 * Curvature kept in host memory, estimated in several calibration passes over groups of decoder
 * layers. A pass needs the factors of every module it taps at once, so for a model whose factors
 * do not fit next to its weights (Llama-2-7B: ≈ 70 GB of rank-1 factors in f32) the layers are
 * split into groups: each group's factors are estimated on the GPU, copied to host memory and
 * freed before the next group. `pruneShot` then uploads one module's factors at a time. The
 * factors are the same, bit for bit, as those of one pass over all layers. The forward passes are
 * repeated once per group; each group's backward stops at its lowest layer.
 *
 * @module
 */
import type { Runtime } from "../kernels/device.ts";
import { Tensor } from "../kernels/tensor.ts";
import type { CausalLM } from "../model/types.ts";
import { estimateCurvature } from "./estimate.ts";
import {
  type Curvature,
  CurvatureError,
  type CurvatureKind,
  type CurvatureOptions,
  disposeCurvature,
  type LayerCurvature,
} from "./types.ts";

/**
 * One factor in host memory.
 *
 * @example Usage
 * ```ts
 * import type { HostFactor } from "@llm-surgeon/toolkit";
 * const f: HostFactor = { data: new Float32Array([1, 0, 0, 1]), shape: [2, 2], name: "fc1.G0" };
 * console.log(f.shape); // [2, 2]
 * ```
 */
export interface HostFactor {
  /** Row-major values. */
  data: Float32Array;
  /** Its shape. */
  shape: number[];
  /** The tensor's name. */
  name: string;
}

/**
 * The curvature of one module in host memory (the fields of {@link LayerCurvature}).
 *
 * @example Usage
 * ```ts
 * import type { HostLayerCurvature } from "@llm-surgeon/toolkit";
 * const ident: HostLayerCurvature = { G: [], A: [], D: null, kind: "identity" };
 * console.log(ident.G.length); // 0
 * ```
 */
export interface HostLayerCurvature {
  /** Output-side factors. */
  G: HostFactor[];
  /** Input-side factors. */
  A: HostFactor[];
  /** The exact diagonal, or null. */
  D: HostFactor | null;
  /** The estimate that produced the factors. */
  kind?: CurvatureKind;
}

/**
 * Curvature of every prunable module in host memory, keyed by module name; `pruneShot` accepts
 * it in place of a {@link Curvature} and uploads one module at a time.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { HostCurvature } from "@llm-surgeon/toolkit";
 * const c = new HostCurvature();
 * c.set("model.decoder.layers.0.fc1", { G: [], A: [], D: null, kind: "identity" });
 * assert.equal(c.bytes(), 0);
 * ```
 */
export class HostCurvature extends Map<string, HostLayerCurvature> {
  /** Bytes of host memory held by the factors. */
  bytes(): number {
    let n = 0;
    for (const l of this.values()) {
      for (const f of [...l.G, ...l.A, ...(l.D ? [l.D] : [])]) n += f.data.byteLength;
    }
    return n;
  }
}

/**
 * Copies a module's curvature to host memory and frees its GPU tensors.
 *
 * @param l the module's curvature (its tensors are disposed)
 * @returns the host copy
 * @example Usage
 * ```ts ignore
 * const host = await toHost(curv.get("model.decoder.layers.0.fc1")!);
 * ```
 */
export async function toHost(l: LayerCurvature): Promise<HostLayerCurvature> {
  const down = async (t: Tensor): Promise<HostFactor> => {
    const f = { data: (await t.read()) as Float32Array, shape: [...t.shape], name: t.name };
    t.dispose();
    return f;
  };
  const G: HostFactor[] = [], A: HostFactor[] = [];
  for (const t of l.G) G.push(await down(t));
  for (const t of l.A) A.push(await down(t));
  const D = l.D ? await down(l.D) : null;
  return { G, A, D, kind: l.kind };
}

/**
 * Uploads a module's host curvature to the GPU (the caller disposes it, e.g. with
 * `disposeCurvature`).
 *
 * @param rt the runtime
 * @param h the host copy
 * @returns GPU tensors with the same values
 * @example Usage
 * ```ts ignore
 * const l = toDevice(rt, host.get("model.decoder.layers.0.fc1")!);
 * ```
 */
export function toDevice(rt: Runtime, h: HostLayerCurvature): LayerCurvature {
  const up = (f: HostFactor) => Tensor.fromSync(rt, f.data, f.shape, "f32", f.name);
  return { G: h.G.map(up), A: h.A.map(up), D: h.D ? up(h.D) : null, kind: h.kind };
}

/**
 * The decoder layers of `model` split into `groups` contiguous groups of nearly equal size (fewer
 * when there are fewer layers).
 *
 * @param layers the layer indices of the prunable modules
 * @param groups how many groups
 * @returns the groups, each a sorted list of layer indices
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { layerGroups } from "@llm-surgeon/toolkit";
 * assert.deepEqual(layerGroups([0, 0, 1, 2, 3, 4], 2), [[0, 1, 2], [3, 4]]);
 * ```
 */
export function layerGroups(layers: number[], groups: number): number[][] {
  const all = [...new Set(layers)].sort((a, b) => a - b);
  const g = Math.max(1, Math.min(groups, all.length));
  const out: number[][] = [];
  for (let i = 0; i < g; i++) {
    const lo = Math.round((i * all.length) / g), hi = Math.round(((i + 1) * all.length) / g);
    out.push(all.slice(lo, hi));
  }
  return out;
}

/**
 * Estimates the curvature of every prunable module in `groups` rounds, one per group of decoder
 * layers ({@link layerGroups}); each round runs the calibration passes of `opts` tapping only its
 * group's modules, then moves their factors to host memory. The GPU holds one group's factors at
 * a time. Progress lines are prefixed with the group.
 *
 * @param model the model
 * @param seqs calibration sequences
 * @param opts as for `estimateCurvature` (`reuse` is not supported: it needs GPU factors)
 * @param groups number of layer groups (≥ 1)
 * @returns the factors of every module, in host memory
 * @throws {CurvatureError} on `reuse`, an invalid `groups`, or any error of the estimate
 * @example Usage
 * ```ts ignore
 * const host = await estimateCurvatureInGroups(model, calib, { kind: "kfac", useIad: true }, 4);
 * await pruneShot(model, host, 0.2, { structure: "rowcol" });
 * ```
 */
export async function estimateCurvatureInGroups(
  model: CausalLM,
  seqs: Int32Array[],
  opts: CurvatureOptions,
  groups: number,
): Promise<HostCurvature> {
  if (!Number.isInteger(groups) || groups < 1) {
    throw new CurvatureError(
      `curvature: --curvature_groups must be a positive integer, got ${groups}`,
    );
  }
  if (opts.reuse) {
    throw new CurvatureError(
      "curvature: --reuse needs the previous shot's factors on the GPU; it cannot be combined with --curvature_groups",
    );
  }
  const lins = model.linears();
  const parts = layerGroups(lins.map((l) => l.layer), groups);
  const out = new HostCurvature();
  for (const [i, part] of parts.entries()) {
    const layers = new Set(part);
    const names = new Set(lins.filter((l) => layers.has(l.layer)).map((l) => l.name));
    const label = `layer group ${i + 1}/${parts.length} (layers ${part[0]}–${
      part[part.length - 1]
    })`;
    let curv: Curvature | null = null;
    try {
      curv = await estimateCurvature(model, seqs, {
        ...opts,
        modules: names,
        onProgress: (m) => opts.onProgress?.(`${label}: ${m}`),
      });
      for (const [name, l] of curv) {
        out.set(name, await toHost(l));
        curv.delete(name);
      }
    } finally {
      disposeCurvature(curv); // what an error left on the GPU
    }
    opts.onProgress?.(
      `${label}: ${names.size} modules' factors moved to host memory (${
        (out.bytes() / 2 ** 30).toFixed(2)
      } GiB in all)`,
    );
  }
  return out;
}
