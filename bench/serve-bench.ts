// Serving throughput on one GPU with a LLaVA-Next-13B-shaped decoder (hidden 5120, 40 layers, 40 heads, d 128,
// intermediate 13824, vocab 32064, bf16; weights drawn on the device as in bench/llava-scale.ts): the serving
// engine (src/serve/engine.ts) with the paged pool on the GPU, dense vs ZipVL (fixed 36.7% kept ratio, the paper's
// LLaVA-Next-13B mean), decode tokens/s at batch 1 and at the largest batch the memory planner fits, at 2.9k /
// 16k / 32k prompts; then one 128k-token ZipVL prefill layer by layer (the planner says first whether it fits).
// Batch members after the first are page-table clones of the first sequence's lengths (decode time does not depend
// on the cached values), so only one prefill per (length, mode) is paid.
//   bundle here:  npx esbuild bench/serve-bench.ts --bundle --platform=node --format=esm --target=node20 --external:webgpu \
//                   --outfile=.gpu/serve-bench.mjs "--banner:js=import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
//   GPU host:     node .gpu/serve-bench.mjs [--quick] [--layers=N] [--lengths=2900,16000,32000] [--steps=N] [--no-128k]
//                 [--only-128k] [--modes=dense,zipvl] [--no-eager] [--max-batch=64] [--memory-gib=G] [--profile]
//                 [--copy-tbps=T] [--ratio-128k=0.367,0.2]
// Each decode row is timed twice: through the engine's step runner (CUDA graphs, one per batch bucket) and eagerly
// (op by op), so the line says what graphs save. Split a long run with --lengths / --modes / --no-128k / --only-128k.
import { readFileSync } from "node:fs";
import { createCudaAttention } from "../src/backends/cuda/paged-serve.ts";
import type { GraphRunner } from "../src/backends/cuda/paged-graph.ts";
import { openCuda } from "../src/backends/cuda/executor.ts";
import { parseProgram } from "../src/ir/parse.ts";
import { verifyProgram } from "../src/ir/verify.ts";
import type { LlavaConfig } from "../src/model/config.ts";
import { createCudaOpsWith } from "../src/model/cuda-ops.ts";
import type { ChatTokenizer } from "../src/model/hf/index.ts";
import type { Policy } from "../src/model/ops.ts";
import { calibratePrefill, LlavaEngine } from "../src/serve/engine.ts";
import { argmaxRows } from "../src/model/sampling.ts";
import { checkRequest, describePlan, fmtBytes, planMemory, sequencesThatFit, type ModelShape } from "../src/serve/planner.ts";
import { deviceDecoderWeights, eltCopyTbps, llavaNext13b } from "./shapes.ts";

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const quick = args.includes("--quick");
const layers = Number(flag("layers") ?? (quick ? 8 : 40));
const lengths = (flag("lengths") ?? (quick ? "2900" : "2900,16000,32000")).split(",").map(Number);
const steps = Number(flag("steps") ?? (quick ? 4 : 12));
const maxBatchCap = Number(flag("max-batch") ?? 64);
// Caps the memory the planner may use (default: all the device has free after the weights).
const memCap = Number(flag("memory-gib") ?? Infinity) * 2 ** 30;
const modes = (flag("modes") ?? "dense,zipvl").split(",");
const eagerToo = !args.includes("--no-eager");
const only128k = args.includes("--only-128k");
// Per-kernel GPU time of batch-1 steps (events around every launch of an eager step; cuBLASLt's own launches are
// not seen, so with more rows than the fused kernels take the table misses the GEMMs).
const profile = args.includes("--profile");
const log = (s: string): void => void process.stdout.write(s + "\n");

const CFG: LlavaConfig = llavaNext13b(layers, 131072 + 1024);
const t = CFG.text;
const SHAPE: ModelShape = { layers, hidden: t.hiddenSize, intermediate: t.intermediateSize, heads: t.numHeads, kvHeads: t.numKvHeads, headDim: t.headDim, vocab: t.vocabSize, maxPositions: t.maxPositionEmbeddings };

