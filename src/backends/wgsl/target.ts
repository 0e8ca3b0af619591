// `zipvl compile --target wgsl`: one WGSL module per stage and head dim, with the variant hooks emitted from the
// IR and a schedule fitted to WebGPU's default limits (the runtime refits it to the adapter's own limits).
import type { CodegenTarget, GeneratedFile } from "../backend.ts";
import type { ZvLimits } from "../../runtime/webgpu.ts";
import { chooseConfig, renderWgsl, STAGE_BINDINGS, STAGE_ENTRIES, type WgslContext, type WgslStage } from "./stages.ts";
import { wgslVariants } from "./variant.ts";

/** The limits every WebGPU adapter guarantees (the spec's defaults). */
export const PORTABLE_LIMITS: ZvLimits = {
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBufferBindingSize: 134217728,
  maxBufferSize: 268435456,
  maxStorageBuffersPerShaderStage: 8,
};

const STAGES: readonly WgslStage[] = ["probe", "select", "attention", "decode"];

/** The WGSL sources of a fused program at one head dim (what the golden snapshots hold). */
export function renderProgramWgsl(p: Parameters<typeof wgslVariants>[0], headDim: number): { stage: WgslStage; name: string; code: string; ctx: WgslContext }[] {
  const v = wgslVariants(p, headDim);
  const config = chooseConfig(PORTABLE_LIMITS, headDim, false);
  return STAGES.map((stage) => {
    const name = `zv_${p.name.replace(/[^A-Za-z0-9_]/g, "_")}_${stage}_d${headDim}`;
    const variant = stage === "probe" ? v.probe : stage === "select" ? v.select : v.attention;
    const ctx: WgslContext = { kernelName: name, headDim, useF16: false, config, variant: { keepIf: "false", ...variant } };
    return { stage, name, code: renderWgsl(stage, ctx), ctx };
  });
}

export const wgslTarget: CodegenTarget = {
  name: "wgsl",
  async generate(p, opts) {
    const files: GeneratedFile[] = [];
    const manifest = [];
    for (const headDim of opts.headDims ?? [128]) {
      for (const s of renderProgramWgsl(p, headDim)) {
        files.push({ path: `wgsl/${s.name}.wgsl`, contents: s.code });
        manifest.push({ name: s.name, stage: s.stage, headDim, entryPoints: STAGE_ENTRIES[s.stage], bindings: STAGE_BINDINGS[s.stage], config: s.ctx.config });
      }
    }
    files.push({ path: "wgsl/shaders.json", contents: JSON.stringify({ program: p.name, limits: "WebGPU defaults (refit at run time)", shaders: manifest }, null, 2) + "\n" });
    return files;
  },
};
