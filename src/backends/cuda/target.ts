// `zipvl compile --target cuda`: rendered sources for every kernel op and instantiation, and, where nvcc exists,
// cubins for sm_90a and sm_80 plus portable PTX, with ptxas's register/spill report in kernels.json.
import type { CodegenTarget, GeneratedFile } from "../backend.ts";
import { nvccCompile, nvccVersion } from "./compile.ts";
import { renderKernels, type Stage } from "./render.ts";
import { defaultConfig, type Config } from "./schedule.ts";

const STAGES: readonly Stage[] = ["probe", "select", "sparse_attn", "decode"];

export const cudaTarget: CodegenTarget = {
  name: "cuda",
  async generate(p, opts) {
    const files: GeneratedFile[] = [];
    const manifest: Record<string, unknown>[] = [];
    const build = (opts.build ?? true) && nvccVersion() !== null;
    for (const dtype of opts.dtypes ?? ["bf16"]) {
      for (const headDim of opts.headDims ?? [128]) {
        // The source differs per arch (sm_90a takes the wgmma path), so each arch gets its own file.
        for (const arch of [90, 80] as const) {
          const configs = Object.fromEntries(STAGES.map((s) => [s, defaultConfig(s, dtype, headDim, arch)])) as Record<Stage, Config>;
          const suffix = arch === 90 ? "sm_90a" : "sm_80";
          for (const k of renderKernels(p, dtype, headDim, arch, configs)) {
            const source = `cuda/${k.name}.${suffix}.cu`;
            files.push({ path: source, contents: k.source });
            const entry: Record<string, unknown> = { name: k.name, stage: k.stage, dtype, headDim, arch: suffix, config: k.config, source };
            if (build) {
              const r = nvccCompile(k, arch, { ptx: arch === 80 });
              files.push({ path: `cuda/${k.name}.${suffix}.cubin`, contents: r.cubin });
              if (r.ptx) files.push({ path: `cuda/${k.name}.compute_80.ptx`, contents: r.ptx });
              entry.ptxas = r.reports;
            }
            manifest.push(entry);
          }
        }
      }
    }
    files.push({ path: "cuda/kernels.json", contents: JSON.stringify({ program: p.name, nvcc: nvccVersion(), built: build, kernels: manifest }, null, 2) + "\n" });
    return files;
  },
};
