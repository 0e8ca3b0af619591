// zipvl bench's report side without a GPU: the recorded H200 session (bench/results/h200-2026-11-26) as results,
// markdown ratios, the per-kernel floors table, the SVG charts, the docs section, and the peers' command line.
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { main } from "../src/cli/main.ts";
import { benchGroups } from "../src/cli/bench.ts";
import { benchPlan, peersArgs } from "../src/bench/run.ts";
import { fromRecordedSession, peerRows, readResults } from "../src/bench/results.ts";
import { charts, DOCS_BEGIN, DOCS_END, floorsTable, markdownReport, updateDocs } from "../src/bench/report.ts";
import { floorOf, stepWork, WORK } from "../src/bench/floors.ts";
import { renderChart } from "../src/bench/svg.ts";

const SESSION = "bench/results/h200-2026-11-26";
const res = fromRecordedSession(SESSION);
const tmp = mkdtempSync(join(tmpdir(), "zipvl-bench-"));

describe("bench results", () => {
  it("a recorded session reads into one set of rows for zipvl and the peers", () => {
    expect(res.card).toMatchObject({ name: "NVIDIA H200", cc: "9.0", smCount: 132 });
    expect(res.floors!.matmulTflops).toBeCloseTo(777.2, 1);
    const step = res.rows.find((r) => r.kind === "step" && r.impl === "zipvl" && r.n === 32768)!;
    expect(step.ms).toBeCloseTo(2.933, 3);
    expect(res.rows.filter((r) => r.kind === "step" && r.impl === "ref_cudnn")).toHaveLength(3);
    expect(res.rows.filter((r) => r.kind === "decode" && r.impl === "zipvl").map((r) => Math.round(r.kept * r.n))).toEqual([864, 2880, 2458, 8192, 9830, 32768]);
  });

  it("results.json round-trips and a malformed file gets ZV8004 naming the field", () => {
    const f = join(tmp, "results.json");
    writeFileSync(f, JSON.stringify(res));
    expect(readResults(f).rows).toHaveLength(res.rows.length);
    writeFileSync(f, JSON.stringify({ ...res, rows: [{ ...res.rows[0], d: "128" }] }));
    expect(() => readResults(f)).toThrow(/ZV8004: bench results .* rows\[0\]\.d must be a number/);
    writeFileSync(f, "[");
    expect(() => readResults(f)).toThrow(/ZV8004/);
  });

  it("peers' GQA rows keep their KV heads; errored rows are dropped", () => {
    const rows = peerRows({
      device: "x", torch: "t", cuda: "c", cudnn: 1, shapes: { H: 40, Hkv: 5, d: 128 }, floors: {},
      results: [{ kind: "dense_prefill", impl: "sdpa_cudnn", n: 8192, kept: 1, ms: 1 }, { kind: "ref_step", impl: "flash", n: 8192, kept: 0.3, ms: null, extra: { error: true } }],
    });
    expect(rows).toEqual([{ kind: "dense_prefill", impl: "sdpa_cudnn", n: 8192, kept: 1, d: 128, Hq: 40, Hkv: 5, ms: 1 }]);
  });
});

