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
import { checkPrefill, checkDecode, inputsFor, type Case } from "./support/cuda-check.ts";
import { programText } from "./support/programs.ts";
import { randomTensor } from "../src/io/random.ts";
import type { ZipvlError } from "../src/diagnostics/diagnostic.ts";

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
    const shapes = fc.sample(
      fc.record({ Hkv: fc.constantFrom(1, 2), g: fc.constantFrom(1, 2, 4), n: fc.integer({ min: 1, max: 160 }), d: fc.constantFrom(64, 128), seed: fc.nat(1 << 20) }),
      { numRuns: 48 },
    );
    let i = 0;
    let checked = 0;
    for (const text of texts) {
      const p = compileSource("random.ts", text).final;
      for (let r = 0; r < 6; r++) {
        const s = shapes[i++]!;
        const c: Case = { Hq: s.Hkv * s.g, Hkv: s.Hkv, n: s.n, d: s.d, dtype: "f32", seed: s.seed, params: {} };
        const inputs = inputsFor(c);
        let got;
        try {
          got = await executor!.run(p, "prefill", inputs, {});
        } catch (e) {
          // A documented limitation of the backend is a coded error (tau over signed raw scores), never a wrong answer.
          expect((e as ZipvlError).code, String(e)).toBe("ZV4002");
          break;
        }
        checked++;
        expect(checkPrefill(p, c, inputs, got), `${text}\n${JSON.stringify(c)}`).toEqual([]);
      }
    }
    expect(checked).toBeGreaterThan(12);
  });

  it("decode over pruned caches", async () => {
    const p = compileFile("dsl/zipvl.ts").final;
    for (const [Hkv, g, len, d] of [[1, 1, 1, 64], [2, 4, 37, 128], [1, 8, 300, 64], [4, 2, 129, 128]] as const) {
      const c: Case = { Hq: Hkv * g, Hkv, n: len, d, dtype: "f32", seed: len, params: {} };
      const inputs = new Map([["q", randomTensor("f32", [c.Hq, 1, d], len)], ["k_cache", randomTensor("f32", [Hkv, len, d], len + 1)], ["v_cache", randomTensor("f32", [Hkv, len, d], len + 2)]]);
      expect(checkDecode(c, inputs, await executor!.run(p, "decode", inputs, {}))).toEqual([]);
    }
  });
});
