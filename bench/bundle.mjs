// Bundles the GPU-host runner into .gpu/gpu-check.mjs (the GPU host has no node_modules) and copies the addon.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

mkdirSync(".gpu", { recursive: true });
await build({
  entryPoints: ["bench/gpu-check.ts"],
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  outfile: ".gpu/gpu-check.mjs",
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  logLevel: "warning",
});
copyFileSync("native/build/Release/zipvl_native.node", ".gpu/zipvl_native.node");
console.log("bundled .gpu/gpu-check.mjs");
