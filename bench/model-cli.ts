// Entry of the bundled zipvl CLI for GPU hosts without node_modules (bench/bundle.mjs -> .gpu/zipvl.mjs.xz):
// `node .gpu/zipvl.mjs demo|run|parity ...` behaves like `npx zipvl ...`; bench/gpu-model.sh drives it.
import { main } from "../src/cli/main.ts";

process.exitCode = await main(process.argv.slice(2));
