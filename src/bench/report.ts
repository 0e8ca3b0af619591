// results.json -> the markdown tables (with ratios), the per-kernel floors table, and three SVG charts.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { causalFlops, floorOf, NEXT_STEPS, stepWork, WORK, type ShapeW, type Work } from "./floors.ts";
import type { BenchResults, Row } from "./results.ts";
import { renderChart, type Series } from "./svg.ts";

const near = (a: number, b: number): boolean => Math.abs(a - b) < 0.006;
const group = (r: Pick<Row, "d" | "Hq" | "Hkv">): string => `d=${r.d}, Hq=${r.Hq}, Hkv=${r.Hkv}`;
const ms = (v: number | null | undefined): string => (v === null || v === undefined ? "-" : v < 0.1 ? v.toFixed(4) : v.toFixed(3));
const ratio = (num: number | null | undefined, den: number | null | undefined): string => (num && den ? `${(num / den).toFixed(2)}x` : "-");
const uniq = <T>(xs: T[]): T[] => [...new Set(xs)];

function find(rows: readonly Row[], kind: Row["kind"], impl: string, g: string, n: number, kept?: number): Row | undefined {
  return rows.find((r) => r.kind === kind && r.impl === impl && group(r) === g && r.n === n && (kept === undefined || near(r.kept, kept)) && r.ms !== null);
}
/** The shape group most rows belong to (H = 40, d = 128 in the standard run). */
function mainGroup(rows: readonly Row[]): string {
  const counts = new Map<string, number>();
  for (const r of rows) counts.set(group(r), (counts.get(group(r)) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? "";
}
const shapeOf = (r: Row): ShapeW => ({ n: r.n, kept: r.kept, d: r.d, Hq: r.Hq, Hkv: r.Hkv });

export function markdownReport(res: BenchResults): string {
  const rows = res.rows;
  const o: string[] = [];
  const f = res.floors;
  o.push(`# zipvl bench: ${res.card.name} (cc ${res.card.cc}, driver ${res.card.driver})`, "");
  o.push(`Source: ${res.source}; ${res.created}${res.quick ? "; quick run" : ""}.${res.peers ? ` Peers: torch ${res.peers.torch}, CUDA ${res.peers.cuda}, cuDNN ${res.peers.cudnn ?? "-"}.` : ""}`);
  if (res.tuning) o.push(`zipvl configs: tuning records ${res.tuning}.`);
  if (f) o.push(`Floors measured in the same run: copy ${f.copyTbps.toFixed(2)} TB/s, bf16 matmul ${f.matmulTflops.toFixed(0)} TFLOP/s.`);
  o.push("", "All times are medians in milliseconds (CUDA events); ratios are peer time / zipvl time (> 1: zipvl is faster).", "");
  for (const g of uniq(rows.map(group))) {
    const gr = rows.filter((r) => group(r) === g);
    const ns = uniq(gr.filter((r) => r.kind === "dense_prefill").map((r) => r.n)).sort((a, b) => a - b);
    if (ns.length) {
      o.push(`## Dense causal prefill (${g})`, "", "| n | zipvl | SDPA flash | SDPA cuDNN | FlexAttention | zipvl TFLOP/s | vs flash | vs cuDNN | vs Flex |", "|---|---|---|---|---|---|---|---|---|");
      for (const n of ns) {
        const z = find(gr, "dense_prefill", "zipvl", g, n);
        const fl = find(gr, "dense_prefill", "sdpa_flash", g, n);
        const cu = find(gr, "dense_prefill", "sdpa_cudnn", g, n);
        const fx = find(gr, "dense_prefill", "flex", g, n);
        const tf = z?.ms ? (causalFlops(z.Hq, z.d, n) / (z.ms * 1e9)).toFixed(0) : "-";
        o.push(`| ${n} | ${ms(z?.ms)} | ${ms(fl?.ms)} | ${ms(cu?.ms)} | ${ms(fx?.ms)} | ${tf} | ${ratio(fl?.ms, z?.ms)} | ${ratio(cu?.ms, z?.ms)} | ${ratio(fx?.ms, z?.ms)} |`);
      }
      o.push("");
    }
    const steps = uniq(gr.filter((r) => r.kind === "step").map((r) => `${r.n} ${r.kept.toFixed(3)}`)).map((s) => s.split(" ").map(Number) as [number, number]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    if (steps.length) {
      o.push(`## ZipVL prefill step vs the paper's method (${g})`, "", "| n | kept | zipvl | zipvl (graph) | paper, FA2 | paper, cuDNN | vs FA2 | vs cuDNN |", "|---|---|---|---|---|---|---|---|");
      for (const [n, kept] of steps) {
        const z = find(gr, "step", "zipvl", g, n, kept);
        const zg = find(gr, "step", "zipvl_graph", g, n, kept);
        const rf = find(gr, "step", "ref_flash", g, n, kept);
        const rc = find(gr, "step", "ref_cudnn", g, n, kept);
        if (!z && !rf && !rc) continue;
        o.push(`| ${n} | ${(100 * kept).toFixed(0)}% | ${ms(z?.ms)} | ${ms(zg?.ms)} | ${ms(rf?.ms)} | ${ms(rc?.ms)} | ${ratio(rf?.ms, z?.ms)} | ${ratio(rc?.ms, z?.ms)} |`);
      }
      o.push("");
    }
    const dec = uniq(gr.filter((r) => r.kind === "decode").map((r) => `${r.n} ${r.kept.toFixed(4)}`)).map((s) => s.split(" ").map(Number) as [number, number]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    if (dec.length) {
      o.push(`## Decode over the pruned cache (${g})`, "", "| n | cache | zipvl | zipvl TB/s | best SDPA | SDPA backend | vs SDPA |", "|---|---|---|---|---|---|---|");
      for (const [n, kept] of dec) {
        const z = find(gr, "decode", "zipvl", g, n, kept);
        const peers = gr.filter((r) => r.kind === "decode" && r.impl.startsWith("sdpa_") && r.n === n && near(r.kept, kept) && r.ms !== null).sort((a, b) => a.ms! - b.ms!);
        const best = peers[0];
        const L = Math.round(kept * n);
        const tb = z?.ms ? (WORK.decode(shapeOf(z)).bytes / (z.ms * 1e9)).toFixed(2) : "-";
        o.push(`| ${n} | ${L} | ${ms(z?.ms)} | ${tb} | ${ms(best?.ms)} | ${best?.impl.slice(5) ?? "-"} | ${ratio(best?.ms, z?.ms)} |`);
      }
      o.push("");
    }
  }
  o.push(floorsTable(res));
  return o.join("\n") + "\n";
}

/** The per-kernel floors table at the main group's largest n with a 30% kept step (the docs' section). */
export function floorsTable(res: BenchResults): string {
  const f = res.floors;
  const g = mainGroup(res.rows);
  const o: string[] = [];
  if (!f) return "## Floors\n\nNo floors in this run (the peers measure them: run with --peers).\n";
  const stepNs = res.rows.filter((r) => group(r) === g && r.kind === "step" && r.impl === "zipvl" && near(r.kept, 0.3) && r.ms !== null).map((r) => r.n);
  const n = stepNs.length ? Math.max(...stepNs) : Math.max(0, ...res.rows.filter((r) => group(r) === g).map((r) => r.n));
  const [d, Hq, Hkv] = (/d=(\d+), Hq=(\d+), Hkv=(\d+)/.exec(g) ?? []).slice(1).map(Number) as [number, number, number];
  const s: ShapeW = { n, kept: 0.3, d, Hq, Hkv };
  o.push(`## Per-kernel floors (${res.card.name}, ${g}, n = ${n}, 30% kept; generated by \`zipvl bench\`)`, "");
  o.push(`Floor = max(FLOPs / ${f.matmulTflops.toFixed(0)} TFLOP/s, bytes / ${f.copyTbps.toFixed(2)} TB/s), both measured on this card in this run.`, "");
  o.push("| kernel | FLOPs | bytes | floor | measured | share of floor | next step (predicted gain) |", "|---|---|---|---|---|---|---|");
  const line = (name: string, w: Work, measured: number | null | undefined, next: string, floorMs?: number): void => {
    const fl = floorOf(w, f);
    const floor = floorMs ?? fl.ms;
    const how = floorMs === undefined ? fl.bound : "sum of the kernels' floors";
    const share = measured ? floor / measured : null;
    // Within 10% of the floor nothing is worth doing.
    const todo = share !== null && share >= 0.9 ? "none worth it (within 10% of the floor)" : next;
    o.push(`| ${name} | ${w.flops ? w.flops.toExponential(2) : "-"} | ${(w.bytes / 1e6).toFixed(1)} MB | ${ms(floor)} ms (${how}) | ${measured ? `${ms(measured)} ms` : "-"} | ${share !== null ? `${(100 * share).toFixed(0)}%` : "-"} | ${todo} |`);
  };
  const kernel = (impl: string): Row | undefined => res.rows.find((r) => r.kind === "kernel" && r.impl === impl && group(r) === g && r.n === n && near(r.kept, 0.3) && r.ms !== null);
  for (const k of ["probe", "select", "sparse_attn"] as const) line(k, WORK[k](s), kernel(k)?.ms, NEXT_STEPS[k]!);
  const stepFloor = (["probe", "select", "sparse_attn"] as const).reduce((a, k) => a + floorOf(WORK[k](s), f).ms, 0);
  line("whole step", stepWork(s), find(res.rows, "step", "zipvl", g, n, 0.3)?.ms, NEXT_STEPS.step!, stepFloor);
  line("dense (select all)", WORK.dense({ ...s, kept: 1 }), find(res.rows, "dense_prefill", "zipvl", g, n)?.ms, NEXT_STEPS.dense!);
  const dec = res.rows.filter((r) => r.kind === "decode" && r.impl === "zipvl" && group(r) === g && r.n === n && r.ms !== null).sort((a, b) => a.kept - b.kept);
  for (const r of dec) line(`decode, cache ${Math.round(r.kept * r.n)}`, WORK.decode(shapeOf(r)), r.ms, NEXT_STEPS.decode!);
  return o.join("\n") + "\n";
}

/** time vs n, TFLOP/s vs n (dense), speedup vs kept ratio: file name -> SVG text. */
export function charts(res: BenchResults): Record<string, string> {
  const g = mainGroup(res.rows);
  const rows = res.rows.filter((r) => group(r) === g && r.ms !== null);
  const series = (name: string, kind: Row["kind"], impl: string, y: (r: Row) => number, kept?: number): Series => ({
    name, points: rows.filter((r) => r.kind === kind && r.impl === impl && (kept === undefined || near(r.kept, kept))).map((r) => [r.n, y(r)] as const),
  });
  const t = (r: Row): number => r.ms!;
  const tf = (r: Row): number => causalFlops(r.Hq, r.d, r.n) / (r.ms! * 1e9);
  const dense = [["zipvl dense", "zipvl"], ["SDPA flash", "sdpa_flash"], ["SDPA cuDNN", "sdpa_cudnn"], ["FlexAttention", "flex"]] as const;
  const out: Record<string, string> = {};
  out["time-vs-n.svg"] = renderChart({
    title: `Prefill time vs n (${res.card.name}, ${g})`, x: { label: "n (tokens)", log: true }, y: { label: "ms", log: true },
    series: [...dense.map(([nm, impl]) => series(nm, "dense_prefill", impl, t)), series("zipvl step 30%", "step", "zipvl", t, 0.3), series("paper FA2 30%", "step", "ref_flash", t, 0.3), series("paper cuDNN 30%", "step", "ref_cudnn", t, 0.3)],
  });
  out["tflops-vs-n.svg"] = renderChart({
    title: `Dense causal prefill TFLOP/s vs n (${res.card.name})`, x: { label: "n (tokens)", log: true }, y: { label: "TFLOP/s", zero: true },
    series: dense.map(([nm, impl]) => series(nm, "dense_prefill", impl, tf)),
  });
  const sp: Series[] = [];
  for (const n of uniq(rows.filter((r) => r.kind === "step" && r.impl === "zipvl").map((r) => r.n)).sort((a, b) => a - b)) {
    for (const [nm, impl] of [["FA2", "ref_flash"], ["cuDNN", "ref_cudnn"]] as const) {
      const points = rows.filter((r) => r.kind === "step" && r.impl === "zipvl" && r.n === n).flatMap((z) => {
        const p = find(rows, "step", impl, g, n, z.kept);
        return p ? [[z.kept, p.ms! / z.ms!] as const] : [];
      });
      if (points.length) sp.push({ name: `n=${n} vs paper ${nm}`, points });
    }
  }
  out["speedup-vs-kept.svg"] = renderChart({ title: `ZipVL step speedup vs kept ratio (${res.card.name})`, x: { label: "kept fraction" }, y: { label: "paper's time / zipvl time", zero: true }, series: sp });
  return out;
}

/** Writes report.md and the charts next to results.json. */
export function writeReport(res: BenchResults, dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  const files = { "report.md": markdownReport(res), ...charts(res) };
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return Object.keys(files).map((f) => join(dir, f));
}

export const DOCS_BEGIN = "<!-- zipvl bench: begin (generated by `zipvl bench --docs`; edit src/bench/report.ts instead) -->";
export const DOCS_END = "<!-- zipvl bench: end -->";
/** Replaces (or appends) the generated floors section of docs/PERFORMANCE.md. */
export function updateDocs(path: string, res: BenchResults): void {
  const text = existsSync(path) ? readFileSync(path, "utf8") : "";
  const section = `${DOCS_BEGIN}\n${floorsTable(res)}\nSource: ${res.source} (${res.created}).\n${DOCS_END}`;
  const a = text.indexOf(DOCS_BEGIN);
  const b = text.indexOf(DOCS_END);
  const next = a >= 0 && b > a ? text.slice(0, a) + section + text.slice(b + DOCS_END.length) : `${text.trimEnd()}\n\n${section}\n`;
  writeFileSync(path, next);
}
