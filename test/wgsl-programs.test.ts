// The WGSL backend on whole programs: golden snapshots of the emitted WGSL for every program in dsl/, and the
// webgpu executor against the float64 interpreter on random programs (real Dawn on a software Vulkan driver here;
// skipped with a notice where no adapter exists).
import { readdirSync } from "node:fs";
import { basename, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { compileFile, compileSource } from "../src/driver.ts";
import { renderProgramWgsl } from "../src/backends/wgsl/target.ts";
import type { Executor } from "../src/backends/backend.ts";
import { programText } from "./support/programs.ts";
import { checkDecodeCases, checkProgramCase, DECODE_SHAPES, programShape } from "./support/wgsl-props.ts";

const programs = ["dsl/zipvl.ts", ...readdirSync("dsl/variants").filter((f) => f.endsWith(".ts")).map((f) => join("dsl/variants", f))];

describe("golden WGSL", () => {
  for (const file of programs) {
    it(file, async () => {
      const p = compileFile(file).final;
      for (const s of renderProgramWgsl(p, 128)) await expect(s.code).toMatchFileSnapshot(`golden/wgsl/${basename(file, ".ts")}.${s.stage}.wgsl`);
    });
  }
});

let executor: Executor | undefined;
let why = "";
try {
  const { createWebGpuExecutor } = await import("../src/backends/wgsl/executor.ts");
  executor = await createWebGpuExecutor();
} catch (e) {
  why = (e as Error).message;
  console.warn(`NOTICE: no WebGPU adapter (${why.split("\n")[0]}); webgpu executor tests are skipped. Run .ci/install-vulkan.sh.`);
}
afterAll(() => executor?.dispose?.());

describe.skipIf(!executor)("webgpu executor vs interpreter", () => {
  it("random programs and shapes (prefill)", async () => {
    const texts = fc.sample(programText.filter((t) => t.includes('decode({ modifier: "s" })')), { numRuns: 8 });
    const shapes = fc.sample(programShape, { numRuns: 48 });
    let i = 0;
    let checked = 0;
    for (const text of texts) {
      const p = compileSource("random.ts", text).final;
      for (let r = 0; r < 6; r++) {
        const s = shapes[i++]!;
        const outcome = await checkProgramCase(executor!, p, s).catch((e: unknown) => {
          throw new Error(`${text}\n${String(e)}`);
        });
        if (outcome === "limitation") break; // the documented coded refusal (ZV4002), never a wrong answer
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(12);
  });

  it("decode over pruned caches", async () => {
    const p = compileFile("dsl/zipvl.ts").final;
    await checkDecodeCases(executor!, p, DECODE_SHAPES);
  });
});