const golden = (name: string) => verifyProgram(parseProgram(readFileSync(`test/golden/${name}.final.ir`, "utf8")));
const ctx = openCuda();
log(`device: ${ctx.dev.info.name} cc ${ctx.dev.info.computeCapability.join(".")} SMs ${ctx.dev.info.smCount}`);
const ops = createCudaOpsWith(ctx, "bf16", golden("dense"));
const zipvl: Policy = { program: golden("topk-ratio"), params: { ratio: 0.367 } };

const { w } = deviceDecoderWeights(ops, CFG);
const noTok = new Proxy({}, { get: () => { throw new Error("no tokenizer in the benchmark"); } }) as ChatTokenizer;
const ckpt = { cfg: CFG, tok: noTok, proc: {}, w, weightBytes: 0 };
log(`weights: ${layers} layers bf16 on the device; free ${fmtBytes(ctx.dev.memInfo().free)}`);

// The bytes floor of a decode step: every weight matrix read once plus every live K/V row, over the copy rate of
// this card: --copy-tbps (PyTorch's copy_ measured in the same session by bench/gpu-session.sh), else the model
// kernels' copy of 1 GiB here (read + write bytes, best of 5; a scalar kernel, so a lower rate).
const copyTbps = Number(flag("copy-tbps") ?? 0) || eltCopyTbps(ops);
const weightBytes = 2 * (layers * (t.hiddenSize * (t.numHeads + 2 * t.numKvHeads) * t.headDim + t.numHeads * t.headDim * t.hiddenSize + 3 * t.hiddenSize * t.intermediateSize + 2 * t.hiddenSize) + t.hiddenSize + t.vocabSize * t.hiddenSize);
log(`copy rate ${copyTbps.toFixed(2)} TB/s (${flag("copy-tbps") ? "--copy-tbps" : "elt copy here"}); weights read per decode step ${(weightBytes / 1e9).toFixed(2)} GB (floor ${(weightBytes / (copyTbps * 1e9)).toFixed(2)} ms)`);
const floorMs = (kvRows: number): number => (weightBytes + kvRows * t.numKvHeads * t.headDim * 2 * 2) / (copyTbps * 1e9);

const ids = (n: number): Int32Array => Int32Array.from({ length: n }, (_, i) => 3 + ((i * 7919) % 31000));

// The prefill peak per mode, measured once on the real ops (engine.ts calibratePrefill) and used by every plan.
const fits = new Map<Policy | undefined, ReturnType<typeof calibratePrefill>>();
const fitFor = (policy: Policy | undefined): ReturnType<typeof calibratePrefill> => {
  if (!fits.has(policy)) {
    const fit = calibratePrefill(ops, ckpt, policy);
    fits.set(policy, fit);
    if (fit) log(`prefill peak ${policy ? "zipvl" : "dense"}: a ${fmtBytes(fit.a)}, b ${(fit.b / 1024).toFixed(1)} KiB/token, c ${fit.c} (${fit.source})`);
  }
  return fits.get(policy);
};

/** One engine (pool sized by the planner) for a mode and a longest prompt. */
function engineFor(policy: Policy | undefined, maxPrompt: number): LlavaEngine {
  const prefill = fitFor(policy);
  ops.memory.releaseCached();
  const plan = planMemory(SHAPE, {
    ...(prefill ? { prefill } : {}),
    freeBytes: Math.min(memCap, ctx.dev.memInfo().free), elemBytes: 2, pageTokens: 16, layout: "per-layer", keptRatio: policy ? (policy.params.ratio ?? 0.367) : 1, sparse: policy !== undefined,
    maxBatch: maxBatchCap, maxPromptTokens: maxPrompt,
  });
  const attn = createCudaAttention(ops, { layers, heads: t.numHeads, kvHeads: t.numKvHeads, headDim: t.headDim, pageTokens: 16, layout: "per-layer", numPages: plan.numPages, maxBatch: maxBatchCap });
  return new LlavaEngine(ops, ckpt, attn, plan, { modelId: "13b-shaped", ...(policy ? { policy } : {}) });
}

