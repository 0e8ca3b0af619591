// Golden snapshots of the printed IR (front end output and after all passes) for every program in dsl/.
// Update deliberately with `npx vitest run test/golden.test.ts -u` and review the diff.
import { readdirSync } from "node:fs";
import { basename, join } from "node:path";
import { describe, expect, it } from "vitest";
import { compileFile } from "../src/driver.ts";
import { printProgram } from "../src/ir/print.ts";

const programs = ["dsl/zipvl.ts", ...readdirSync("dsl/variants").filter((f) => f.endsWith(".ts")).map((f) => join("dsl/variants", f))];

describe("golden IR", () => {
  it("covers the paper's method and every required variant", () => {
    const names = programs.map((p) => basename(p, ".ts"));
    for (const required of ["zipvl", "dense", "topk-ratio", "fastv", "h2o", "snapkv"]) expect(names).toContain(required);
  });
  for (const file of programs) {
    it(file, async () => {
      const { input, final } = compileFile(file);
      const name = basename(file, ".ts");
      await expect(printProgram(input)).toMatchFileSnapshot(`golden/${name}.input.ir`);
      await expect(printProgram(final)).toMatchFileSnapshot(`golden/${name}.final.ir`);
    });
  }
});
