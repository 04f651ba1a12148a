/**
 * The refinement loop shared by the SPD solves and inverses of kernels/linalg.ts and
 * kernels/linalg_big.ts: each step computes one correction and returns its relative size ρ; the
 * loop stops below the rule's tolerance, after `maxSteps`, or when ρ stalls (with a warning), and
 * throws on a non-finite ρ. Private to the kernels (not exported from mod.ts).
 *
 * @module
 */
import { GpuError } from "./device.ts";

/** Relative correction below which solve refinement stops. */
export const SOLVE_TOL = 1e-7;

/** Default estimated relative error of `spdInverse` below which it stops refining. */
export const INVERSE_TOL = 2e-6;

/**
 * The target relative error of an SPD inverse: `tol`, default {@link INVERSE_TOL}.
 *
 * @param op the operation named in the error
 * @param tol the caller's option
 * @throws {GpuError} when it is not positive
 */
export function inverseTol(op: string, tol: number | undefined): number {
  const t = tol ?? INVERSE_TOL;
  if (!(t > 0)) throw new GpuError(op, `tol ${t} must be positive`);
  return t;
}

/**
 * The damping policy of `retryDamping`: runs `attempt` with damping `damp`; when it fails with an
 * error `retryable` accepts (a failed pivot) and `retry` is on, tries again up to 4 times, each
 * with 10× the damping (1e-5 after none), announcing each retry and a late success by a warning.
 * Other errors, and the last failure, are rethrown.
 *
 * @param op the operation named in the warnings
 * @param damp the first damping
 * @param retry the caller's `retryDamping` option
 * @param retryable which errors a larger damping may cure
 * @param attempt the work, given the damping to use
 * @returns the attempt's value and the damping it succeeded with
 */
export async function withRetryDamping<T>(
  op: string,
  damp: number,
  retry: boolean | undefined,
  retryable: (e: unknown) => boolean,
  attempt: (damp: number) => Promise<T>,
): Promise<{ value: T; damp: number }> {
  for (let tries = 0;; tries++) {
    try {
      const value = await attempt(damp);
      if (tries > 0) console.warn(`${op}: succeeded with damping λ = ${damp}`);
      return { value, damp };
    } catch (e) {
      if (!retry || tries >= 4 || !retryable(e)) throw e;
      damp = damp > 0 ? damp * 10 : 1e-5;
      console.warn(`${op}: ${(e as Error).message}; retrying with damping λ = ${damp}`);
    }
  }
}

/** When a refinement loop stops. */
export interface RefineRule {
  /** Stop once ρ is below this. */
  tol: number;
  /** First step (0-based) at which a stall is checked. */
  stallFrom: number;
  /** A step whose ρ exceeds this fraction of the previous one has stalled. */
  stallRatio: number;
  /** Appended to the stall warning. */
  hint: string;
}

/** Iterative refinement of solves: ρ < 1e-7, stalled from the third step at 0.7× the last ρ. */
export const SOLVE_RULE: RefineRule = { tol: SOLVE_TOL, stallFrom: 2, stallRatio: 0.7, hint: "" };

/**
 * Newton steps of an inverse for a target relative error `tol`: the error after a step is
 * ≈ 2ρ², so they stop at ρ < √(tol/2); a step that does not halve ρ has stalled.
 */
export function newtonRule(tol: number): RefineRule {
  return {
    tol: Math.sqrt(tol / 2),
    stallFrom: 1,
    stallRatio: 0.5,
    hint: " (the matrix is too ill-conditioned for f32; consider more damping)",
  };
}

/**
 * Runs `step` until `rule` says stop, at most `maxSteps` times.
 *
 * @param op the operation named in the error and warning
 * @param maxSteps most steps
 * @param rule when to stop
 * @param step one correction; returns its relative size ρ
 */
export async function refine(
  op: string,
  maxSteps: number,
  rule: RefineRule,
  step: () => Promise<number>,
): Promise<void> {
  let prev = Infinity;
  for (let k = 0; k < maxSteps; k++) {
    const rho = await step();
    if (!Number.isFinite(rho)) {
      throw new GpuError(op, "refinement produced a non-finite correction");
    }
    if (rho < rule.tol) return;
    if (k >= rule.stallFrom && rho > rule.stallRatio * prev) {
      console.warn(
        `${op}: refinement stalled at relative correction ${rho.toExponential(2)}${rule.hint}`,
      );
      return;
    }
    prev = rho;
  }
}
