// Entry of the bundled GPU-host tuner (.gpu/tune.mjs, built by bench/bundle.mjs): `zipvl tune` without the front
// end, so --program takes printed IR. Usage: node .gpu/tune.mjs [--program test/golden/topk-ratio.final.ir] [...]
import { tuneCommand } from "../cli/tune.ts";
import { isUserError } from "../diagnostics/diagnostic.ts";

const argv = process.argv.slice(2);
try {
  process.exitCode = await tuneCommand(argv.includes("--program") ? argv : ["--program", "test/golden/topk-ratio.final.ir", ...argv], (s) => void process.stdout.write(s + "\n"));
} catch (e) {
  if (isUserError(e)) {
    process.stderr.write(`error ${e.message}\n`);
    process.exitCode = 1;
  } else throw e;
}
