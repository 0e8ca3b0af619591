// `zipvl compile --target cuda`: rendered sources for every kernel op and instantiation, and, where nvcc exists,
// cubins for sm_90a and sm_80 plus portable PTX, with ptxas's register/spill report in kernels.json.
import type { CodegenTarget, GeneratedFile } from "../backend.ts";
import { nvccCompile, nvccVersion, type PtxasReport } from "./compile.ts";
import { renderKernels } from "./render.ts";

export const cudaTarget: CodegenTarget = {
  name: "cuda",
  async generate(p, opts) {
    const files: GeneratedFile[] = [];
    const manifest: Record<string, unknown>[] = [];
    const build = (opts.build ?? true) && nvccVersion() !== null;
    for (const dtype of opts.dtypes ?? ["bf16"]) {
      for (const headDim of opts.headDims ?? [128]) {
        for (const k of renderKernels(p, dtype, headDim, 90)) {
          files.push({ path: `cuda/${k.name}.cu`, contents: k.source });
          const entry: Record<string, unknown> = { name: k.name, stage: k.stage, dtype, headDim, source: `cuda/${k.name}.cu` };
          if (build) {
            const reports: Record<string, PtxasReport[]> = {};
            for (const arch of [90, 80] as const) {
              const r = nvccCompile(k, arch, { ptx: arch === 80 });
              const suffix = arch === 90 ? "sm_90a" : "sm_80";
              files.push({ path: `cuda/${k.name}.${suffix}.cubin`, contents: r.cubin });
              if (r.ptx) files.push({ path: `cuda/${k.name}.compute_80.ptx`, contents: r.ptx });
              reports[suffix] = r.reports;
            }
            entry.ptxas = reports;
          }
          manifest.push(entry);
        }
      }
    }
    files.push({ path: "cuda/kernels.json", contents: JSON.stringify({ program: p.name, nvcc: nvccVersion(), built: build, kernels: manifest }, null, 2) + "\n" });
    return files;
  },
};
