// The GPU-host runner (bundled by bench/bundle.mjs into .gpu/gpu-check.mjs; no node_modules needed there):
// differential properties of the cuda backend against the float64 interpreter with fresh random inputs, cold and
// warm compile times, NVRTC, and the first benchmark table. Usage: node gpu-check.mjs OUT_DIR [--quick]
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { parseProgram } from "../src/ir/parse.ts";
import { verifyProgram } from "../src/ir/verify.ts";
import type { Program } from "../src/ir/ir.ts";
import { openCuda } from "../src/backends/cuda/executor.ts";
import { CudaDecode, CudaPrefill } from "../src/backends/cuda/pipeline.ts";
import { randomTensor } from "../src/io/random.ts";
import { makeTensor, type Tensor } from "../src/io/tensor.ts";
import { checkDecode, checkPrefill, inputsFor, type Case } from "../test/support/cuda-check.ts";
import { knobs } from "../src/knobs.ts";
import { cpus } from "node:os";
import { precompile } from "../src/backends/cuda/compile.ts";
import { renderKernels, type Stage } from "../src/backends/cuda/render.ts";
import { defaultConfig } from "../src/backends/cuda/schedule.ts";

const STAGES: readonly Stage[] = ["probe", "select", "sparse_attn", "decode"];

const outDir = process.argv[2] ?? "gpu-out";
const quick = process.argv.includes("--quick");
const benchOnly = process.argv.includes("--bench-only");
// --decode-only: only the decode cases, 40 of them, caches up to 16k, each run with the default config, with the
// tensor-core GQA pass (decode config mma 1) and with the separate combine launch (fuse 0).
const decodeOnly = process.argv.includes("--decode-only");
const noBench = process.argv.includes("--no-bench");
const maxCases = Number(process.argv.find((a) => a.startsWith("--cases="))?.slice(8) ?? "100000");
mkdirSync(outDir, { recursive: true });
const report: Record<string, unknown> = {};
const log = (s: string): void => void process.stdout.write(s + "\n");
const load = (name: string): Program => verifyProgram(parseProgram(readFileSync(`test/golden/${name}.final.ir`, "utf8")));

// --- compile: cold (empty cache), then warm -------------------------------------------------------------------
rmSync(knobs.cacheDir, { recursive: true, force: true });
const ctx = openCuda();
log(`device: ${ctx.dev.info.name} cc ${ctx.dev.info.computeCapability.join(".")} SMs ${ctx.dev.info.smCount} driver ${ctx.dev.info.driverVersion}`);
report.device = ctx.dev.info;
const zipvl = load("zipvl");
let t0 = performance.now();
const coldSet = ctx.kernels(zipvl, "bf16", 128);
const cold = performance.now() - t0;
t0 = performance.now();
const warm2 = openCuda().kernels(zipvl, "bf16", 128);
const warm = performance.now() - t0;
log(`compile (zipvl, bf16, d128, ${coldSet.compiled.length} kernels): cold ${cold.toFixed(0)} ms, warm ${warm.toFixed(1)} ms (cached: ${warm2.compiled.every((c) => c.cached)})`);
report.compile = { coldMs: cold, warmMs: warm, kernels: coldSet.compiled.map((c) => ({ key: c.key, ms: c.ms, compiler: c.compiler, reports: c.reports })) };

// --- differential properties ------------------------------------------------------------------------------------
const programs = ["zipvl", "dense", "topk-ratio", "h2o", "snapkv", "fastv"].map((n) => [n, load(n)] as const);
let passed = 0;
const failures: string[] = [];
function runCase(name: string, p: Program, c: Case, configs: Partial<Record<Stage, Record<string, number>>> = {}): boolean {
  const inputs = inputsFor(c);
  let bad: string[];
  try {
    const run = new CudaPrefill(ctx.dev, p, inputs, ctx.kernels(p, c.dtype, c.d, configs), { params: c.params });
    try {
      run.poison();
      run.enqueue();
      bad = checkPrefill(p, c, inputs, run.download(), 128);
    } finally {
      run.free();
    }
  } catch (e) {
    bad = [`threw ${String((e as Error).stack ?? e).slice(0, 400)}`];
  }
  if (bad.length) {
    failures.push(`${name} ${JSON.stringify(c)}: ${bad.slice(0, 3).join("; ")}`);
    log(`  FAIL ${failures.at(-1)!.slice(0, 600)}`);
  } else passed++;
  if ((passed + failures.length) % 10 === 0) log(`  ... ${passed} passed, ${failures.length} failed`);
  return bad.length === 0;
}
const caseArb = (maxN: number) =>
  fc.record({
    Hkv: fc.constantFrom(1, 2, 4),
    g: fc.constantFrom(1, 4, 8),
    n: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 600 }) }, { weight: 2, arbitrary: fc.integer({ min: 601, max: 4096 }) }, { weight: 1, arbitrary: fc.integer({ min: 4097, max: maxN }) }),
    d: fc.constantFrom(64, 80, 96, 128),
    dtype: fc.constantFrom("bf16", "f16", "f32"),
    tau: fc.oneof(fc.double({ min: 0.01, max: 1, noNaN: true }), fc.constant(1), fc.constant(1e-6)),
    seed: fc.nat(1 << 30),
  }).map((r): Case => ({ Hq: (r.n > 600 ? 1 : r.Hkv) * Math.min(r.g, r.n > 4096 ? 4 : 8), Hkv: r.n > 600 ? 1 : r.Hkv, n: r.n, d: r.d, dtype: r.dtype as Case["dtype"], seed: r.seed, params: {} as Record<string, number> }) as Case & { tau?: number });
