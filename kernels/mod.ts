/**
 * The GPU core: the shared runtime, `Tensor`, and the WGSL kernel families — GEMM, linear
 * algebra (Cholesky, triangular solves, SPD inverse and solves, symmetric eigendecomposition),
 * Kronecker algebra, layout helpers, reductions, selection, element-wise maps and the
 * neural-net layers.
 *
 * @example Usage
 * ```ts ignore
 * import { matmul, spdInverse, Tensor } from "./mod.ts";
 * const x = await Tensor.from(new Float32Array(12).fill(1), [4, 3]);
 * const a = matmul(x, x, { transA: true });            // 3×3 Gram matrix, recorded
 * const inv = await spdInverse(a, { damp: 0.01 });      // (A + 0.01·mean(diag A)·I)⁻¹
 * console.log(await inv.read());
 * ```
 *
 * @module
 */
export * from "./device.ts";
export * from "./tensor.ts";
export * from "./cast.ts";
export * from "./elementwise.ts";
export * from "./gemm.ts";
export * from "./matrix.ts";
export * from "./reduce.ts";
export * from "./select.ts";
export * from "./kron.ts";
export * from "./linalg.ts";
export * from "./linalg_big.ts";
export * from "./eigh.ts";
export * from "./nn.ts";
