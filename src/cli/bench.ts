// `zipvl bench`: zipvl and the PyTorch peers on the same shapes on one GPU, in one run; results.json, SVG charts,
// a markdown report with ratios, and (--docs) the generated floors section of docs/PERFORMANCE.md. `--report`
// redoes the report from a results.json (or a recorded session folder) without a GPU.
import { existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { benchPlan, runBench, type BenchGroup } from "../bench/run.ts";
import { fromRecordedSession, readResults, type BenchResults } from "../bench/results.ts";
import { markdownReport, updateDocs, writeReport } from "../bench/report.ts";
import { tuneFail } from "../tune/errors.ts";
import { parseShapes } from "../tune/shapes.ts";

export const BENCH_USAGE = `usage: zipvl bench [--out DIR] [--quick] [--peers] [--shapes n=8192,32768:kept=0.3:d=128:gqa=1:H=40]
                   [--warmup N] [--iters N] [--python PYTHON] [--docs docs/PERFORMANCE.md]
       zipvl bench --report RESULTS.json|SESSION_DIR [--out DIR] [--docs FILE]   (no GPU: report only)`;

type Out = (s: string) => void;

function options(argv: readonly string[]) {
  try {
    return parseArgs({
      args: [...argv], allowPositionals: false, strict: true,
      options: {
        out: { type: "string" }, quick: { type: "boolean", default: false }, peers: { type: "boolean", default: false },
        shapes: { type: "string" }, report: { type: "string" }, docs: { type: "string" }, warmup: { type: "string", default: "3" },
        iters: { type: "string" }, python: { type: "string", default: "python3" }, root: { type: "string", default: "." }, help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    return tuneFail("ZV8001", ["zipvl bench", `${(e as Error).message}\n${BENCH_USAGE}`]);
  }
}

/** --shapes as bench groups: one group per (d, gqa, H), each over the n and kept lists; the first is the full one. */
export function benchGroups(spec: string): BenchGroup[] {
  const shapes = parseShapes(`n=8192,32768:kept=0.3:d=128:gqa=1:H=40:dtype=bf16:${spec}`);
  if (shapes.some((s) => s.dtype !== "bf16")) tuneFail("ZV8001", ["--shapes", "the bench runs bf16 only"]);
  const groups = new Map<string, { d: number; Hq: number; Hkv: number; ns: Set<number>; kepts: Set<number> }>();
  for (const s of shapes) {
    const id = `${s.d} ${s.Hq} ${s.gqa}`;
    const g = groups.get(id) ?? { d: s.d, Hq: s.Hq, Hkv: s.Hq / s.gqa, ns: new Set<number>(), kepts: new Set<number>() };
    g.ns.add(s.n);
    g.kepts.add(s.kept);
    groups.set(id, g);
  }
  return [...groups.values()].map((g, i) => ({ d: g.d, Hq: g.Hq, Hkv: g.Hkv, ns: [...g.ns].sort((a, b) => a - b), kepts: [...g.kepts].sort((a, b) => a - b), full: i === 0 }));
}

export async function benchCommand(argv: readonly string[], out: Out): Promise<number> {
  const o = options(argv);
  if (o.help) return out(BENCH_USAGE), 0;
  const num = (name: string, v: string): number => {
    const x = Number(v);
    if (!Number.isInteger(x) || x < 0) tuneFail("ZV8001", [name, `expected a non-negative integer, got '${v}'`]);
    return x;
  };
  let res: BenchResults;
  let dir: string;
  if (o.report) {
    if (!existsSync(o.report)) tuneFail("ZV8004", [o.report, "no such file or folder"]);
    res = statSync(o.report).isDirectory() ? fromRecordedSession(o.report) : readResults(o.report);
    dir = o.out ?? (statSync(o.report).isDirectory() ? o.report : dirname(o.report));
  } else {
    const warmup = num("--warmup", o.warmup!);
    const iters = o.iters === undefined ? (o.quick ? 10 : 20) : Math.max(1, num("--iters", o.iters));
    const groups = o.shapes ? benchGroups(o.shapes) : benchPlan(o.quick);
    dir = o.out ?? "bench-out";
    res = await runBench({ quick: o.quick, peers: o.peers, groups, warmup, iters, root: o.root!, python: o.python!, log: (s) => process.stderr.write(s + "\n") });
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "results.json"), JSON.stringify(res, null, 1) + "\n");
  }
  const files = writeReport(res, dir);
  if (o.docs) updateDocs(o.docs, res);
  out(markdownReport(res));
  out(`wrote ${o.report ? "" : `${join(dir, "results.json")}, `}${files.join(", ")}${o.docs ? `, and the floors section of ${o.docs}` : ""}`);
  return 0;
}