const seed = Date.now() % 1_000_000;
log(`properties: fast-check seed ${seed} (fresh each run)`);
const planned: [string, Program, Case][] = [];
let decodePassed = 0;
for (const [name, p] of programs) {
  const declared = new Set(p.params.map((x) => x.name));
  const sampled = fc.sample(fc.tuple(caseArb(33_000), fc.double({ min: 0.01, max: 1, noNaN: true })), { numRuns: quick ? 8 : 12, seed: seed + name.length });
  for (const [c, tau] of sampled) {
    if (declared.has("tau")) c.params.tau = tau;
    if (declared.has("recent")) c.params.recent = Math.min(64, c.n);
    // FastV: prune from layer 0 so the keepIf rule (text outside [img_start, img_end) always kept) is exercised.
    if (name === "fastv") Object.assign(c.params, { K: 0, ratio: tau, img_start: Math.floor(c.n * 0.1), img_end: Math.floor(c.n * 0.8) });
    planned.push([name, p, c]);
  }
}
// Compile every kernel set the cases need in parallel first (nvcc on all host cores), then run the cases.
t0 = performance.now();
const jobs = [];
for (const [, p, c] of planned) for (const k of renderKernels(p, c.dtype, c.d, ctx.arch, Object.fromEntries(STAGES.map((s) => [s, defaultConfig(s, c.dtype, c.d, ctx.arch)])))) jobs.push({ k, arch: ctx.arch });
const cfgs = (dt: Case["dtype"], d: number) => Object.fromEntries(STAGES.map((s) => [s, defaultConfig(s, dt, d, ctx.arch)]));
// The probe's key split over a thread-block cluster (sm_90, probe config `cluster`), other stages at their defaults:
// n = 1, n below one cluster's key span, n not a multiple of it, long n; GQA; per-KV-head mass (snapkv); f32 SIMT.
const clusterCases: [number, Program, Case][] = ctx.arch !== 90 ? [] : [
  [2, zipvl, { Hq: 8, Hkv: 1, n: 1, d: 128, dtype: "bf16", seed: seed + 11, params: { tau: 0.975 } }],
  [8, zipvl, { Hq: 4, Hkv: 4, n: 129, d: 128, dtype: "bf16", seed: seed + 12, params: { tau: 0.975 } }],
  [4, zipvl, { Hq: 8, Hkv: 2, n: 2881, d: 128, dtype: "bf16", seed: seed + 13, params: { tau: 0.975 } }],
  [8, zipvl, { Hq: 8, Hkv: 8, n: 2880, d: 128, dtype: "bf16", seed: seed + 14, params: { tau: 0.975 } }],
  [2, zipvl, { Hq: 4, Hkv: 1, n: 9001, d: 80, dtype: "f16", seed: seed + 15, params: { tau: 0.9 } }],
  [4, zipvl, { Hq: 4, Hkv: 2, n: 1000, d: 64, dtype: "f32", seed: seed + 16, params: { tau: 0.975 } }],
  [4, load("snapkv"), { Hq: 8, Hkv: 2, n: 777, d: 128, dtype: "bf16", seed: seed + 17, params: {} }],
  [8, zipvl, { Hq: 4, Hkv: 1, n: 33_000, d: 128, dtype: "bf16", seed: seed + 18, params: { tau: 0.975 } }],
];
const clusterConfigs = (cluster: number, c: Case) => ({ ...cfgs(c.dtype, c.d), probe: { ...defaultConfig("probe", c.dtype, c.d, ctx.arch), cluster } });
for (const dt of ["bf16", "f16", "f32"] as const) for (const d of [64, 80, 96, 128]) for (const k of renderKernels(zipvl, dt, d, ctx.arch, cfgs(dt, d))) jobs.push({ k, arch: ctx.arch });
for (const name of ["topk-ratio", "dense"]) for (const k of renderKernels(load(name), "bf16", 128, ctx.arch, cfgs("bf16", 128))) jobs.push({ k, arch: ctx.arch });
for (const [cluster, p, c] of clusterCases) for (const k of renderKernels(p, c.dtype, c.d, ctx.arch, clusterConfigs(cluster, c))) if (k.stage === "probe") jobs.push({ k, arch: ctx.arch });
const built = knobs.jit === "nvrtc" ? 0 : await precompile(jobs, cpus().length);
log(`precompiled ${built} kernels in ${(performance.now() - t0).toFixed(0)} ms on ${cpus().length} cores`);
if (!benchOnly && !decodeOnly) for (const [name, p, c] of planned.slice(0, maxCases)) runCase(name, p, c);
if (!benchOnly && !decodeOnly && maxCases >= planned.length) {
// Edge cases named by the issue: n = 1, keep-all, keep-one, GQA 8, n = 33k, every head dim.
for (const d of [64, 80, 96, 128]) runCase("zipvl", zipvl, { Hq: 8, Hkv: 1, n: 1, d, dtype: "bf16", seed: seed + d, params: { tau: 0.975 } });
runCase("zipvl keep-all", zipvl, { Hq: 4, Hkv: 4, n: 777, d: 128, dtype: "bf16", seed: seed + 1, params: { tau: 1 } });
runCase("zipvl keep-one", zipvl, { Hq: 4, Hkv: 1, n: 777, d: 64, dtype: "f16", seed: seed + 2, params: { tau: 1e-9 } });
runCase("zipvl n=33k", zipvl, { Hq: 4, Hkv: 1, n: 33_000, d: 128, dtype: "bf16", seed: seed + 3, params: { tau: 0.975 } });
for (const [cluster, p, c] of clusterCases) runCase(`${p.name} probe cluster ${cluster}`, p, c, clusterConfigs(cluster, c));
}
if (!benchOnly && (decodeOnly || maxCases >= planned.length)) {
for (let i = 0; i < (decodeOnly ? 40 : Math.min(maxCases, quick ? 6 : 20)); i++) {
  const Hkv = [1, 2, 8, 5][i % 4]!;
  const g = [1, 4, 8][Math.floor(i / 4) % 3]!;
  const c: Case = { Hq: Hkv * g, Hkv, n: 1 + ((seed * (i + 7)) % (decodeOnly ? 16000 : 9000)), d: [64, 80, 96, 128][i % 4]!, dtype: (["bf16", "f16", "f32"] as const)[i % 3]!, seed: seed + i, params: {} };
  const inputs = new Map([["q", randomTensor(c.dtype, [c.Hq, 1, c.d], c.seed)], ["k_cache", randomTensor(c.dtype, [c.Hkv, c.n, c.d], c.seed + 1)], ["v_cache", randomTensor(c.dtype, [c.Hkv, c.n, c.d], c.seed + 2)]]);
  const variants: [string, Partial<Record<Stage, Record<string, number>>> | undefined][] = [["default", undefined]];
  if (decodeOnly && c.dtype !== "f32" && g >= 4) variants.push(["mma", { ...cfgs(c.dtype, c.d), decode: { warps: 4, mma: 1 } }]);
  // fuse 0: the splits merged by the separate combine kernel (zv_decode.cuh's combine_row) instead of the last CTA.
  if (decodeOnly) variants.push(["combine", { ...cfgs(c.dtype, c.d), decode: { warps: 4, fuse: 0 } }]);
  for (const [label, configs] of variants) {
    const run = new CudaDecode(ctx.dev, zipvl, inputs, ctx.kernels(zipvl, c.dtype, c.d, configs), {});
    run.poison();
    run.enqueue();
    const bad = checkDecode(c, inputs, run.download());
    run.free();
    if (bad.length) failures.push(`decode ${label} ${JSON.stringify(c)}: ${bad[0]}`);
    else decodePassed++;
    if (decodeOnly) log(`  decode ${label.padEnd(7)} Hq ${c.Hq} Hkv ${c.Hkv} len ${c.n} d ${c.d} ${c.dtype}: ${bad.length ? "FAIL " + bad[0] : "ok"}`);
  }
}
}
log(`properties: prefill ${passed} passed, decode ${decodePassed} passed, ${failures.length} failed`);
for (const f of failures.slice(0, 12)) log(`  FAIL ${f}`);
report.properties = { seed, prefillPassed: passed, decodePassed, failures };

