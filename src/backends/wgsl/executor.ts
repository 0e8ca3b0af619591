import { fail } from "../../diagnostics/diagnostic.ts";
import type { Executor } from "../backend.ts";

export function createWebGpuExecutor(): Executor {
  return fail("ZV4001", ["wgsl", "the wgsl executor is not built yet"]);
}
