// LLaVA-Next-13B-shaped decoder at scale on one GPU: hidden 5120, 40 layers, 40 heads (no GQA), intermediate 13824,
// vocab 32064, bf16 — weights drawn ON the device by the init kernel (26 GB never touch the host). Runs the model's
// own decoder code (src/model/text.ts: prefill, decodeStep) on the cuda ops, dense vs ZipVL with a fixed 36.7% kept
// ratio (the topk-ratio program), and reports prefill latency and decode tokens/s at ~2.9k and ~32k tokens.
// bench/llava_scale_hf.py is the transformers baseline of the same shape. Bundled into .gpu/llava-scale.mjs.
// Usage (repo root, GPU host): node .gpu/llava-scale.mjs OUT_DIR [--quick] [--layers=N] [--lengths=2900,32000] [--steps=N]
//   [--warmup=TOKENS]
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { openCuda } from "../src/backends/cuda/executor.ts";
import { parseProgram } from "../src/ir/parse.ts";
import { verifyProgram } from "../src/ir/verify.ts";
import type { LlavaConfig } from "../src/model/config.ts";
import { createCudaOpsWith } from "../src/model/cuda-ops.ts";
import type { Policy } from "../src/model/ops.ts";
import { decodeStep, logits, prefill } from "../src/model/text.ts";
import { TEXT } from "../src/model/weights.ts";
import { deviceDecoderWeights, llavaNext13b } from "./shapes.ts";

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const outDir = args.find((a) => !a.startsWith("--")) ?? "llava-scale-out";
const quick = args.includes("--quick");
const layers = Number(flag("layers") ?? (quick ? 8 : 40));
const lengths = (flag("lengths") ?? (quick ? "2900" : "2900,32000")).split(",").map(Number);
const steps = Number(flag("steps") ?? (quick ? 4 : 16));
const warmup = Number(flag("warmup") ?? 256);
const log = (s: string): void => void process.stdout.write(s + "\n");
mkdirSync(outDir, { recursive: true });

const CFG: LlavaConfig = llavaNext13b(layers, 32768 + 1024);

const golden = (name: string) => verifyProgram(parseProgram(readFileSync(`test/golden/${name}.final.ir`, "utf8")));
const ctx = openCuda();
log(`device: ${ctx.dev.info.name} cc ${ctx.dev.info.computeCapability.join(".")} SMs ${ctx.dev.info.smCount} driver ${ctx.dev.info.driverVersion}`);
const ops = createCudaOpsWith(ctx, "bf16", golden("dense"));
const zipvl: Policy = { program: golden("topk-ratio"), params: { ratio: 0.367 } };

// Weights: every 2-D tensor N(0, 0.02) drawn on the device, norm weights 1 (uploaded: 5120 values each).
const t0 = performance.now();
const { w, params } = deviceDecoderWeights(ops, CFG);
const mem = ctx.dev.memInfo();
log(`weights: ${(params / 1e9).toFixed(2)} B params bf16 (${layers} layers), drawn on the device in ${((performance.now() - t0) / 1000).toFixed(1)} s; device memory used ${((mem.total - mem.free) / 2 ** 30).toFixed(1)} GiB of ${(mem.total / 2 ** 30).toFixed(1)}`);

interface Row {
  mode: string;
  n: number;
  prefillMs: number;
  decodeMsPerToken: number;
  tokensPerS: number;
  keptMean: number;
  memGiB: number;
  /** Bytes one decode step must read at least: the weights it multiplies (all but the embedding table) plus the live
   *  K/V of every layer at the middle step; over decode ms = the achieved rate to compare with the copy bandwidth. */
  stepGB: number;
  achievedGBs: number;
}

