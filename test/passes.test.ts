// Every pass preserves the interpreter's results, on random programs and random inputs.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { compileSource } from "../src/driver.ts";
import { interpret } from "../src/interp/run.ts";
import { runPasses, PASSES } from "../src/passes/index.ts";
import type { Program } from "../src/ir/ir.ts";
import { decodeInputs, maxDiff, prefillInputs, programText, smallShape } from "./support/programs.ts";

describe("passes", () => {
  it("the pipeline is the documented ordered list", () => {
    expect(PASSES.map((p) => p.name)).toEqual(["fold-constants", "detect-causal", "fuse-probe-scoring", "fuse-selection", "fuse-sparse-attention", "eliminate-dead-code"]);
  });

  it("every stage gives the same prefill and decode outputs as the input IR", () => {
    fc.assert(
      fc.property(programText, smallShape, fc.integer({ min: 0, max: 3 }), (text, shape, layer) => {
        const { input } = compileSource("random.ts", text);
        const stages: [string, Program][] = [];
        runPasses(input, (name, p) => stages.push([name, p]));
        const inputs = prefillInputs(shape);
        const ref = interpret(input, "prefill", inputs, { layer });
        const dref = interpret(input, "decode", decodeInputs(shape), { layer });
        for (const [name, p] of stages) {
          const got = interpret(p, "prefill", inputs, { layer });
          expect([...got.keys()].sort(), name).toEqual([...ref.keys()].sort());
          for (const [k, t] of ref) expect(maxDiff(t, got.get(k)!), `${name}: ${k}`).toBeLessThan(1e-5);
          expect(maxDiff(dref.get("o")!, interpret(p, "decode", decodeInputs(shape), { layer }).get("o")!)).toBe(0);
        }
      }),
      { numRuns: 80 },
    );
  });

  it("fuses the paper's program into three prefill kernels", () => {
    const { final } = compileSource("zipvl.ts", `import { normalize, probes, program, scores, select } from "../src/dsl/index.ts";
export default program("z", { probes: probes.recent(4), scores: scores(), normalize: normalize(), select: select.tau(0.9) });`);
    const ops = final.funcs[0]!.body.map((n) => n.op).filter((op) => !["input", "get", "probe_rows", "take_selected"].includes(op));
    expect(ops).toEqual(["probe_score", "select", "sparse_attn_compact"]);
    const fused = final.funcs[0]!.body.find((n) => n.op === "sparse_attn_compact")!;
    expect(fused.attrs.causal).toBe(true);
  });
});
