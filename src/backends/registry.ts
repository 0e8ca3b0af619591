// Name -> backend, loaded lazily so that `zipvl check` never touches a GPU library.
import { fail } from "../diagnostics/diagnostic.ts";
import { interpret } from "../interp/run.ts";
import type { CodegenTarget, Executor } from "./backend.ts";

export const TARGETS = ["cuda", "wgsl"] as const;
export const EXECUTORS = ["cpu", "cuda", "webgpu"] as const;

const cpu: Executor = {
  name: "cpu",
  run: async (p, fname, inputs, opts) => interpret(p, fname, inputs, opts),
};

export async function getTarget(name: string): Promise<CodegenTarget> {
  switch (name) {
    case "cuda":
      return (await import("./cuda/target.ts")).cudaTarget;
    case "wgsl":
      return (await import("./wgsl/target.ts")).wgslTarget;
    default:
      return fail("ZV5001", [`unknown target '${name}'; targets are ${TARGETS.join(", ")}, all`]);
  }
}

export async function getExecutor(name: string): Promise<Executor> {
  switch (name) {
    case "cpu":
      return cpu;
    case "cuda":
      return (await import("./cuda/executor.ts")).createCudaExecutor();
    case "webgpu":
      return await (await import("./wgsl/executor.ts")).createWebGpuExecutor();
    default:
      return fail("ZV5001", [`unknown backend '${name}'; backends are ${EXECUTORS.join(", ")}`]);
  }
}
