// The WGSL GPU-host runner (bundled by bench/bundle.mjs into .gpu/wgsl-check.mjs with Dawn's dawn.node beside it;
// run through bench/wgsl-gpu.sh). In one process:
//  1. the same differential properties as test/wgsl.test.ts and test/wgsl-programs.test.ts (one definition:
//     test/support/wgsl-props.ts) with a fresh fast-check seed, a few hundred cases per stage, as a pass/fail table;
//  2. throughput of the WGSL token-sparse attention and the GPU-resident prefill chain (probe, select, attention)
//     at the issue's shapes, in TFLOP/s against the f32 ceiling (H100 SXM: ~67 TFLOP/s non-tensor FP32);
//  3. the model ops' f32 GEMM (linear) at LLaVA-13B shapes;
//  4. the CUDA path (CudaPrefill) on the same attention shapes in f32 and bf16, where a CUDA driver is present.
// Usage: node wgsl-check.mjs OUT_DIR [--quick] [--bench-only] [--no-bench] [--no-cuda] [--label=NAME]
//        [--dawn-flags=enable-dawn-features=disable_robustness,...]  [--seed=N]
// Software adapters (lavapipe) get small shapes: their timings are for plumbing only and are labelled so.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { compileSource } from "../src/driver.ts";
import { parseProgram } from "../src/ir/parse.ts";
import { verifyProgram } from "../src/ir/verify.ts";
import type { Program } from "../src/ir/ir.ts";
import { createWebGpuExecutor } from "../src/backends/wgsl/executor.ts";
import { benchSparseAttention, createPrefillChain } from "../src/runtime/webgpu-prefill.ts";
import { createWebGpu, type ZvGpu } from "../src/runtime/webgpu.ts";
import { packUniform } from "../src/runtime/webgpu-data.ts";
import { ModelKernels, type Recorder } from "../src/backends/wgsl/model-kernels.ts";
import { programText } from "../test/support/programs.ts";
import {
  attentionProperty, checkDecodeCases, checkProgramCase, DECODE_SHAPES, decodeProperty, probeProperty, programShape,
  RUNS, selectProperty,
} from "../test/support/wgsl-props.ts";

const argv = process.argv.slice(2);
const flag = (name: string): boolean => argv.includes(`--${name}`);
const value = (name: string): string | undefined => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const outDir = argv.find((a) => !a.startsWith("--")) ?? "wgsl-out";
const quick = flag("quick");
const label = value("label") ?? "default";
const dawnFlags = (value("dawn-flags") ?? "").split(",").filter(Boolean);
const seed = Number(value("seed") ?? Date.now() % 1_000_000);
const F32_CEILING = 67; // TFLOP/s, H100 SXM FP32 (non-tensor)
mkdirSync(outDir, { recursive: true });
const log = (s: string): void => void process.stdout.write(s + "\n");
const report: Record<string, unknown> = { label, dawnFlags, seed };
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

const dev: ZvGpu = await createWebGpu({ dawnFlags });
const soft = dev.info.isSoftware;
log(`adapter: ${dev.info.vendor} ${dev.info.architecture} ${dev.info.description} software=${soft} f16=${dev.hasF16} timestamps=${dev.hasTimestamps} subgroups=${dev.info.subgroupMinSize}-${dev.info.subgroupMaxSize} flags=[${dawnFlags.join(" ")}]`);
log(`limits: ${JSON.stringify(dev.limits)}`);
report.adapter = dev.info;
report.limits = dev.limits;

