/**
 * Curvature estimates of the loss per prunable linear module (ALGORITHM.md §2): Identity,
 * Activations, KFAC (IAD, Kronecker power iteration, rank > 1) and the exact diagonal.
 *
 * @module
 */
export * from "./types.ts";
export { estimateCurvature } from "./estimate.ts";
export * from "./host.ts";