/** Runs `step` 3 times with events around every kernel launch; prints the kernels by GPU time per step. */
function profileSteps(step: () => void, graphMs: number): void {
  const dev = ctx.dev;
  const orig = dev.launch;
  const evs: [string, ReturnType<typeof dev.createEvent>, ReturnType<typeof dev.createEvent>][] = [];
  const grids = new Map<object, string>();
  dev.launch = function (this: typeof dev, fn, cfg, a) {
    const e0 = dev.createEvent(), e1 = dev.createEvent();
    e0.record(cfg.stream);
    orig.call(this, fn, cfg, a);
    e1.record(cfg.stream);
    evs.push([(fn as { name?: string }).name ?? "?", e0, e1]);
    grids.set(e0, `grid ${cfg.grid[0]}`);
  };
  try {
    ops.sync();
    for (let i = 0; i < 3; i++) step();
    ops.sync();
  } finally {
    dev.launch = orig;
  }
  const by = new Map<string, { calls: number; ms: number }>();
  for (const [name, e0, e1] of evs) {
    const k = `${name.replace(/_d\d+/, "")} ${grids.get(e0)}`;
    const r = by.get(k) ?? { calls: 0, ms: 0 };
    r.calls++;
    r.ms += e1.elapsedSince(e0);
    by.set(k, r);
    e0.destroy();
    e1.destroy();
  }
  const total = [...by.values()].reduce((a, r) => a + r.ms, 0) / 3;
  log(`  profile (eager steps, GPU time per step by kernel; sum ${total.toFixed(2)} ms vs ${graphMs.toFixed(2)} ms per graph step):`);
  for (const [k, r] of [...by].sort((a, b) => b[1].ms - a[1].ms).slice(0, 10)) log(`    ${k.padEnd(30)} ${String(r.calls / 3).padStart(5)} calls ${(r.ms / 3).toFixed(3).padStart(8)} ms ${((100 * r.ms) / 3 / total).toFixed(1).padStart(5)}%`);
}

function bench(n: number, policy: Policy | undefined): void {
  const mode = policy ? "zipvl 36.7%" : "dense";
  let eng: LlavaEngine | undefined;
  try {
    eng = engineFor(policy, n);
    // Every sequence decodes (warm-up + steps) per timed runner (graph, and eager unless --no-eager), and s0 does so
    // for both batch sizes: reserve that many new tokens, or the pool runs out mid-run (ZV7002 on the H100).
    const decodeTokens = 2 * (eagerToo ? 2 : 1) * (steps + 1);
    checkRequest(eng.plan, n, decodeTokens);
    const fit = Math.max(1, sequencesThatFit(eng.plan, n, decodeTokens));
    const pool = eng.pool;
    pool.addSequence("s0");
    const a = performance.now();
    const first = eng.prefill("s0", { ids: ids(n) }).first;
    ops.sync();
    const prefillMs = performance.now() - a;
    const lens = Array.from({ length: layers }, (_, l) => pool.lengths("s0", l));
    for (const B of [...new Set([1, fit])]) {
      const seqs = Array.from({ length: B }, (_, b) => `s${b}`);
      for (const s of seqs.slice(1)) {
        if (!pool.has(s)) {
          pool.addSequence(s);
          lens.forEach((ln, l) => pool.reserveRows(s, l, ln));
        }
      }
      const batch = seqs.map((seq) => ({ seq, token: first, position: n }));
      let pos = n;
      // Each step feeds back the tokens of the last (greedy generation); `ahead` on every timed step but the last, as
      // the scheduler passes it while the batch stays, so the engine may keep the next step in flight.
      const time = (run: (b: typeof batch, ahead: boolean) => number[]): number => {
        let toks = batch.map((x) => x.token);
        const one = (ahead: boolean): void => {
          const p = pos++;
          toks = run(batch.map((x, i) => ({ ...x, token: toks[i]!, position: p })), ahead);
        };
        one(false); // warm (GEMM plans; the graph capture of this shape)
        ops.sync();
        const b = performance.now();
        for (let i = 0; i < steps; i++) one(i < steps - 1);
        ops.sync();
        return (performance.now() - b) / steps;
      };
      const ms = time((b, ahead) => eng!.decode(b, { ahead }));
      // The GPU's share of a step: the last graph replayed back to back (host work between steps excluded).
      const replay = (eng.steps as Partial<GraphRunner>).replayLast?.(steps) ?? null;
      if (profile && B === 1) profileSteps(() => eng!.eager.run(batch.map((x) => ({ ...x, position: pos++ }))), ms);
      const eagerMs = eagerToo ? time((b) => argmaxRows(eng!.eager.run(b), b.length)) : NaN;
      const tps = (t: number): string => ((B * 1000) / t).toFixed(1).padStart(8);
      // Live rows per layer at the middle of the timed steps, for each of the B sequences.
      const floor = floorMs(B * lens.reduce((a, x) => a + x.reduce((p, q) => p + q, 0) / x.length + steps, 0));
      log(`${mode.padEnd(12)} n ${String(n).padStart(6)} prefill ${prefillMs.toFixed(0).padStart(7)} ms  batch ${String(B).padStart(3)}${B === fit && B > 1 ? " (max fit)" : "          "}: ${eng.steps.mode} ${ms.toFixed(1).padStart(7)} ms/step ${tps(ms)} tokens/s  floor ${floor.toFixed(1)} ms (${((100 * floor) / ms).toFixed(0)}%)` + (replay !== null ? `  gpu ${replay.toFixed(2)} ms (${((100 * floor) / replay).toFixed(0)}%)` : "") + (eagerToo ? `  eager ${eagerMs.toFixed(1).padStart(7)} ms/step ${tps(eagerMs)} tokens/s` : ""));
    }
  } catch (e) {
    log(`${mode.padEnd(12)} n ${String(n).padStart(6)}: ${String((e as Error).message ?? e).slice(0, 300)}`);
  } finally {
    eng?.steps.dispose();
    eng?.attn.dispose();
  }
}