describe("the report", () => {
  it("tables carry the ratios of the performance notes", () => {
    const md = markdownReport(res);
    expect(md).toMatch(/\| 32768 \| 30% \| 2\.933 \| 3\.102 \| 6\.407 \| 4\.994 \| 2\.18x \| 1\.70x \|/);
    expect(md).toMatch(/\| 2880 \| 0\.333 \| 0\.389 \| 0\.219 \| 0\.380 \| 255 \| 1\.17x \| 0\.66x \| 1\.14x \|/);
    expect(md).toMatch(/\| 32768 \| 9830 \| 0\.0612 \| 3\.29 \| 0\.0537 \| cudnn \| 0\.88x \|/);
  });

  it("floors: FLOPs over the measured matmul rate, bytes over the measured copy bandwidth", () => {
    const s = { n: 32768, kept: 0.3, d: 128, Hq: 40, Hkv: 40 };
    const f = { copyTbps: 4.19, matmulTflops: 777 };
    expect(WORK.sparse_attn(s).flops).toBeCloseTo(9.9e11, -10); // 4 H d c(c+1)/2, c = 9831
    expect(floorOf(WORK.sparse_attn(s), f)).toMatchObject({ bound: "compute" });
    expect(floorOf(WORK.sparse_attn(s), f).ms).toBeCloseTo(1.274, 2);
    expect(floorOf(WORK.decode(s), f)).toMatchObject({ bound: "memory" });
    expect(floorOf(WORK.decode(s), f).ms).toBeCloseTo(0.048, 3); // 201 MB of K + V
    expect(stepWork(s).flops).toBeGreaterThan(WORK.sparse_attn(s).flops);
    const t = floorsTable(res);
    expect(t).toMatch(/n = 32768, 30% kept/);
    expect(t).toMatch(/\| whole step \| .* \| 1\.434 ms \(sum of the kernels' floors\) \| 2\.933 ms \| 49% \|/);
    expect(t).toMatch(/decode, cache 32768 .* none worth it/);
    expect(t).toMatch(/\| decode, cache 32768 \| .* \| 0\.170 ms \| 94% \|/);
    expect(t).toMatch(/\| probe \| .* \| - \| - \| cp\.async/); // no per-kernel time in the recorded session
  });

  it("charts are SVG with axes, labels and a legend; empty series say so", () => {
    const c = charts(res);
    expect(Object.keys(c)).toEqual(["time-vs-n.svg", "tflops-vs-n.svg", "speedup-vs-kept.svg"]);
    for (const svg of Object.values(c)) {
      expect(svg.startsWith("<svg xmlns=\"http://www.w3.org/2000/svg\"")).toBe(true);
      expect(svg.trimEnd().endsWith("</svg>")).toBe(true);
      expect(svg).not.toMatch(/NaN|Infinity|undefined/);
    }
    expect(c["time-vs-n.svg"]).toMatch(/n \(tokens\) \(log\)/);
    expect(c["time-vs-n.svg"]).toMatch(/>SDPA cuDNN</);
    expect(c["time-vs-n.svg"]!.match(/<polyline/g)!.length).toBe(7);
    expect(c["speedup-vs-kept.svg"]).toMatch(/n=32768 vs paper cuDNN/);
    const empty = renderChart({ title: "t", x: { label: "x" }, y: { label: "y" }, series: [{ name: "none", points: [] }] });
    expect(empty).toMatch(/none \(no data\)/);
  });

  it("the docs section is replaced in place (idempotent)", () => {
    const doc = join(tmp, "PERF.md");
    writeFileSync(doc, "# notes\n\nhand-written\n");
    updateDocs(doc, res);
    const once = readFileSync(doc, "utf8");
    updateDocs(doc, res);
    expect(readFileSync(doc, "utf8")).toBe(once);
    expect(once.startsWith("# notes\n\nhand-written\n")).toBe(true);
    expect(once.split(DOCS_BEGIN)).toHaveLength(2);
    expect(once).toContain(DOCS_END);
  });
});

describe("the bench plan and the peers' command line", () => {
  it("the standard plan covers n up to 65536, kept 10-70%, head dims 64 and 128, GQA 1 and 8, 40 heads", () => {
    const full = benchPlan(false);
    expect(full[0]).toMatchObject({ d: 128, Hq: 40, Hkv: 40, ns: [2880, 8192, 32768, 65536], kepts: [0.1, 0.3, 0.5, 0.7], full: true });
    expect(full.map((g) => [g.d, g.Hq / g.Hkv])).toEqual([[128, 1], [64, 1], [128, 8]]);
    expect(benchPlan(true)).toHaveLength(1);
    const a = peersArgs(full[2]!, { quick: false, iters: 20, warmup: 3 });
    expect(a.slice(0, 9)).toEqual(["--json", "--ns", "8192,32768", "--d", "128", "--heads", "40", "--kv-heads", "5"]);
    expect(a).toContain("--no-flex");
    expect(peersArgs(full[0]!, { quick: false, iters: 20, warmup: 3 })).toEqual(expect.arrayContaining(["--sweep", "floors,dense,ref,decode"]));
    expect(benchGroups("n=2880:gqa=1,8:d=64")).toEqual([
      { d: 64, Hq: 40, Hkv: 40, ns: [2880], kepts: [0.3], full: true },
      { d: 64, Hq: 40, Hkv: 5, ns: [2880], kepts: [0.3], full: false },
    ]);
    expect(() => benchGroups("dtype=f32")).toThrow(/ZV8001/);
  });

  it("zipvl bench --report writes the report and charts from a recorded session without a GPU", async () => {
    let out = "";
    let err = "";
    const dir = join(tmp, "rep");
    const code = await main(["bench", "--report", SESSION, "--out", dir], (s) => void (out += s + "\n"), (s) => void (err += s + "\n"));
    expect(code, err).toBe(0);
    for (const f of ["report.md", "time-vs-n.svg", "tflops-vs-n.svg", "speedup-vs-kept.svg"]) expect(existsSync(join(dir, f))).toBe(true);
    expect(out).toMatch(/# zipvl bench: NVIDIA H200/);
    const bad = await main(["bench", "--report", join(tmp, "missing.json")], () => {}, (s) => void (err = s));
    expect(bad).toBe(1);
    expect(err).toMatch(/error ZV8004: bench results .*missing\.json are not valid: no such file/);
  });
});