function runOnce(n: number, policy: Policy | undefined, decodeSteps: number): Row {
  const ids = Int32Array.from({ length: n }, (_, i) => 3 + ((i * 7919) % 31000));
  ops.sync();
  const a = performance.now();
  const embeds = ops.embed(w.get(`${TEXT}embed_tokens.weight`), ids);
  const pre = prefill(ops, CFG.text, w, embeds, policy, { reserve: decodeSteps }); // caches hold the new tokens: in-place appends
  const lg = logits(ops, w, pre.last); // reads the logits back: the prefill is complete
  const prefillMs = performance.now() - a;
  ops.free(pre.last);
  let next = argmax(lg);
  const b = performance.now();
  for (let s = 0; s < decodeSteps; s++) {
    const e = ops.embed(w.get(`${TEXT}embed_tokens.weight`), Int32Array.of(next));
    const h = decodeStep(ops, CFG.text, w, e, n + s, pre.caches);
    ops.free(e);
    next = argmax(logits(ops, w, h));
    ops.free(h);
  }
  const decodeMs = performance.now() - b;
  const m = ctx.dev.memInfo();
  for (const c of pre.caches) c.free();
  const kept = pre.stats.reduce((x, l) => x + l.kept / l.n, 0) / pre.stats.length;
  const per = decodeSteps ? decodeMs / decodeSteps : 0;
  const t = CFG.text;
  const kvRows = pre.stats.reduce((x, l) => x + l.kept, 0) + (t.numLayers * decodeSteps) / 2;
  const stepGB = (2 * (params - t.vocabSize * t.hiddenSize) + kvRows * t.numKvHeads * t.headDim * 2 * 2) / 1e9;
  return { stepGB, achievedGBs: per ? stepGB / (per / 1000) : 0, mode: policy ? "zipvl 36.7%" : "dense", n, prefillMs, decodeMsPerToken: per, tokensPerS: per ? 1000 / per : 0, keptMean: kept, memGiB: (m.total - m.free) / 2 ** 30 };
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

// Warm-up: compiles (or loads from the cache) every kernel both modes use, and the GEMM plans of a short prompt.
for (const p of [undefined, zipvl]) runOnce(warmup, p, 2);
log("warm-up done");

const rows: Row[] = [];
for (const n of lengths) {
  for (const p of [undefined, zipvl]) {
    try {
      const r = runOnce(n, p, steps);
      rows.push(r);
      log(`${r.mode.padEnd(12)} n ${String(n).padStart(6)}  prefill ${r.prefillMs.toFixed(0).padStart(7)} ms  decode ${r.decodeMsPerToken.toFixed(1).padStart(6)} ms/token (${r.tokensPerS.toFixed(1)} tok/s)  kept ${(100 * r.keptMean).toFixed(1)}%  mem ${r.memGiB.toFixed(1)} GiB  decode reads ${r.stepGB.toFixed(1)} GB/step = ${r.achievedGBs.toFixed(0)} GB/s`);
    } catch (e) {
      log(`${p ? "zipvl" : "dense"} n ${n}: ${String((e as Error).message ?? e).slice(0, 300)}`);
      rows.push({ mode: p ? "zipvl 36.7%" : "dense", n, prefillMs: NaN, decodeMsPerToken: NaN, tokensPerS: NaN, keptMean: NaN, memGiB: NaN, stepGB: NaN, achievedGBs: NaN });
    }
  }
}
log("\n| mode | tokens | prefill ms | decode ms/token | tokens/s | kept | GB/step | GB/s |");
log("|---|---:|---:|---:|---:|---:|---:|---:|");
for (const r of rows) log(`| ${r.mode} | ${r.n} | ${r.prefillMs.toFixed(0)} | ${r.decodeMsPerToken.toFixed(1)} | ${r.tokensPerS.toFixed(1)} | ${(100 * r.keptMean).toFixed(1)}% | ${r.stepGB.toFixed(1)} | ${r.achievedGBs.toFixed(0)} |`);
for (const n of lengths) {
  const d = rows.find((r) => r.n === n && r.mode === "dense"), z = rows.find((r) => r.n === n && r.mode !== "dense");
  if (d && z) log(`n ${n}: ZipVL prefill speedup ${(d.prefillMs / z.prefillMs).toFixed(2)}x, decode speedup ${(d.decodeMsPerToken / z.decodeMsPerToken).toFixed(2)}x`);
}
writeFileSync(join(outDir, "llava-scale.json"), JSON.stringify({ device: ctx.dev.info, layers, steps, params, rows }, (_, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2));
w.free();
ops.dispose();
