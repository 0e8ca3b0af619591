#!/usr/bin/env node
// Renders the thin CUDA templates with a sample causal variant (the same context shape src/backends/cuda passes,
// see templates/cuda/CONTRACT.md) and optionally compiles them with nvcc to report ptxas registers/spills.
//
//   node test/cuda/render-sample.mjs probe __nv_bfloat16 128 90            # print one rendered kernel
//   node test/cuda/render-sample.mjs --all OUTDIR                          # render the whole matrix to OUTDIR
//   node test/cuda/render-sample.mjs --all OUTDIR --compile [--arch 90]    # ... and compile each (-cubin, -Xptxas -v)
//   options: --config '{"warps":8}'  --activation softmax|sigmoid|none  --nvcc /path/to/nvcc
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Handlebars from "handlebars";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const tplDir = join(root, "templates/cuda");
const STAGES = ["probe", "select", "decode"];
const DTYPES = ["float", "__half", "__nv_bfloat16"];
const HEAD_DIMS = [64, 80, 96, 128, 256];

const argv = process.argv.slice(2);
const flag = (name, dflt) => {
  const i = argv.indexOf(name);
  if (i < 0) return dflt;
  const v = argv[i + 1];
  argv.splice(i, 2);
  return v;
};
const has = (name) => {
  const i = argv.indexOf(name);
  if (i >= 0) argv.splice(i, 1);
  return i >= 0;
};

const config = JSON.parse(flag("--config", "{}"));
const activation = flag("--activation", "softmax");
const nvcc = flag("--nvcc", process.env.NVCC ?? "/usr/local/cuda/bin/nvcc");
const archs = (flag("--arch", "80,90")).split(",").map(Number);
const allDir = flag("--all", null);
const compile = has("--compile");

export function context(stage, dtype, headDim, arch, cfg = config) {
  const tag = dtype === "float" ? "f32" : dtype === "__half" ? "f16" : "bf16";
  return {
    kernelName: `zv_${stage}_${tag}_d${headDim}_sm${arch}`,
    dtype,
    headDim,
    arch,
    config: cfg,
    variant: {
      activation,
      probeCausal: true,
      attnCausal: true,
      scoreMod: "s",
      probeMask: "k_pos <= q_pos",
      attnMask: "k_pos <= q_pos",
    },
  };
}

export function render(stage, ctx) {
  const src = readFileSync(join(tplDir, `${stage}.cu.hbs`), "utf8");
  return Handlebars.compile(src, { strict: false })(ctx);
}

function nvccCompile(file, arch) {
  const gencode = arch === 90 ? "arch=compute_90a,code=sm_90a" : "arch=compute_80,code=sm_80";
  const args = ["-std=c++17", "-cubin", `-gencode=${gencode}`, "-Xptxas", "-v", "-I", join(tplDir, "include"),
    "-o", file.replace(/\.cu$/, `.sm${arch}.cubin`), file];
  const r = spawnSync(nvcc, args, { encoding: "utf8" });  // ptxas -v reports on stderr
  const log = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  return r.status === 0 ? log : `COMPILE ERROR\n${log}`;
}

// ptxas -v lines: "Function properties for X ... N bytes spill stores, M bytes spill loads" / "Used R registers".
function summarize(log) {
  const out = [];
  let fn = null, spill = "";
  for (const line of log.split("\n")) {
    let m;
    if ((m = line.match(/Compiling entry function '([^']+)'/))) fn = m[1];
    else if ((m = line.match(/(\d+) bytes spill stores, (\d+) bytes spill loads/))) spill = `spill ${m[1]}/${m[2]}`;
    else if ((m = line.match(/Used (\d+) registers/)) && fn) {
      const smem = line.match(/(\d+) bytes smem/);
      out.push(`${fn}: ${m[1]} regs, ${smem ? smem[1] : 0} B smem, ${spill}`);
      fn = null;
    }
  }
  return out;
}

if (allDir) {
  mkdirSync(allDir, { recursive: true });
  let failed = 0;
  for (const stage of STAGES)
    for (const dtype of DTYPES)
      for (const d of HEAD_DIMS)
        for (const arch of archs) {
          if (stage === "select" && (dtype !== "float" || d !== 64)) continue;  // select is dtype/headDim-free
          const ctx = context(stage, dtype, d, arch);
          const file = join(allDir, `${ctx.kernelName}.cu`);
          writeFileSync(file, render(stage, ctx));
          if (!compile) continue;
          const log = nvccCompile(file, arch);
          if (log.startsWith("COMPILE ERROR")) { failed++; console.log(`${ctx.kernelName}: ${log}`); continue; }
          for (const l of summarize(log)) console.log(l);
        }
  if (failed) { console.log(`${failed} compile failures`); process.exit(1); }
} else if (argv.length >= 1) {
  const [stage, dtype = "__nv_bfloat16", d = "128", arch = "90"] = argv;
  process.stdout.write(render(stage, context(stage, dtype, Number(d), Number(arch))));
} else {
  console.error("usage: render-sample.mjs STAGE [DTYPE HEADDIM ARCH] | --all OUTDIR [--compile]");
  process.exit(2);
}
