import { fail } from "../../diagnostics/diagnostic.ts";
import type { CodegenTarget } from "../backend.ts";

export const cudaTarget: CodegenTarget = {
  name: "cuda",
  generate: async () => fail("ZV4001", ["cuda", "the cuda code generator is not built yet"]),
};
