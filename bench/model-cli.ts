// Entry of the bundled zipvl CLI for GPU hosts without node_modules (bench/model-bundle.mjs -> .gpu/zipvl-model.mjs):
// `node .gpu/zipvl-model.mjs demo|run|parity ...` behaves like `npx zipvl ...`.
import { main } from "../src/cli/main.ts";

process.exitCode = await main(process.argv.slice(2));
