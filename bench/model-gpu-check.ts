// GPU-host check of the CUDA ModelOps (src/model/cuda-ops.ts) against the cpu ops (src/model/cpu-ops.ts): every
// method on random shapes with a fresh seed (printed), then the whole LLaVA-Next model (src/model/llava.ts) dense and
// ZipVL on a small random checkpoint with head dim 64 (so the fused kernels run), cuda f32 and bf16 vs cpu.
// Bundled by bench/bundle.mjs into .gpu/model-gpu-check.mjs. Usage (repo root on the GPU host):
//   node .gpu/model-gpu-check.mjs OUT_DIR [--seed=N] [--quick]
// test/gpu/model-ops.test.ts runs checkOps() under vitest with ZIPVL_REAL_GPU=1.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { Rng } from "../src/io/random.ts";
import type { LlavaConfig } from "../src/model/config.ts";
import { createCpuOpsSync } from "../src/model/cpu-ops.ts";
import { openCuda } from "../src/backends/cuda/executor.ts";
import { parseProgram } from "../src/ir/parse.ts";
import { verifyProgram } from "../src/ir/verify.ts";
import type { Program } from "../src/ir/ir.ts";
import { createCudaOpsWith } from "../src/model/cuda-ops.ts";
import { anyresGridShape, numImageTokens } from "../src/model/hf/index.ts";
import { LlavaModel } from "../src/model/llava.ts";
import type { DTensor, ModelDType, ModelOps, Policy } from "../src/model/ops.ts";
import { sourceOf, tinyWeights } from "../test/support/tiny-llava.ts";

export interface CheckRow {
  readonly op: string;
  readonly dtype: ModelDType;
  readonly shape: string;
  readonly err: number; // max |cuda - cpu| / max(1, max |cpu|)
  readonly tol: number;
  readonly ok: boolean;
  readonly note?: string;
}

/** Relative tolerance per dtype: one rounding of the storage type, with slack for f32 accumulation order. */
const TOL: Record<ModelDType, number> = { f32: 2e-4, f16: 4e-3, bf16: 3e-2 };

function maxRel(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Infinity;
  let m = 0, s = 1;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = d; // NaN propagates as Infinity-like failure
    s = Math.max(s, Math.abs(b[i]!));
  }
  return Number.isNaN(m) ? Infinity : m / s;
}

