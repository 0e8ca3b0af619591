// IR: print/parse round trip and the verifier, on random programs before and after the passes.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { compileSource } from "../src/driver.ts";
import { parseProgram } from "../src/ir/parse.ts";
import { printProgram } from "../src/ir/print.ts";
import { verifyProgram } from "../src/ir/verify.ts";
import { ZipvlError } from "../src/diagnostics/diagnostic.ts";
import { node, func, program } from "../src/ir/ir.ts";
import { programText } from "./support/programs.ts";

describe("IR text form", () => {
  it("round-trips random programs exactly, before and after the passes", () => {
    fc.assert(
      fc.property(programText, (text) => {
        const { input, final } = compileSource("random.ts", text);
        for (const p of [input, final]) {
          const printed = printProgram(p);
          const back = parseProgram(printed);
          expect(printProgram(back)).toBe(printed);
          verifyProgram(back);
        }
      }),
      { numRuns: 60 },
    );
  });

  it("nodes are immutable", () => {
    const { final } = compileSource("random.ts", fc.sample(programText, { numRuns: 1, seed: 1 })[0]!);
    const n = final.funcs[0]!.body[0]!;
    expect(Object.isFrozen(n) && Object.isFrozen(n.args) && Object.isFrozen(n.attrs) && Object.isFrozen(final.funcs)).toBe(true);
  });
});

describe("verifier", () => {
  const { input } = compileSource("random.ts", fc.sample(programText, { numRuns: 1, seed: 7 })[0]!);
  const text = printProgram(input);
  const rejects = (mutated: string, pattern: RegExp): void => {
    let err: unknown;
    try {
      verifyProgram(parseProgram(mutated));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ZipvlError);
    expect((err as ZipvlError).code).toBe("ZV1302");
    expect((err as ZipvlError).message).toMatch(pattern);
  };

  it("accepts what the front end builds", () => {
    expect(() => verifyProgram(parseProgram(text))).not.toThrow();
  });
  it("rejects a wrong result type", () => rejects(text.replace(": f32[Hq,m,n]", ": f32[Hq,n]"), /should be f32\[Hq,m,n\]/));
  it("rejects a use before definition", () => rejects(text.replace("probe_attn %0, %1, %4", "probe_attn %0, %1, %99"), /used before it is defined/));
  it("rejects an unknown op", () => rejects(text.replace("= col_mass", "= col_sum"), /unknown op/));
  it("rejects an unknown attribute", () => rejects(text.replace('accumulate="', 'acumulate="'), /unknown attribute 'acumulate'/));
  it("rejects a bad enum value", () => rejects(text.replace(/activation="\w+"/, 'activation="relu"'), /must be one of softmax, sigmoid, none/));
  it("rejects an ill-typed expression", () => rejects(text.replace(/mask=`[^`]*`/, "mask=`q_pos + k_pos`"), /boolean expression/));
  it("rejects a missing attribute", () => rejects(text.replace(/ normalizer="\w+"/, ""), /missing attribute 'normalizer'/));
  it("rejects an expression naming an unknown value", () => rejects(text.replace(/modifier=`[^`]*`/, "modifier=`s * qq`"), /unknown name 'qq'/));
  it("rejects duplicate definitions and outputs", () => {
    const f = input.funcs[1]!;
    const dup = func(f.name, [...f.body, node(f.body[0]!.id, f.body[0]!.op, [], { ...f.body[0]!.attrs }, f.body[0]!.type)], f.outputs);
    expect(() => verifyProgram(program(input.name, input.params, [input.funcs[0]!, dup]))).toThrow(/defined twice/);
    const twice = func(f.name, f.body, [...f.outputs, ...f.outputs]);
    expect(() => verifyProgram(program(input.name, input.params, [input.funcs[0]!, twice]))).toThrow(/returned twice/);
  });
  it("rejects returning a tuple", () => {
    const f = input.funcs[0]!;
    const tupleNode = f.body.find((x) => x.type.t === "tuple")!;
    const bad = func(f.name, f.body, [...f.outputs, { name: "t", id: tupleNode.id }]);
    expect(() => verifyProgram(program(input.name, input.params, [bad, input.funcs[1]!]))).toThrow(/is a tuple/);
  });
});
