import { fail } from "../../diagnostics/diagnostic.ts";
import type { Executor } from "../backend.ts";

export function createCudaExecutor(): Executor {
  return fail("ZV4001", ["cuda", "the cuda executor is not built yet"]);
}
