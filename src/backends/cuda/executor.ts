// The cuda executor: compiles (or loads from the cache) the kernels a program needs for the input dtype and head
// dim, runs prefill or decode through CudaPrefill / CudaDecode, and returns host tensors like the cpu backend.
import { fail } from "../../diagnostics/diagnostic.ts";
import { knobs } from "../../knobs.ts";
import type { Tensor } from "../../io/tensor.ts";
import type { Program } from "../../ir/ir.ts";
import { CudaDevice, nvrtcCompile, nvrtcVersion, type CudaFunction, type CudaModule } from "../../runtime/native.ts";
import type { Executor, ExecOptions } from "../backend.ts";
import { compileKernel, nvccVersion, type Arch, type CompiledKernel } from "./compile.ts";
import { CudaDecode, CudaPrefill, type KernelSet } from "./pipeline.ts";
import { renderKernels, type CudaDType, type Stage } from "./render.ts";
import { defaultConfig, type Config } from "./schedule.ts";
import { planPrefill } from "../plan.ts";
import { cudaKey, cudaToolchain } from "../../tune/keys.ts";
import { keptOf, tunedCudaConfigs } from "../../tune/lookup.ts";

export interface CudaContext {
  readonly dev: CudaDevice;
  readonly arch: Arch;
  kernels(p: Program, dtype: CudaDType, headDim: number, configs?: Partial<Record<Stage, Config>>): KernelSet & { compiled: CompiledKernel[] };
  dispose(): void;
}

export function openCuda(): CudaContext {
  const dev = CudaDevice.open();
  const [major] = dev.info.computeCapability;
  if (major < 8) fail("ZV4002", ["the cuda backend", `compute capability ${dev.info.computeCapability.join(".")} (needs 8.0 or newer)`]);
  const arch: Arch = major >= 9 ? 90 : 80;
  const modules = new Map<string, CudaModule>();
  let nvrtc: Parameters<typeof compileKernel>[2];
  if (knobs.jit === "nvrtc" || !nvccVersion()) {
    try {
      nvrtc = { version: nvrtcVersion().join("."), compile: (src, o) => nvrtcCompile(src, o) };
    } catch {
      nvrtc = undefined;
    }
  }
  return {
    dev,
    arch,
    kernels(p, dtype, headDim, configs = {}) {
      const cfg = (s: Stage): Config => configs[s] ?? defaultConfig(s, dtype, headDim, arch);
      const all = { probe: cfg("probe"), select: cfg("select"), sparse_attn: cfg("sparse_attn"), decode: cfg("decode") };
      const sources = renderKernels(p, dtype, headDim, arch, all);
      const compiled: CompiledKernel[] = [];
      const fns = new Map<string, CudaFunction>();
      for (const k of sources) {
        const c = compileKernel(k, arch, nvrtc);
        compiled.push(c);
        let mod = modules.get(c.key);
        if (!mod) {
          mod = dev.loadModule(c.cubin);
          modules.set(c.key, mod);
        }
        const names = k.stage === "decode" ? [`${k.name}_split`, `${k.name}_combine`] : [k.name];
        for (const name of names) fns.set(k.stage + name.slice(k.name.length), mod.getFunction(name));
      }
      return {
        compiled,
        fn: (stage, suffix = "") => fns.get(stage + suffix) ?? fail("ZV4002", ["the cuda backend", `programs without a ${stage} kernel`]),
        config: cfg,
      };
    },
    dispose() {
      for (const m of modules.values()) m.unload();
    },
  };
}

/** The tuned configs (generated/tuning) for this run's shape; stages without a matching record use the fallback. */
export function tunedFor(ctx: CudaContext, p: Program, fname: "prefill" | "decode", inputs: ReadonlyMap<string, Tensor>, opts: ExecOptions): Partial<Record<Stage, Config>> {
  const q = inputs.get("q")!;
  const kv = inputs.get(fname === "prefill" ? "k" : "k_cache");
  if (!kv || q.shape.length !== 3 || kv.shape.length !== 3) return {}; // the pipeline reports the bad input
  const [Hq, n0, d] = q.shape as [number, number, number];
  const [Hkv, c] = kv.shape as [number, number];
  let kept: number | undefined;
  if (fname === "prefill") {
    const sel = planPrefill(p, inputs, opts, "the cuda backend").select;
    kept = keptOf(sel.mode, sel.amount, n0);
  }
  const key = cudaKey(ctx.dev.info, cudaToolchain(nvrtcVersion));
  return tunedCudaConfigs(key, fname, { Hq, Hkv, n: fname === "prefill" ? n0 : c, d, dtype: q.dtype, kept });
}

export function createCudaExecutor(): Executor {
  const ctx = openCuda();
  return {
    name: "cuda",
    async run(p: Program, fname, inputs: ReadonlyMap<string, Tensor>, opts: ExecOptions) {
      const q = inputs.get("q") ?? fail("ZV2101", ["q", [...inputs.keys()].join(", ")]);
      const dtype = q.dtype as CudaDType;
      const headDim = q.shape[2] ?? 0;
      const ks = ctx.kernels(p, dtype, headDim, tunedFor(ctx, p, fname, inputs, opts));
      const run = fname === "prefill" ? new CudaPrefill(ctx.dev, p, inputs, ks, opts) : new CudaDecode(ctx.dev, p, inputs, ks, opts);
      try {
        run.poison();
        run.enqueue();
        return run.download();
      } finally {
        run.free();
      }
    },
    dispose: () => ctx.dispose(),
  };
}