// Warm-up: kernel compiles and GEMM plans.
const policies = [...(modes.includes("dense") ? [undefined] : []), ...(modes.includes("zipvl") ? [zipvl] : [])];
if (!only128k) {
  for (const p of policies) bench(256, p);
  log("warm-up done");
  for (const n of lengths) for (const p of policies) bench(n, p);
}

// --ratio-128k=0.367,0.2: the kept ratios to try at 128k (36.7% is the paper's 13B mean at one image; a 128k prompt
// is sparser, and 36.7% of it does not fit next to 26 GB of weights on an 80 GB card).
for (const ratio of args.includes("--no-128k") ? [] : (flag("ratio-128k") ?? "0.367").split(",").map(Number)) {
  const n = 131072;
  log(`128k-token ZipVL prefill at ${(100 * ratio).toFixed(1)}% kept, layer by layer:`);
  let eng: LlavaEngine | undefined;
  try {
    eng = engineFor(ratio === 0.367 ? zipvl : { program: zipvl.program, params: { ratio } }, n);
    log(describePlan(eng.plan).split("\n").map((l) => `  ${l}`).join("\n"));
    checkRequest(eng.plan, n, 1);
    eng.pool.addSequence("long");
    ops.memory.resetPeak();
    const st0 = ops.memory.stats();
    const base = st0.heldBytes, baseLive = st0.heldBytes - st0.cachedBytes;
    const a = performance.now();
    eng.prefill("long", { ids: ids(n) });
    ops.sync();
    const ms = performance.now() - a;
    const mem = ctx.dev.memInfo();
    log(`  prefill of ${n} tokens: ${(ms / 1000).toFixed(1)} s; pool ${fmtBytes(eng.pool.usedBytes)} used; device ${fmtBytes(mem.total - mem.free)} in use of ${fmtBytes(mem.total)}`);
    const st = ops.memory.stats();
    log(`  prefill peak measured: live ${fmtBytes(st.peakLiveBytes - baseLive)} (held minus the pool's cached buffers, which go back under pressure), held ${fmtBytes(st.peakBytes - base)} (over what the ops held before; held now ${fmtBytes(st.heldBytes)}, cached ${fmtBytes(st.cachedBytes)}); reserve ${fmtBytes(eng.plan.activationBytes)}`);
    log(`  dense: ${(() => { try { checkRequest(planMemory(SHAPE, { ...eng.plan.options, keptRatio: 1, sparse: false }), n, 1); return "would fit"; } catch (e) { return (e as Error).message; } })()}`);
  } catch (e) {
    log(`  ${String((e as Error).message ?? e).slice(0, 400)}`);
  } finally {
    eng?.attn.dispose();
  }
}
w.free();
ops.dispose();
