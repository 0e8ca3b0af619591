// The command line: check, exec on random inputs (every output written), exec from a file, dump-after.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { main } from "../src/cli/main.ts";
import { readSafetensors, writeSafetensors } from "../src/io/safetensors.ts";
import { interpret } from "../src/interp/run.ts";
import { compileFile } from "../src/driver.ts";
import { maxDiff, prefillInputs } from "./support/programs.ts";

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(argv, (s) => void (out += s + "\n"), (s) => void (err += s + "\n"));
  return { code, out, err };
}
const tmp = mkdtempSync(join(tmpdir(), "zipvl-cli-"));

describe("zipvl CLI", () => {
  it("check accepts every shipped program", async () => {
    for (const f of ["dsl/zipvl.ts", "dsl/variants/dense.ts", "dsl/variants/fastv.ts", "dsl/variants/h2o.ts", "dsl/variants/snapkv.ts", "dsl/variants/topk-ratio.ts"]) {
      const r = await run("check", f);
      expect(r.code, r.err).toBe(0);
      expect(r.out).toMatch(/ok \(program/);
    }
  });

  it("exec on random q/k/v writes every output of dsl/zipvl.ts", async () => {
    const outFile = join(tmp, "out.safetensors");
    const r = await run("exec", "dsl/zipvl.ts", "--backend", "cpu", "--out", outFile, "--shape", "Hq=4,Hkv=2,n=96,d=32", "--seed", "3");
    expect(r.code, r.err).toBe(0);
    const { tensors } = readSafetensors(outFile);
    const count = tensors.get("count")!;
    const c = count.data[0]!;
    expect(count.dtype).toBe("i32");
    expect(c).toBeGreaterThanOrEqual(1);
    expect(tensors.get("scores")!.shape).toEqual([96]);
    expect(tensors.get("norm_scores")!.shape).toEqual([96]);
    expect(tensors.get("selected")!.shape).toEqual([c]);
    expect(tensors.get("o")!.shape).toEqual([4, 96, 32]);
    expect(tensors.get("k_cache")!.shape).toEqual([2, c, 32]);
    expect(tensors.get("v_cache")!.shape).toEqual([2, c, 32]);
    const sel = [...tensors.get("selected")!.data];
    expect(sel).toEqual([...sel].sort((a, b) => a - b));
    // The random inputs travel with the outputs, so the run can be reproduced.
    expect(tensors.get("input.q")!.shape).toEqual([4, 96, 32]);
  });

  it("exec --in reads tensors, applies --param and matches the interpreter", async () => {
    const inputs = prefillInputs({ Hq: 2, Hkv: 1, n: 40, d: 16, seed: 5 }, "bf16");
    const inFile = join(tmp, "in.safetensors");
    const outFile = join(tmp, "out2.safetensors");
    writeSafetensors(inFile, inputs);
    const r = await run("exec", "dsl/zipvl.ts", "--in", inFile, "--out", outFile, "--param", "tau=0.5", "--param", "recent=8");
    expect(r.code, r.err).toBe(0);
    const got = readSafetensors(outFile).tensors;
    const want = interpret(compileFile("dsl/zipvl.ts").input, "prefill", inputs, { params: { tau: 0.5, recent: 8 } });
    for (const [k, t] of want) expect(maxDiff(t, got.get(k)!), k).toBe(0);
    expect(got.get("o")!.dtype).toBe("bf16");
  });

  it("exec --entry decode runs decode attention over a cache", async () => {
    const outFile = join(tmp, "dec.safetensors");
    const r = await run("exec", "dsl/zipvl.ts", "--entry", "decode", "--shape", "Hq=8,Hkv=2,n=33,d=64", "--out", outFile);
    expect(r.code, r.err).toBe(0);
    expect(readSafetensors(outFile).tensors.get("o")!.shape).toEqual([8, 1, 64]);
  });

  it("--dump-after prints the IR after a pass", async () => {
    const r = await run("check", "dsl/zipvl.ts", "--dump-after", "fuse-probe-scoring");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/probe_score %0, %1, %4/);
    expect(r.out).toMatch(/select_topk/); // selection is not fused yet at that stage
  });

  it("passes lists the pipeline", async () => {
    const r = await run("passes");
    expect(r.out.split("\n")[0]).toMatch(/^fold-constants/);
  });
});