// --- benchmark: one ZipVL prefill layer and decode, H=40, d=128, bf16 --------------------------------------------
const rows: Record<string, unknown>[] = [];
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const H = 40;
const benchInputs = new Map<number, Map<string, Tensor>>();
/** Random bf16 q/k/v for H = 40, d = 128, made once per n (drawing 500M normals in JS is the slow part). */
function inputsAt(n: number): Map<string, Tensor> {
  let m = benchInputs.get(n);
  if (!m) {
    benchInputs.clear();
    m = new Map([["q", randomTensor("bf16", [H, n, 128], 11)], ["k", randomTensor("bf16", [H, n, 128], 12)], ["v", randomTensor("bf16", [H, n, 128], 13)]]);
    benchInputs.set(n, m);
  }
  return m;
}
function timePrefill(name: string, p: Program, n: number, params: Record<string, number>): void {
  const inputs = inputsAt(n);
  const stream = ctx.dev.createStream({ nonBlocking: true });
  const run = new CudaPrefill(ctx.dev, p, inputs, ctx.kernels(p, "bf16", 128), { params }, stream);
  try {
    for (let i = 0; i < 3; i++) run.enqueue();
    const ms = median(Array.from({ length: 20 }, () => ctx.dev.time(() => run.enqueue(), stream)));
    const graph = ctx.dev.captureGraph(stream, () => run.enqueue());
    graph.launch(stream);
    const gms = median(Array.from({ length: 20 }, () => ctx.dev.time(() => graph.launch(stream), stream)));
    graph.destroy();
    const out = run.download();
    const kept = out.get("count")!.data[0]! / n;
    const c = out.get("count")!.data[0]!;
    const tflops = (4 * H * 128 * (c * (c + 1)) / 2) / (ms * 1e9);
    rows.push({ kind: "prefill", program: name, n, kept, ms, graphMs: gms, attnTflops: tflops });
    log(`prefill ${name.padEnd(11)} n=${String(n).padStart(5)} kept ${(100 * kept).toFixed(1).padStart(5)}%  ${ms.toFixed(3)} ms (graph ${gms.toFixed(3)} ms)  attention-equivalent ${tflops.toFixed(0)} TFLOP/s`);
  } catch (e) {
    rows.push({ kind: "prefill", program: name, n, error: String(e) });
    log(`prefill ${name} n=${n}: ERROR ${String(e).slice(0, 300)}`);
  } finally {
    run.free();
    stream.destroy();
  }
}
function timeDecode(c: number): void {
  // Timing only: the cache is a prefix of the last prefill inputs' data (any bf16 values will do).
  const src = inputsAt(32768);
  const view = (t: Tensor, shape: number[]): Tensor => makeTensor("bf16", shape, (t.data as Float64Array).subarray(0, shape.reduce((a, x) => a * x, 1)));
  const inputs = new Map([["q", view(src.get("q")!, [H, 1, 128])], ["k_cache", view(src.get("k")!, [H, c, 128])], ["v_cache", view(src.get("v")!, [H, c, 128])]]);
  const run = new CudaDecode(ctx.dev, zipvl, inputs, ctx.kernels(zipvl, "bf16", 128), {});
  try {
    for (let i = 0; i < 3; i++) run.enqueue();
    const ms = median(Array.from({ length: 30 }, () => ctx.dev.time(() => run.enqueue())));
    const tbps = (2 * H * c * 128 * 2) / (ms * 1e9);
    rows.push({ kind: "decode", cache: c, ms, tbps });
    log(`decode cache=${String(c).padStart(5)}  ${ms.toFixed(4)} ms  ${tbps.toFixed(2)} TB/s`);
  } finally {
    run.free();
  }
}
if (noBench) {
  writeFileSync(join(outDir, "gpu-check.json"), JSON.stringify(report, (_, v: unknown) => (typeof v === "bigint" ? v.toString() : v), 2));
  log(failures.length === 0 ? "GPU CHECK PASS" : `GPU CHECK FAIL (${failures.length})`);
  process.exit(failures.length === 0 ? 0 : 1);
}
const ratio = load("topk-ratio");
const dense = load("dense");
for (const n of [2880, 8192, 32768]) {
  timePrefill("zipvl@0.3", ratio, n, { ratio: 0.3 });
  timePrefill("zipvl tau", zipvl, n, {});
  timePrefill("dense", dense, n, {});
}
for (const n of [2880, 8192, 32768]) {
  timeDecode(Math.round(0.3 * n));
  timeDecode(n);
}
report.bench = rows;
writeFileSync(join(outDir, "gpu-check.json"), JSON.stringify(report, (_, v: unknown) => (typeof v === "bigint" ? v.toString() : v), 2));
log(failures.length === 0 ? "GPU CHECK PASS" : `GPU CHECK FAIL (${failures.length})`);
ctx.dispose();
