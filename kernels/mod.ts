/**
 * The GPU core: runtime, tensors and kernels.
 *
 * @module
 */
export * from "./device.ts";
export * from "./tensor.ts";
export * from "./elementwise.ts";
export * from "./gemm.ts";