/** Runs every ModelOps method on `cuda` and on the cpu ops with the same (dtype-rounded) inputs. */
export function checkOps(cuda: ModelOps, seed: number, opts: { quick?: boolean; policy?: Policy } = {}): CheckRow[] {
  const cpu = createCpuOpsSync();
  const rng = new Rng(seed);
  const dt = cuda.dtype;
  const rows: CheckRow[] = [];
  const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
  // One host array -> the same values on both backends (the cuda copy's rounding is read back for the cpu one).
  const pair = (shape: number[], scale = 1): [DTensor, DTensor] => {
    const n = shape.reduce((a, b) => a * b, 1);
    const g = cuda.fromF32(shape, Float32Array.from({ length: n }, () => rng.normal(0, scale)));
    return [g, cpu.fromF32(shape, cuda.toF32(g))];
  };
  const check = (op: string, shape: number[] | string, f: (o: ModelOps, a: DTensor[]) => DTensor, ins: [DTensor, DTensor][], tolMul = 1): void => {
    let err = Infinity, note: string | undefined;
    try {
      const g = f(cuda, ins.map((p) => p[0]));
      const c = f(cpu, ins.map((p) => p[1]));
      err = g.shape.join() === c.shape.join() ? maxRel(cuda.toF32(g), cpu.toF32(c)) : Infinity;
      if (g.shape.join() !== c.shape.join()) note = `shape ${g.shape} vs ${c.shape}`;
      cuda.free(g);
    } catch (e) {
      note = String((e as Error).message ?? e).slice(0, 200);
    }
    const tol = TOL[dt] * tolMul;
    rows.push({ op, dtype: dt, shape: typeof shape === "string" ? shape : `[${shape.join(",")}]`, err, tol, ok: err <= tol, ...(note ? { note } : {}) });
  };
  const reps = opts.quick ? 1 : 3;
  for (let r = 0; r < reps; r++) {
    const M = int(1, 300), K = int(1, 700), N = int(1, 500);
    const x = pair([M, K]), w = pair([N, K], 1 / Math.sqrt(K)), b = pair([N]);
    check("linear", [M, N, K], (o, [a, ww]) => o.linear(a!, ww!), [x, w], 2);
    check("linear+bias", [M, N, K], (o, [a, ww, bb]) => o.linear(a!, ww!, bb!), [x, w, b], 2);
    const V = int(2, 1000), H = int(1, 300);
    const table = pair([V, H]);
    const ids = Int32Array.from({ length: int(1, 50) }, () => int(0, V - 1));
    check("embed", [ids.length, H], (o, [t]) => o.embed(t!, ids), [table]);
    const R = int(1, 200), C = int(1, 5200);
    const a = pair([R, C]), bb = pair([R, C]), g = pair([C]), bias = pair([C]);
    check("rmsNorm", [R, C], (o, [xx, ww]) => o.rmsNorm(xx!, ww!, 1e-6), [a, g]);
    check("layerNorm", [R, C], (o, [xx, ww, b2]) => o.layerNorm(xx!, ww!, b2!, 1e-5), [a, g, bias]);
    check("add", [R, C], (o, [p, q]) => o.add(p!, q!), [a, bb]);
    check("siluMul", [R, C], (o, [p, q]) => o.siluMul(p!, q!), [a, bb]);
    for (const kind of ["gelu", "quick_gelu", "gelu_tanh", "silu"] as const) check(`act ${kind}`, [R, C], (o, [p]) => o.act(p!, kind), [a]);
    const s0 = int(0, R - 1), s1 = int(s0, R);
    check("sliceRows", `[${s0}:${s1}, ${C}]`, (o, [p]) => o.sliceRows(p!, s0, s1), [a]);
    const c2 = pair([int(1, 7), C]);
    check("concatRows", [R, C], (o, [p, q]) => o.concatRows([p!, q!, p!]), [a, c2]);
    check("addRows vec", [R, C], (o, [p, q]) => o.addRows(p!, q!), [a, bias]);
    check("addRows mat", [R, C], (o, [p, q]) => o.addRows(p!, q!), [a, bb]);
    const heads = int(1, 8), hd = 2 * int(1, 64), n = int(1, 400);
    const flat = pair([n, heads * hd]);
    check("toHeads", [heads, n, hd], (o, [p]) => o.toHeads(p!, heads), [flat]);
    const hx = pair([heads, n, hd]);
    check("fromHeads", [n, heads * hd], (o, [p]) => o.fromHeads(p!), [hx]);
    const pos = Int32Array.from({ length: n }, (_, i) => i + int(0, 32000));
    const inv = Float32Array.from({ length: hd / 2 }, (_, i) => Math.fround(10000 ** (-(2 * i) / hd)));
    check("rope", [heads, n, hd], (o, [p]) => o.rope(p!, pos, inv, 1), [hx], 4);
    for (const [d, causal] of [[64, true], [128, true], [64, false], [80, false]] as const) {
      const Hkv = int(1, 4), Hq = Hkv * int(1, 4), na = int(1, causal ? 1500 : 600);
      const q = pair([Hq, na, d]), kk = pair([Hkv, na, d]), v = pair([Hkv, na, d]);
      check(`attention ${causal ? "causal" : "full"}`, [Hq, Hkv, na, d], (o, [p, q2, r2]) => o.attention(p!, q2!, r2!, causal), [q, kk, v], 2);
    }
    for (const t of [1, 3]) {
      const Hkv = int(1, 4), Hq = Hkv * int(1, 4), len = int(1, 3000), d = 128;
      const q = pair([Hq, t, d]), kc = pair([Hkv, len, d]), vc = pair([Hkv, len, d]);
      check(`decodeAttention t=${t}`, [Hq, Hkv, len, d], (o, [p, q2, r2]) => o.decodeAttention(p!, q2!, r2!), [q, kc, vc], 2);
    }
    if (opts.policy && dt === "f32") {
      // Selection compares scores to a threshold: borderline tokens may flip between f32 and f64, so only report.
      const Hkv = 2, Hq = 8, na = int(64, 800), d = 64;
      const q = pair([Hq, na, d]), kk = pair([Hkv, na, d]), v = pair([Hkv, na, d]);
      const policy = opts.policy;
      let note = "";
      check("sparsePrefill o", [Hq, Hkv, na, d], (o, [p, q2, r2]) => {
        const r = o.sparsePrefill(policy, 3, p!, q2!, r2!);
        note += `${o.name} kept ${r.count}; `;
        o.free(r.kCache);
        o.free(r.vCache);
        return r.o;
      }, [q, kk, v], 2);
      rows[rows.length - 1] = { ...rows[rows.length - 1]!, note: note + (rows[rows.length - 1]!.note ?? "") };
    }
  }
  return rows;
}

/** A small LLaVA-Next whose heads are 64 wide (the fused kernels' smallest head dim). */
export const SMALL: LlavaConfig = {
  modelType: "llava_next",
  text: {
    hiddenSize: 256, intermediateSize: 512, numLayers: 3, numHeads: 4, numKvHeads: 2, headDim: 64, vocabSize: 320,
    rmsNormEps: 1e-6, ropeTheta: 10000, ropeScaling: null, maxPositionEmbeddings: 4096, tieWordEmbeddings: false,
    hiddenAct: "silu", attentionBias: false, mlpBias: false,
  },
  vision: { hiddenSize: 128, intermediateSize: 256, numLayers: 2, numHeads: 2, imageSize: 56, patchSize: 14, numChannels: 3, layerNormEps: 1e-5, hiddenAct: "quick_gelu" },
  visionFeatureLayer: -2,
  visionFeatureSelectStrategy: "default",
  projectorHiddenAct: "gelu",
  multimodalProjectorBias: true,
  imageTokenIndex: 319,
  imageGridPinpoints: [[112, 112]],
  bosTokenId: 1,
  eosTokenIds: [2],
  padTokenId: null,
  dtype: "f32",
};

