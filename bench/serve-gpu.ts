// GPU-host runner for serving (bundled: the GPU host has no node_modules).
//  1. The paged decode kernel against the host reference on random ragged batches (layouts, page sizes, GQA,
//     dtypes, q/o layouts), K/V written by the host and by the device append kernel.
//  2. One batched decode step (one layer) for a 13B-shaped layer (40 heads, d 128, MHA, bf16) at dense and
//     ZipVL-kept cache lengths: time and bandwidth.
//  3. `zipvl serve`'s engine on the cuda ops with a tiny random LLaVA-Next (ZipVL): concurrent requests over HTTP
//     vs the same requests one at a time. Prefill is one request at a time in both, so first tokens must match;
//     later tokens come from batched GEMMs whose summation order may differ from batch 1 (reported, not failed).
//   bundle here:  npx esbuild bench/serve-gpu.ts --bundle --platform=node --format=esm --target=node20 --external:webgpu \
//                   --outfile=.gpu/serve-gpu.mjs "--banner:js=import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
//   GPU host:     (node unpacked as in bench/gpu-session.sh; ZIPVL_TEMPLATES=$PWD/templates ZIPVL_NATIVE_ADDON=...)
//                 node .gpu/serve-gpu.mjs [--quick]
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openCuda } from "../src/backends/cuda/executor.ts";
import { benchPaged, checkPagedCase, checkServeAttention } from "../src/backends/cuda/paged-check.ts";
import { parseProgram } from "../src/ir/parse.ts";
import { verifyProgram } from "../src/ir/verify.ts";
import { createCudaOpsWith } from "../src/model/cuda-ops.ts";
import { writeRandomLlavaNext } from "../src/model/hf/index.ts";
import type { PageLayout } from "../src/serve/pool.ts";
import { startServer } from "../src/serve/server.ts";

