// Entry of the bundled GPU-host runner (.gpu/bench.mjs, built by bench/bundle.mjs): `zipvl bench` without the
// front end (no ts-morph there). Usage: node .gpu/bench.mjs [zipvl bench options]
import { benchCommand } from "../cli/bench.ts";
import { isUserError } from "../diagnostics/diagnostic.ts";

try {
  process.exitCode = await benchCommand(process.argv.slice(2), (s) => void process.stdout.write(s + "\n"));
} catch (e) {
  if (isUserError(e)) {
    process.stderr.write(`error ${e.message}\n`);
    process.exitCode = 1;
  } else throw e;
}
