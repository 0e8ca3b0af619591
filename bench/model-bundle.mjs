// Bundles the zipvl CLI (demo, run, parity and the rest) into .gpu/zipvl-model.mjs for a GPU host without
// node_modules (xz-compressed: .gpu is carried under a 64 MiB limit), and copies the native addon.
// Run after ../shared/gpu/pack-node.sh; carry .gpu; then bash bench/model-gpu.sh on the GPU host.
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, rmSync, statSync } from "node:fs";
import { build } from "esbuild";

mkdirSync(".gpu", { recursive: true });
await build({
  entryPoints: ["bench/model-cli.ts"],
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  outfile: ".gpu/zipvl-model.mjs",
  minify: true,
  // ts-morph's TypeScript (policy programs go through the front end) reads the CJS globals __filename/__dirname.
  banner: {
    js: "import { createRequire as __cr } from 'node:module'; import { fileURLToPath as __fu } from 'node:url'; " +
      "const require = __cr(import.meta.url); globalThis.__filename ??= __fu(import.meta.url); " +
      "globalThis.__dirname ??= __fu(new URL('.', import.meta.url));",
  },
  // The optional WebGPU runtime is not needed by the model commands on a CUDA host.
  external: ["webgpu"],
  logLevel: "warning",
});
if (existsSync("native/build/Release/zipvl_native.node")) copyFileSync("native/build/Release/zipvl_native.node", ".gpu/zipvl_native.node");
execFileSync("sh", ["-c", "xz -T2 -6 -c .gpu/zipvl-model.mjs > .gpu/zipvl-model.mjs.xz"]);
rmSync(".gpu/zipvl-model.mjs");
console.log(`bundled .gpu/zipvl-model.mjs.xz (${(statSync(".gpu/zipvl-model.mjs.xz").size / 2 ** 20).toFixed(1)} MiB)`);
