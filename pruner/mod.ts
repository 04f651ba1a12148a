/**
 * Pruning (ALGORITHM.md §3–§9): local costs, global thresholds, OBS updates, one shot over the
 * model, the multi-shot schedule with optional LoRA steps, and the published method presets.
 *
 * @module
 */
export {
  chunkSizes,
  parseStructures,
  PruneOptionError,
  type RowColCosts,
  type Structure,
  structuredThreshold,
  structureName,
} from "./structure.ts";
export {
  formatShot,
  type ModuleSparsity,
  type PruneOptions,
  pruneShot,
  type ShotReport,
  type SparsityStats,
  sparsityStats,
} from "./shot.ts";
export {
  linearTarget,
  type MethodName,
  type MethodPreset,
  methodPresets,
  presetFor,
  runSchedule,
  type ScheduleHooks,
  type ScheduleOptions,
  shotData,
  shotSeed,
} from "./schedule.ts";
export { loraFinetune, type LoraOptions, loraSubset, loraTargets } from "./lora.ts";
