import { fail } from "../../diagnostics/diagnostic.ts";
import type { CodegenTarget } from "../backend.ts";

export const wgslTarget: CodegenTarget = {
  name: "wgsl",
  generate: async () => fail("ZV4001", ["wgsl", "the wgsl code generator is not built yet"]),
};
