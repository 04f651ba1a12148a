/**
 * LLM Surgeon toolkit: curvature-based pruning of large language models on the GPU with
 * Deno's WebGPU.
 *
 * @module
 */
export * from "./kernels/mod.ts";