// ---- 1. properties -------------------------------------------------------------------------------------------------
interface Row { check: string; runs: number; passed: boolean; ms: number; detail: string }
const rows: Row[] = [];
async function property(check: string, prop: fc.IAsyncProperty<never> | fc.IAsyncProperty<unknown[]>, runs: number): Promise<void> {
  const t0 = performance.now();
  const r = await fc.check(prop as fc.IAsyncProperty<unknown[]>, { numRuns: runs, seed });
  const detail = r.failed ? `${String(r.errorInstance ?? "").slice(0, 300)} counterexample ${JSON.stringify(r.counterexample)?.slice(0, 300)}` : "";
  rows.push({ check, runs: r.numRuns, passed: !r.failed, ms: performance.now() - t0, detail });
  log(`  ${r.failed ? "FAIL" : "pass"} ${check} (${r.numRuns} runs, ${((performance.now() - t0) / 1000).toFixed(1)} s)${r.failed ? `: ${detail}` : ""}`);
}
async function caught(check: string, fn: () => Promise<number>): Promise<void> {
  const t0 = performance.now();
  try {
    const runs = await fn();
    rows.push({ check, runs, passed: true, ms: performance.now() - t0, detail: "" });
    log(`  pass ${check} (${runs} runs, ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    rows.push({ check, runs: 0, passed: false, ms: performance.now() - t0, detail: String(e).slice(0, 600) });
    log(`  FAIL ${check}: ${String(e).slice(0, 600)}`);
  }
}
if (!flag("bench-only")) {
  log(`== properties vs the interpreter (fast-check seed ${seed}, fresh each run)`);
  const scale = quick ? 0.2 : 1;
  const gpu = (): ZvGpu => dev;
  await property("probe scoring", probeProperty(gpu), Math.ceil(RUNS.probe * scale));
  await property("selection", selectProperty(gpu), Math.ceil(RUNS.select * scale));
  await property("token-sparse attention", attentionProperty(gpu), Math.ceil(RUNS.attention * scale));
  await property("split-KV decode", decodeProperty(gpu), Math.ceil(RUNS.decode * scale));
  const executor = await createWebGpuExecutor();
  await caught("random programs (prefill, executor)", async () => {
    const texts = fc.sample(programText.filter((t) => t.includes('decode({ modifier: "s" })')), { numRuns: quick ? 4 : 16, seed });
    const shapes = fc.sample(programShape, { numRuns: 6 * texts.length, seed: seed + 1 });
    let checked = 0;
    let i = 0;
    for (const text of texts) {
      const p = compileSource("random.ts", text).final;
      for (let r = 0; r < 6; r++) {
        const outcome = await checkProgramCase(executor, p, shapes[i++]!).catch((e: unknown) => {
          throw new Error(`${text}\n${String(e)}`);
        });
        if (outcome === "limitation") break;
        checked++;
      }
    }
    return checked;
  });
  await caught("decode over pruned caches (executor)", async () => {
    await checkDecodeCases(executor, golden("zipvl"), DECODE_SHAPES);
    return DECODE_SHAPES.length;
  });
  log("");
  log("check                                  runs  result  seconds");
  for (const r of rows) log(`${r.check.padEnd(38)} ${String(r.runs).padStart(5)}  ${r.passed ? "pass" : "FAIL"}    ${(r.ms / 1000).toFixed(1)}`);
  report.properties = rows;
}

function golden(name: string): Program {
  return verifyProgram(parseProgram(readFileSync(`test/golden/${name}.final.ir`, "utf8")));
}

// ---- 2. WGSL throughput ---------------------------------------------------------------------------------------------
const H = soft ? 4 : 40;
const D = soft ? 64 : 128;
const SIZES = soft ? [256] : quick ? [2880] : [2880, 8192];
const KEPT = 0.3;
const attnFlops = (kept: number, heads = H, d = D): number => (4 * d * heads * kept * (kept + 1)) / 2;
const bench: Record<string, unknown>[] = [];
const tf = (flops: number, ms: number): number => flops / (ms * 1e-3) / 1e12;
const pct = (t: number): string => (soft ? "software" : `${((100 * t) / F32_CEILING).toFixed(1)}% of ${F32_CEILING}`);
if (!flag("no-bench")) {
  log(`\n== WGSL throughput (Hq = Hkv = ${H}, d ${D}, f32${soft ? "; SOFTWARE adapter: plumbing only, not a measurement" : ""})`);
  for (const n of SIZES) {
    for (const kept of [Math.round(KEPT * n), n]) {
      try {
        const r = await benchSparseAttention(dev, { n, kept, d: D, Hq: H, Hkv: H, reps: soft ? 3 : 20, useF16: false });
        bench.push({ backend: "wgsl", kind: "sparse-attention", n, kept, ms: r.ms, tflops: r.tflops, config: r.config });
        log(`wgsl attention      n=${String(n).padStart(5)} kept=${String(kept).padStart(5)}  ${r.ms.toFixed(3)} ms  ${r.tflops.toFixed(2)} TFLOP/s (${pct(r.tflops)})  tiles ${r.config.attnBQ}x${r.config.attnBK} tpr ${r.config.attnTPR}`);
      } catch (e) {
        bench.push({ backend: "wgsl", kind: "sparse-attention", n, kept, error: String(e) });
        log(`wgsl attention n=${n} kept=${kept}: ERROR ${String(e).slice(0, 300)}`);
      }
    }
    try {
      const m = Math.min(128, n), d = D, scale = 1 / Math.sqrt(d);
      const chain = await createPrefillChain(dev, {
        Hq: H, Hkv: H, n, d, m, scale, perKvHead: false,
        select: { mode: "ratio", amount: KEPT, normalizer: "visible", pool: { kind: "none", size: 1 }, keepFirst: 0, keepLast: 0 },
      });
      let s = seed >>> 0 || 1;
      const rnd = (len: number): Float32Array => {
        const a = new Float32Array(len);
        for (let i = 0; i < len; i++) a[i] = ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
        return a;
      };
      chain.upload({ q: rnd(H * n * d), k: rnd(H * n * d), v: rnd(H * n * d), probes: Int32Array.from({ length: m }, (_, i) => n - m + i) });
      await chain.run();
      const t = await chain.time(soft ? 2 : 10);
      const kept = (await chain.read()).count[0]!;
      chain.destroy();
      const total = t.total!;
      const tflops = tf(attnFlops(kept), total);
      bench.push({ backend: "wgsl", kind: "prefill-chain", n, kept, ms: t, tflops });
      const stages = Object.entries(t).filter(([k]) => k !== "total").map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", ");
      log(`wgsl prefill chain  n=${String(n).padStart(5)} kept=${String(kept).padStart(5)}  ${total.toFixed(3)} ms (${stages})  attention-equivalent ${tflops.toFixed(2)} TFLOP/s (${pct(tflops)})`);
    } catch (e) {
      bench.push({ backend: "wgsl", kind: "prefill-chain", n, error: String(e) });
      log(`wgsl prefill chain n=${n}: ERROR ${String(e).slice(0, 300)}`);
    }
  }
}

// ---- 2b. the model ops' f32 GEMM (linear: x [M, K] w [N, K]^T), LLaVA-13B-sized ---------------------------------
async function benchLinear(M: number, N: number, K: number, reps: number): Promise<number> {
  const kernels = new ModelKernels(dev);
  const bufs = [dev.buffer(4 * M * K, "x"), dev.buffer(4 * N * K, "w"), dev.buffer(4 * N, "bias"), dev.buffer(4 * M * N, "y")];
  let launch: { p: GPUComputePipeline; bg: GPUBindGroup; x: number; y: number } | null = null;
  const uniforms: GPUBuffer[] = [];
  const rec: Recorder = {
    dev,
    uniform: (f) => {
      const u = dev.uniform(packUniform(f), "linear.args");
      uniforms.push(u);
      return u;
    },
    dispatch: (p, bindings, b, x, y) => void (launch = { p, bg: dev.bindGroup(bindings, b), x, y }),
  };
  await kernels.linear(rec, bufs[0]!, bufs[1]!, bufs[2]!, bufs[3]!, M, N, K, true);
  const timer = dev.timer(1);
  const times: number[] = [];
  try {
    for (let r = 0; r < reps + 2; r++) {
      const t0 = performance.now();
      await dev.checked("benchLinear", async () => {
        const enc = dev.device.createCommandEncoder();
        const pass = enc.beginComputePass(timer ? { timestampWrites: timer.writes(0) } : {});
        const l = launch!;
        pass.setPipeline(l.p);
        pass.setBindGroup(0, l.bg);
        pass.dispatchWorkgroups(l.x, l.y);
        pass.end();
        if (timer) timer.resolve(enc);
        dev.device.queue.submit([enc.finish()]);
        await dev.device.queue.onSubmittedWorkDone();
      });
      const wall = performance.now() - t0;
      if (r >= 2) times.push(timer ? ((await timer.ms())[0] ?? wall) : wall);
    }
  } finally {
    timer?.destroy();
    for (const b of [...bufs, ...uniforms]) b.destroy();
  }
  return median(times);
}
if (!flag("no-bench")) {
  log(`\n== WGSL linear (model ops GEMM, f32${soft ? "; SOFTWARE adapter" : ""})`);
  const shapes: [number, number, number][] = soft ? [[128, 128, 128]] : [[2880, 5120, 5120], [2880, 13824, 5120], [1, 5120, 5120]];
  for (const [M, N, K] of shapes) {
    try {
      const ms = await benchLinear(M, N, K, soft ? 2 : 10);
      const tflops = tf(2 * M * N * K, ms);
      bench.push({ backend: "wgsl", kind: "linear", M, N, K, ms, tflops });
      log(`wgsl linear M=${String(M).padStart(5)} N=${String(N).padStart(5)} K=${K}  ${ms.toFixed(3)} ms  ${tflops.toFixed(2)} TFLOP/s (${pct(tflops)})`);
    } catch (e) {
      bench.push({ backend: "wgsl", kind: "linear", M, N, K, error: String(e) });
      log(`wgsl linear ${M}x${N}x${K}: ERROR ${String(e).slice(0, 300)}`);
    }
  }
}

// ---- 3. the CUDA path on the same shapes --------------------------------------------------------------------------
if (!flag("no-bench") && !flag("no-cuda")) {
  log(`\n== CUDA prefill layer (CudaPrefill, top-k ratio ${KEPT}), same shapes`);
  try {
    const { openCuda } = await import("../src/backends/cuda/executor.ts");
    const { CudaPrefill } = await import("../src/backends/cuda/pipeline.ts");
    const { randomTensor } = await import("../src/io/random.ts");
    const ctx = openCuda();
    log(`device: ${ctx.dev.info.name} cc ${ctx.dev.info.computeCapability.join(".")}`);
    const ratio = golden("topk-ratio");
    for (const dtype of ["f32", "bf16"] as const) {
      for (const n of SIZES) {
        const inputs = new Map([["q", randomTensor(dtype, [H, n, D], 11)], ["k", randomTensor(dtype, [H, n, D], 12)], ["v", randomTensor(dtype, [H, n, D], 13)]]);
        const stream = ctx.dev.createStream({ nonBlocking: true });
        const run = new CudaPrefill(ctx.dev, ratio, inputs, ctx.kernels(ratio, dtype, D), { params: { ratio: KEPT } }, stream);
        try {
          for (let i = 0; i < 3; i++) run.enqueue();
          const ms = median(Array.from({ length: 20 }, () => ctx.dev.time(() => run.enqueue(), stream)));
          const kept = run.download().get("count")!.data[0]!;
          const tflops = tf(attnFlops(kept), ms);
          bench.push({ backend: "cuda", kind: "prefill-layer", dtype, n, kept, ms, tflops });
          log(`cuda ${dtype.padEnd(4)} prefill layer n=${String(n).padStart(5)} kept=${String(kept).padStart(5)}  ${ms.toFixed(3)} ms  attention-equivalent ${tflops.toFixed(1)} TFLOP/s`);
        } catch (e) {
          bench.push({ backend: "cuda", kind: "prefill-layer", dtype, n, error: String(e) });
          log(`cuda ${dtype} n=${n}: ERROR ${String(e).slice(0, 300)}`);
        } finally {
          run.free();
          stream.destroy();
        }
      }
    }
    ctx.dispose();
  } catch (e) {
    log(`cuda: not run here (${String(e).split("\n")[0]!.slice(0, 200)})`);
    report.cuda = String(e);
  }
}
report.bench = bench;
const file = join(outDir, `wgsl-check-${label}.json`);
writeFileSync(file, JSON.stringify(report, null, 2));
const failed = rows.filter((r) => !r.passed).length;
log(`\nwrote ${file}`);
log(failed === 0 ? `WGSL CHECK PASS (${label})` : `WGSL CHECK FAIL (${label}: ${failed} failed)`);
dev.destroy();
process.exit(failed === 0 ? 0 : 1);
