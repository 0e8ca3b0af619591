// bench/gpu-model.sh (the LLaVA pipeline on the GPU host) and its summary table, without a GPU: the summary from
// parts' JSON of the shapes zipvl parity/run, model-gpu-check, llava-scale and llava_scale_hf.py write, and the
// script's argument check and budget (a step past the budget is recorded as skipped, not run).
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const put = (dir: string, file: string, v: unknown): void => {
  mkdirSync(join(dir, file, ".."), { recursive: true });
  writeFileSync(join(dir, file), typeof v === "string" ? v : JSON.stringify(v));
};
const pr = (mode: string, rel: number, greedy: number, kept: number[]) => ({
  mode, maxAbsLast: rel * 10, maxRelLast: rel, maxAbsAll: rel * 20, maxRelAll: rel * 2, argmaxMatch: greedy > 0, greedyMatch: greedy, greedyOurs: [], kept,
});

describe("bench/gpu-model.sh", () => {
  it("summarizes parity, the ops check, timed runs and the scale benchmark", () => {
    const out = mkdtempSync(join(tmpdir(), "zv-gm-"));
    put(out, "status.tsv", "a\tzipvl parity f32 on cuda, tau default\tok\t3s\nd\tllava-scale\tTIMEOUT\tafter 300s | limit\n");
    put(out, "parity-f32-cuda.json", { backend: "cuda", dtype: "f32", refGreedy: new Array(16).fill(1), promptMatch: true, dense: pr("dense", 1.5e-5, 16, []), zipvl: pr("zipvl", 0.8, 0, [60, 61]) });
    put(out, "parity-f32-cuda-tau1.json", { backend: "cuda", dtype: "f32", refGreedy: new Array(16).fill(1), promptMatch: true, dense: pr("dense", 1.5e-5, 16, []), zipvl: pr("zipvl", 1.5e-5, 16, [75, 75]) });
    put(out, "model-gpu-check/model-gpu-check.json", {
      seed: 7,
      f32: { ops: [{ op: "rmsNorm", err: 1e-6, tol: 2e-4, ok: true }, { op: "rope", err: 1e-3, tol: 8e-4, ok: false }], model: [{ mode: "dense", logitsErr: 2e-5, tokensCpu: [1, 2], tokensCuda: [1, 2] }] },
    });
    put(out, "run-bf16-zipvl.json", { backend: "cuda", mode: "zipvl", policy: "zipvl", answer: "a|b", promptTokens: 75, prefillMs: 4.25, decodeSteps: 31, decodeTokensPerSecond: 812.3, layers: [{ ratio: 0.8 }, { ratio: 0.6 }] });
    put(out, "llava-scale/llava-scale.json", { layers: 40, rows: [{ mode: "zipvl 36.7%", n: 2900, prefillMs: 812.4, decodeMsPerToken: 21.3, tokensPerS: 46.9, keptMean: 0.367 }] });
    put(out, "llava_scale_hf.json", { layers: 40, rows: [{ attn: "eager", n: 32000, error: "OOM" }, { attn: "sdpa", n: 2900, prefill_ms: 990, decode_ms_per_token: 25, tokens_per_s: 40 }] });
    const text = execFileSync(process.execPath, ["bench/gpu-model-summary.mjs", out], { encoding: "utf8" });
    expect(readFileSync(join(out, "summary.md"), "utf8")).toBe(text);
    expect(text).toContain("| d | llava-scale | TIMEOUT | after 300s / limit |");
    expect(text).toContain("| f32 ref | cuda f32 | dense | 1.50e-4 | 1.50e-5 | 3.00e-4 | 3.00e-5 | yes | 16/16 | same |");
    expect(text).toContain("| f32 ref | cuda f32 | zipvl | 8.00e+0 | 8.00e-1 | 1.60e+1 | 1.60e+0 | NO | 0/16 | 60 61 |");
    expect(text).toContain("| f32 ref | cuda f32 | zipvl tau 1 | 1.50e-4 | 1.50e-5 | 3.00e-4 | 3.00e-5 | yes | 16/16 | 75 75 |");
    expect(text).not.toMatch(/cuda f32 \| dense .*\n.*cuda f32 \| dense/); // the tau-1 file adds only its zipvl row
    expect(text).toContain("| f32 | 1 | 1 | rope 1.00e-3 / 8.00e-4 | dense 2.00e-5 same |");
    expect(text).toContain('| cuda bf16 | zipvl (zipvl) | 75 | 4.3 | 31 | 812.3 | 70.0% | "a/b" |');
    expect(text).toContain("| zipvl cuda | zipvl 36.7% | 2900 | 812 | 21.3 | 46.9 | 36.7% |");
    expect(text).toContain("| transformers | eager | 32000 | OOM | - | - | 100% |");
  });

  it("reads the scale rows from the logs when a timeout left no JSON", () => {
    const out = mkdtempSync(join(tmpdir(), "zv-gm-"));
    put(out, "llava-scale.txt", "device: H100\nwarm-up done\n" +
      "dense        n   2900  prefill     812 ms  decode   21.3 ms/token (46.9 tok/s)  kept 100.0%  mem 30.1 GiB\n" +
      "zipvl 36.7%  n  32000  prefill    4410 ms  decode   30.5 ms/token (32.8 tok/s)  kept 36.7%  mem 50.2 GiB\n");
    put(out, "llava_scale_hf.txt", "[eager] n   2900  prefill      990 ms  decode    25.0 ms/token (40.0 tok/s)  peak 40.1 GiB\n[eager] n  32000  OOM\n");
    const text = execFileSync(process.execPath, ["bench/gpu-model-summary.mjs", out], { encoding: "utf8" });
    expect(text).toContain("rows read from a log");
    expect(text).toContain("| zipvl cuda | dense | 2900 | 812 | 21.3 | 46.9 | 100.0% |");
    expect(text).toContain("| zipvl cuda | zipvl 36.7% | 32000 | 4410 | 30.5 | 32.8 | 36.7% |");
    expect(text).toContain("| transformers | eager | 2900 | 990 | 25.0 | 40.0 | 100% |");
    expect(text).toContain("| transformers | eager | 32000 | OOM | - | - | 100% |");
  });

  it("refuses unknown arguments and records steps past the budget as skipped", () => {
    const bad = spawnSync("bash", ["bench/gpu-model.sh", "--bogus"], { encoding: "utf8" });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/usage: bash bench\/gpu-model.sh/);
    const out = mkdtempSync(join(tmpdir(), "zv-gm-"));
    const work = mkdtempSync(join(tmpdir(), "zv-gmw-"));
    const r = spawnSync("bash", ["bench/gpu-model.sh", "--parts=c", "--budget=0"], { encoding: "utf8", env: { ...process.env, OUT: out, ZV_WORK: work } });
    expect(r.status, r.stderr).toBe(0);
    // With the bundles in .gpu the checkpoint step is cut by the budget; in a checkout without them the CLI is missing.
    const rows = readFileSync(join(out, "status.tsv"), "utf8").trim().split("\n");
    expect(rows.length).toBeGreaterThan(0);
    for (const row of rows) expect(row).toMatch(/\tSKIPPED\t(budget of 0s spent|no bundled CLI|no Node or no .*)$/);
    expect(rows.join("\n")).toMatch(/^c\t(write tiny checkpoint parity-f32|run)\tSKIPPED/m);
    expect(r.stdout).toContain("## Steps");
  }, 30_000);
});