const quick = process.argv.includes("--quick");
const ctx = openCuda();
const dev = ctx.dev;
const arch = ctx.arch;
console.log(`device: ${dev.info.name} sm_${dev.info.computeCapability.join("")} (${dev.info.smCount} SMs)`);
let seed = Number(process.env.SEED ?? Date.now() % 1e6);
console.log(`seed ${seed}`);
// LCG; the high bits (the low ones cycle with short periods).
const pick = <T>(xs: readonly T[]): T => xs[Math.floor((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 65536) % xs.length]!;
let failures = 0;
let early = 0;
const runs = quick ? 20 : 80;
for (let i = 0; i < runs; i++) {
  const c = {
    dtype: pick(["bf16", "f16", "f32"] as const), d: pick([64, 80, 128]), Hkv: pick([1, 2, 4, 8]), g: pick([1, 2, 4, 5, 8]),
    pageTokens: pick([1, 16, 64]), layout: pick<PageLayout>(["per-layer", "per-head"]),
    lengths: Array.from({ length: pick([1, 2, 5, 9]) }, () => pick([0, 1, 7, 63, 64, 65, 500, 2900, 5000])), seed: pick([1, 2, 3, 4, 5, 6, 7]), qLayout: pick(["bhd", "hbd"] as const),
    ...(pick([0, 1]) === 1 ? { early: { fresh: 1 } } : {}),
  };
  const r = checkPagedCase(dev, arch, c);
  if (c.early) early++;
  if (r.bad.length) {
    failures++;
    console.log(`FAIL ${JSON.stringify(c)} maxErr ${r.maxErr.toExponential(2)} > ${r.tol}: ${r.bad.join("; ")}`);
  }
}
console.log(`paged decode vs reference: ${runs - failures}/${runs} cases pass (${early} of them with the split's early keys behind a PDL append)`);
let attnFails = 0;
const attnRuns = quick ? 6 : 24;
for (let i = 0; i < attnRuns; i++) {
  const c = {
    dtype: pick(["bf16", "f16", "f32"] as const), d: pick([64, 128]), Hkv: pick([1, 2, 8]), g: pick([1, 4, 5]), pageTokens: pick([1, 16]),
    layout: pick<PageLayout>(["per-layer", "per-head"]), layers: pick([1, 3]), lengths: Array.from({ length: pick([1, 3, 7]) }, () => pick([1, 15, 16, 17, 700])), seed: pick([1, 2, 3]),
  };
  const r = checkServeAttention(dev, arch, c);
  if (r.bad.length) {
    attnFails++;
    console.log(`FAIL serving attention ${JSON.stringify(c)} maxErr ${r.maxErr.toExponential(2)}: ${r.bad.join("; ")}`);
  }
}
failures += attnFails;
console.log(`serving attention (beginStep / appendStep / attend on device tensors) vs interpreter: ${attnRuns - attnFails}/${attnRuns} cases pass`);

console.log("one batched decode step, one layer, bf16, 40 heads (MHA) d 128, page 16 tokens:");
for (const len of [2900, 16000, 32000]) {
  for (const kept of [1, 0.367]) {
    for (const batch of quick ? [1, 16] : [1, 8, 32]) {
      const n = Math.max(1, Math.round(len * kept));
      const b = benchPaged(dev, arch, { dtype: "bf16", d: 128, Hkv: 40, g: 1, pageTokens: 16, batch, len: n });
      console.log(`  prompt ${String(len).padStart(6)} ${kept === 1 ? "dense " : "zipvl "} cache ${String(n).padStart(6)} batch ${String(batch).padStart(2)}: ${b.us.toFixed(1).padStart(8)} us  ${b.gbps.toFixed(0).padStart(5)} GB/s`);
    }
  }
}

console.log("zipvl serve on cuda (tiny random LLaVA-Next, ZipVL), 6 concurrent requests vs one at a time:");
const golden = (name: string) => verifyProgram(parseProgram(readFileSync(`test/golden/${name}.final.ir`, "utf8")));
const dir = mkdtempSync(join(tmpdir(), "zipvl-serve-gpu-"));
// Head dim 64: the fused CUDA kernels take 64/80/96/128/256.
writeRandomLlavaNext(dir, { seed: 5, textHidden: 256, textHeads: 4, textKvHeads: 2, textIntermediate: 512 });
const ops = createCudaOpsWith(ctx, "bf16", golden("dense"));
const srv = await startServer({ model: dir, ops, policy: { program: golden("zipvl"), params: {} }, maxBatch: 6, maxQueue: 16, timeoutMs: 120_000, memoryBytes: 2 ** 30 }, { port: 0 });
const img = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAYAAADED76LAAAAgUlEQVR4AQXBMVHFAAAFwSMZFDA06TGDqoh41VXX4ON7wAANPTMIgN0n3t7/trGNbWxjG9vYxlFRUVFRUVFRcf6cr7eKioqKiopenI/P79tLVC5FRUVF5aioqKioqKioOL9+n28VFRUvUbkUlaOioqKioqKi4uTl41ZRUVFRUVH5BznScr5lzeM1AAAAAElFTkSuQmCC";
const bodies = [
  { messages: [{ role: "user", content: "What is in the picture?" }], max_tokens: 8 },
  { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: img } }, { type: "text", text: "Describe it." }] }], max_tokens: 6 },
  { messages: [{ role: "user", content: "Count to five, slowly." }], max_tokens: 10, stream: true },
  { messages: [{ role: "user", content: "The quick brown fox jumps over the lazy dog. ".repeat(8) }], max_tokens: 5 },
  { messages: [{ role: "user", content: "a" }], max_tokens: 12 },
  { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: img } }, { type: "text", text: "Colors?" }] }], max_tokens: 4 },
];
const ask = async (body: object): Promise<{ status: number; text: string; first: string; zipvl: { max_batch: number; kept_ratios: number[]; prefill_ms: number } | undefined }> => {
  const r = await fetch(`http://127.0.0.1:${srv.port}/v1/chat/completions`, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });
  const raw = await r.text();
  if (r.status !== 200) return { status: r.status, text: raw, first: "", zipvl: undefined };
  if (!(body as { stream?: boolean }).stream) {
    const j = JSON.parse(raw);
    return { status: 200, text: j.choices[0].message.content, first: "", zipvl: j.zipvl };
  }
  const chunks = raw.trim().split("\n\n").slice(0, -1).map((e) => JSON.parse(e.replace(/^data: /, "")));
  return { status: 200, text: chunks.map((c) => c.choices[0].delta.content ?? "").join(""), first: "", zipvl: chunks[chunks.length - 1].zipvl };
};
const oneTok = (b: object) => ({ ...b, max_tokens: 1, stream: false });
const together = await Promise.all(bodies.map(ask));
const alone = [];
for (const b of bodies) alone.push(await ask(b));
const firstTogether = await Promise.all(bodies.map((b) => ask(oneTok(b))));
const firstAlone = [];
for (const b of bodies) firstAlone.push(await ask(oneTok(b)));
let same = 0;
for (let i = 0; i < bodies.length; i++) {
  const t = together[i]!, a = alone[i]!;
  if (t.status !== 200 || a.status !== 200) {
    failures++;
    console.log(`  FAIL request ${i}: status ${t.status}/${a.status}: ${t.text.slice(0, 300)} ${a.text.slice(0, 300)}`);
    continue;
  }
  if (firstTogether[i]!.text !== firstAlone[i]!.text) {
    failures++;
    console.log(`  FAIL request ${i}: first token differs under load`);
  }
  if (t.text === a.text) same++;
  console.log(`  request ${i}: batch <= ${t.zipvl!.max_batch}, prefill ${t.zipvl!.prefill_ms.toFixed(1)} ms, kept ${t.zipvl!.kept_ratios.map((x) => x.toFixed(2)).join(" ")}, ${t.text === a.text ? "same answer as alone" : "answer differs from alone after the first token"}`);
}
console.log(`  ${same}/${bodies.length} full answers identical to batch 1; max batch ${srv.scheduler.stats.maxBatch}; pool pages in use after: ${srv.engine.pool.usedPages}`);
// The batch-1 answers in full (a run with ZIPVL_PAGED_SINK=off, the append kernel, must print the same digest).
console.log(`  batch-1 answers digest ${createHash("sha256").update(JSON.stringify(alone.map((a) => a.text))).digest("hex").slice(0, 16)}`);
if (srv.engine.pool.usedPages !== 0) failures++;
await srv.close();
ops.dispose();
process.exit(failures ? 1 : 0);
