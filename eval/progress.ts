/**
 * Progress lines with elapsed time and an estimate of what remains, for long loops
 * (calibration passes, shots, evaluations).
 *
 * @module
 */

/**
 * Formats seconds as `12.3s`, `4m05s` or `2h03m`.
 * @param seconds a duration
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatDuration } from "@llm-surgeon/toolkit";
 * assert.equal(formatDuration(12.34), "12.3s");
 * assert.equal(formatDuration(245), "4m05s");
 * assert.equal(formatDuration(7380), "2h03m");
 * assert.equal(formatDuration(NaN), "?");
 * ```
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m}m${String(Math.floor(seconds % 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

/**
 * Tracks a loop of `total` steps and produces lines like
 * `eval wikitext2: 12/80 windows, 3.1s elapsed, ~17.6s left`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { Progress } from "@llm-surgeon/toolkit";
 * const p = new Progress("calibration", 4, "sequences");
 * assert.match(p.line(1), /^calibration: 1\/4 sequences, [\d.]+s elapsed, ~[\d.]+s left/);
 * ```
 */
export class Progress {
  readonly #start = performance.now();
  #lastPrint = -Infinity;

  /**
   * Starts the clock.
   * @param label what is being done
   * @param total number of steps
   * @param unit what a step is called
   */
  constructor(readonly label: string, readonly total: number, readonly unit = "steps") {}

  /** Seconds since construction. */
  get elapsed(): number {
    return (performance.now() - this.#start) / 1000;
  }

  /**
   * The progress line after `done` steps.
   * @param done steps completed
   * @param extra text appended after the counts (e.g. a running perplexity)
   */
  line(done: number, extra = ""): string {
    const el = this.elapsed;
    const left = done > 0 ? (el / done) * (this.total - done) : NaN;
    const tail = done >= this.total ? "done" : `~${formatDuration(left)} left`;
    return `${this.label}: ${done}/${this.total} ${this.unit}${extra ? ", " + extra : ""}, ` +
      `${formatDuration(el)} elapsed, ${tail}`;
  }

  /**
   * Like {@link line}, but returns null when the previous line was printed less than
   * `everySeconds` ago (the first and the last step always print).
   * @param done steps completed
   * @param extra text appended after the counts
   * @param everySeconds minimum spacing of lines
   */
  throttled(done: number, extra = "", everySeconds = 2): string | null {
    const now = performance.now() / 1000;
    if (done > 1 && done < this.total && now - this.#lastPrint < everySeconds) return null;
    this.#lastPrint = now;
    return this.line(done, extra);
  }
}
