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

// `zipvl bench` on the GPU host (src/bench/main.ts -> .gpu/bench.mjs): node .gpu/bench.mjs --out DIR [--quick] [--peers]
await build({
  entryPoints: ["src/bench/main.ts"],
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  outfile: ".gpu/bench.mjs",
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  logLevel: "warning",
});
console.log("bundled .gpu/bench.mjs");
// `zipvl tune` on the GPU host (src/tune/main.ts -> .gpu/tune.mjs; --program takes printed IR there).
await build({
  entryPoints: ["src/tune/main.ts"],
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  outfile: ".gpu/tune.mjs",
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  logLevel: "warning",
});
console.log("bundled .gpu/tune.mjs");

// The WGSL runner (bench/wgsl-check.ts -> .gpu/wgsl-check.mjs). The `webgpu` package loads dist/<platform>/dawn.node
// beside its index.js; bundled, it loads ZIPVL_DAWN_NODE or .gpu/dawn.node instead (bench/wgsl-gpu.sh unpacks
// .gpu/dawn.node.xz there). The Vulkan loader and GL dispatch debs from .gl (shared/gpu/pack-vulkan.sh) travel in .gpu too.
const { execFileSync } = await import("node:child_process");
const { existsSync, readdirSync, readFileSync, statSync } = await import("node:fs");
const dawnIndex = new URL("../node_modules/webgpu/index.js", import.meta.url).pathname;
await build({
  entryPoints: ["bench/wgsl-check.ts"],
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  outfile: ".gpu/wgsl-check.mjs",
  // ts-morph's TypeScript (random programs go through the front end) reads the CJS globals __filename/__dirname.
  banner: {
    js: "import { createRequire as __cr } from 'node:module'; import { fileURLToPath as __fu } from 'node:url'; " +
      "const require = __cr(import.meta.url); globalThis.__filename ??= __fu(import.meta.url); " +
      "globalThis.__dirname ??= __fu(new URL('.', import.meta.url));",
  },
  logLevel: "warning",
  plugins: [{
    name: "dawn-beside-bundle",
    setup(b) {
      b.onResolve({ filter: /^webgpu$/ }, () => ({ path: dawnIndex }));
      b.onLoad({ filter: /node_modules\/webgpu\/index\.js$/ }, (a) => {
        const src = readFileSync(a.path, "utf8");
        const line = /const dawnNodePath = .*;/;
        if (!line.test(src)) throw new Error("webgpu/index.js changed: no dawnNodePath line to redirect");
        return { contents: src.replace(line, "const dawnNodePath = process.env.ZIPVL_DAWN_NODE || join(__dirname, 'dawn.node');"), loader: "js" };
      });
    },
  }],
});
const dawn = new URL("../node_modules/webgpu/dist/linux-x64/dawn.node", import.meta.url).pathname;
if (!existsSync(".gpu/dawn.node.xz") || statSync(".gpu/dawn.node.xz").mtimeMs < statSync(dawn).mtimeMs) {
  execFileSync("sh", ["-c", `xz -T2 -6 -c '${dawn}' > .gpu/dawn.node.xz`]);
}
// The runner carries ts-morph's TypeScript (random programs go through the front end): ~15 MB, ~2.5 MB as xz.
execFileSync("sh", ["-c", "xz -T2 -9 -f .gpu/wgsl-check.mjs"]);
// All of them: NVIDIA's Vulkan ICD (libGLX_nvidia.so.0) needs libGLdispatch from libglvnd0 (seen on the H200 host:
// "Could not get 'vkCreateInstance' via 'vk_icdGetInstanceProcAddr' for ICD libGLX_nvidia.so.0" with the loader alone).
for (const f of existsSync(".gl") ? readdirSync(".gl").filter((x) => x.endsWith(".deb")) : []) copyFileSync(`.gl/${f}`, `.gpu/${f}`);
const mib = readdirSync(".gpu").reduce((a, f) => a + statSync(`.gpu/${f}`).size, 0) / 2 ** 20;
console.log(`bundled .gpu/wgsl-check.mjs.xz; .gpu holds ${mib.toFixed(1)} MiB (carry limit 64 MiB)`);

