/**
 * The command line with the fake model and schedule of _eval_fakes.ts, for tests that run it as
 * a child process (and kill it). `FAKE_DELAY_MS` slows each shot down.
 */
import { parseFlags } from "../examples/cli_flags.ts";
import { runSurgeon } from "../examples/surgeon.ts";
import { fakeDeps } from "./_eval_fakes.ts";

await runSurgeon(parseFlags(Deno.args), {
  deps: fakeDeps(Number(Deno.env.get("FAKE_DELAY_MS") ?? "0")),
});