export interface ModelRow {
  readonly mode: string;
  readonly dtype: ModelDType;
  readonly logitsErr: number;
  readonly tokensCpu: number[];
  readonly tokensCuda: number[];
  readonly keptCpu: number[];
  readonly keptCuda: number[];
}

/** The whole model on cuda vs cpu: prompt logits at every position, greedy tokens and kept counts per layer. */
export function checkModel(cuda: ModelOps, seed: number, policies: Readonly<Record<string, Policy | undefined>>): ModelRow[] {
  const W = tinyWeights(SMALL, seed);
  const cpuModel = LlavaModel.load(createCpuOpsSync(), SMALL, sourceOf(W), "<small>");
  const gpuModel = LlavaModel.load(cuda, SMALL, sourceOf(W), "<small>");
  const rng = new Rng(seed + 1);
  const imageSize: [number, number] = [60, 100];
  const grid = anyresGridShape(imageSize, SMALL.imageGridPinpoints!, SMALL.vision.imageSize);
  const crops = 1 + grid[0] * grid[1];
  const px = Float32Array.from({ length: crops * 3 * 56 * 56 }, () => rng.normal());
  const image = { pixels: px, shape: [crops, 3, 56, 56] as const, imageSize, grid };
  const nImg = numImageTokens(SMALL, imageSize);
  const ids = Int32Array.from([1, 5, 6, ...Array<number>(nImg).fill(SMALL.imageTokenIndex), ...Array.from({ length: 40 }, () => 3 + Math.floor(rng.uniform() * 300))]);
  const rows: ModelRow[] = [];
  for (const [mode, policy] of Object.entries(policies)) {
    const opts = { maxNewTokens: 6, allLogits: true, ...(policy ? { policy } : {}) };
    const c = cpuModel.generate(ids, image, opts);
    const g = gpuModel.generate(ids, image, opts);
    rows.push({ mode, dtype: cuda.dtype, logitsErr: maxRel(g.allLogits!, c.allLogits!), tokensCpu: c.tokens, tokensCuda: g.tokens, keptCpu: c.layers.map((l) => l.kept), keptCuda: g.layers.map((l) => l.kept) });
  }
  return rows;
}

/** Final IR of a shipped program (the printed golden; no TypeScript front end in the bundle). */
export const golden = (name: string): Program => verifyProgram(parseProgram(readFileSync(`test/golden/${name}.final.ir`, "utf8")));

async function main(): Promise<void> {
  const outDir = process.argv[2] ?? "model-gpu-out";
  const quick = process.argv.includes("--quick");
  const seed = Number(process.argv.find((a) => a.startsWith("--seed="))?.slice(7) ?? Date.now() % 1_000_000_007);
  mkdirSync(outDir, { recursive: true });
  const log = (s: string): void => void process.stdout.write(s + "\n");
  log(`seed ${seed}`);
  const zipvl: Policy = { program: golden("zipvl"), params: { tau: 0.9 } };
  const ctx = openCuda();
  const dense = golden("dense");
  const report: Record<string, unknown> = { seed };
  let failed = 0;
  for (const dtype of ["f32", "bf16"] as const) {
    const cuda = createCudaOpsWith(ctx, dtype, dense);
    if (dtype === "f32") report.device = cuda.ctx.dev.info;
    const t0 = performance.now();
    const rows = checkOps(cuda, seed, { quick, policy: zipvl });
    log(`== ModelOps ${dtype} vs cpu (${(performance.now() - t0).toFixed(0)} ms)`);
    for (const r of rows) {
      if (!r.ok) failed++;
      log(`${r.ok ? "ok  " : "FAIL"} ${r.op.padEnd(22)} ${r.shape.padEnd(22)} err ${r.err.toExponential(2)} tol ${r.tol.toExponential(1)}${r.note ? `  ${r.note}` : ""}`);
    }
    const model = checkModel(cuda, seed, { dense: undefined, zipvl });
    log(`== LLaVA-Next small (h256 d64, 3 layers) ${dtype}: cuda vs cpu`);
    for (const m of model) {
      const same = m.tokensCpu.join() === m.tokensCuda.join();
      const ok = m.logitsErr <= (dtype === "f32" ? 1e-3 : 1e-1);
      if (!ok) failed++;
      log(`${ok ? "ok  " : "FAIL"} ${m.mode.padEnd(6)} logits err ${m.logitsErr.toExponential(2)} tokens ${same ? "same" : `cpu ${m.tokensCpu} cuda ${m.tokensCuda}`} kept cpu ${m.keptCpu} cuda ${m.keptCuda}`);
    }
    report[dtype] = { ops: rows, model };
    cuda.dispose();
  }
  log(failed ? `${failed} FAILED` : "all passed");
  writeFileSync(join(outDir, "model-gpu-check.json"), JSON.stringify(report, (_, v: unknown) => (typeof v === "bigint" ? v.toString() : v === Infinity ? "Infinity" : v), 2));
  process.exitCode = failed ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) void main();