// The CUDA model runners: bench/model-gpu-check.ts (ModelOps and the small LLaVA vs cpu) and bench/llava-scale.ts
// (13B-shaped decoder timings), bench/gemv-gpu.ts (the fused small-batch linear kernels: differential + timings), and
// the serving runners bench/serve-gpu.ts (the engine over HTTP on cuda, the
// serving attention vs the interpreter) and bench/serve-bench.ts (13B-shaped serving, CUDA graphs vs eager decode).
// They compile DSL programs (ts-morph), hence the CJS globals in the banner.
for (const name of ["model-gpu-check", "llava-scale", "serve-gpu", "serve-bench", "gemv-gpu"]) {
  if (!existsSync(`bench/${name}.ts`)) continue;
  await build({
    entryPoints: [`bench/${name}.ts`],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile: `.gpu/${name}.mjs`,
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; import { fileURLToPath as __fu } from 'node:url'; " +
        "const require = __cr(import.meta.url); globalThis.__filename ??= __fu(import.meta.url); " +
        "globalThis.__dirname ??= __fu(new URL('.', import.meta.url));",
    },
    logLevel: "warning",
    // Programs come from the printed IR (test/golden); the TypeScript front end (ts-morph, 15 MB) stays out.
    plugins: [{ name: "no-frontend", setup: (b) => b.onResolve({ filter: /\/driver\.ts$/ }, (a) => ({ path: a.path, external: true })) }],
  });
  console.log(`bundled .gpu/${name}.mjs`);
}

// The whole zipvl CLI for the GPU host (bench/model-cli.ts -> src/cli/main.ts -> .gpu/zipvl.mjs.xz): demo, run,
// parity, check, compile, exec, ... with the front end (ts-morph's TypeScript), tokenizers, jinja, pngjs and jpeg-js
// inside; the optional `webgpu` package stays external (the WebGPU backend then reports that it is missing). The
// backend ops modules are static import() calls (src/model/session.ts, src/cli/main.ts), so esbuild keeps them.
// The banner makes the bundle find the addon beside itself and the templates beside .gpu (or under the working
// directory) when ZIPVL_NATIVE_ADDON / ZIPVL_TEMPLATES are unset. bench/gpu-model.sh unpacks it to .gpu/zipvl.mjs.
await build({
  entryPoints: ["bench/model-cli.ts"],
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  outfile: ".gpu/zipvl.mjs",
  minify: true,
  banner: {
    js: "import { createRequire as __cr } from 'node:module'; import { fileURLToPath as __fu } from 'node:url'; " +
      "import { existsSync as __ex } from 'node:fs'; import { join as __jn, resolve as __rs } from 'node:path'; " +
      "const require = __cr(import.meta.url); globalThis.__filename ??= __fu(import.meta.url); " +
      "globalThis.__dirname ??= __fu(new URL('.', import.meta.url)); " +
      "{ const d = __fu(new URL('.', import.meta.url)), e = process.env; " +
      "if (!e.ZIPVL_NATIVE_ADDON && __ex(__jn(d, 'zipvl_native.node'))) e.ZIPVL_NATIVE_ADDON = __jn(d, 'zipvl_native.node'); " +
      "if (!e.ZIPVL_TEMPLATES) for (const t of [__jn(d, '..', 'templates'), __rs('templates')]) " +
      "if (__ex(__jn(t, 'cuda', 'include'))) { e.ZIPVL_TEMPLATES = t; break; } }",
  },
  external: ["webgpu"],
  logLevel: "warning",
});
// Carried xz-compressed (7.4 MiB -> 1.3 MiB); `xz -dk .gpu/zipvl.mjs.xz` for a local `node .gpu/zipvl.mjs ...`.
const plain = statSync(".gpu/zipvl.mjs").size;
execFileSync("sh", ["-c", "xz -T2 -9 -f .gpu/zipvl.mjs"]);
console.log(`bundled .gpu/zipvl.mjs.xz (${(statSync(".gpu/zipvl.mjs.xz").size / 2 ** 20).toFixed(1)} MiB; ${(plain / 2 ** 20).toFixed(1)} MiB unpacked)`);

