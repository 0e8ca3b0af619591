// Render templates/cuda/sparse_attn.cu.hbs for a dtype x head-dim grid and (optionally) compile each with nvcc.
//   node test/cuda/render-attn.mjs [outDir] [--compile] [--arch=80,90] [--dtypes=bf16,f16,f32] [--dims=64,128]
//                                  [--config={"BM":128,"BN":64,"warps":8,"minBlocks":2}]
// Prints registers / spills / smem per config from `ptxas -v`.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Handlebars from "handlebars";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const args = process.argv.slice(2);
const outDir = resolve(args.find((a) => !a.startsWith("--")) ?? join(root, "tmp/attn"));
const opt = (k, d) => (args.find((a) => a.startsWith(`--${k}=`)) ?? `=${d}`).split("=")[1];
const compile = args.includes("--compile");
const arches = opt("arch", "80,90").split(",").map(Number);
const dtypes = { f32: "float", f16: "__half", bf16: "__nv_bfloat16" };
const dts = opt("dtypes", "f32,f16,bf16").split(",");
const dims = opt("dims", "64,80,96,128,256").split(",").map(Number);
const config = JSON.parse(opt("config", "{}"));

const tpl = Handlebars.compile(readFileSync(join(root, "templates/cuda/sparse_attn.cu.hbs"), "utf8"));
const variant = {
  activation: 0, probeCausal: true, attnCausal: true, attnMaskTrivial: true,
  scoreMod: "s", probeMask: "k_pos <= q_pos", attnMask: "k_pos <= q_pos",
};
mkdirSync(outDir, { recursive: true });
const nvcc = "/usr/local/cuda/bin/nvcc";
for (const arch of arches) {
  for (const dt of dts) {
    for (const d of dims) {
      const kernelName = `zv_sparse_attn_${dt}_d${d}_sm${arch}`;
      const src = join(outDir, `${kernelName}.cu`);
      writeFileSync(src, tpl({ kernelName, dtype: dtypes[dt], headDim: d, arch, config, variant }));
      if (!compile) continue;
      const gencode = arch === 90 ? "arch=compute_90a,code=sm_90a" : "arch=compute_80,code=sm_80";
      const r = spawnSync(nvcc, ["-std=c++17", `-gencode=${gencode}`, "-cubin", "-O3", "-Xptxas", "-v",
        "-I", join(root, "templates/cuda/include"), "-o", src.replace(/\.cu$/, ".cubin"), src], { encoding: "utf8" });
      const log = `${r.stdout}${r.stderr}`;
      if (r.status !== 0) {
        console.log(`${kernelName}: COMPILE FAILED\n${log}`);
        process.exitCode = 1;
        continue;
      }
      const regs = /Used (\d+) registers/.exec(log)?.[1];
      const spill = /(\d+) bytes spill stores, (\d+) bytes spill loads/.exec(log);
      const stack = /(\d+) bytes stack frame/.exec(log)?.[1];
      const warn = log.split("\n").filter((l) => /warning/i.test(l)).join("\n");
      console.log(`${kernelName.padEnd(34)} regs ${regs} stack ${stack} spill st/ld ${spill?.[1]}/${spill?.[2]}${warn ? "\n" + warn : ""}`);
    }
  }
}
