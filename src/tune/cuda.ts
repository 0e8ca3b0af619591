// The CUDA harness of the tuner: tasks from shapes, parallel nvcc builds with per-kernel failure isolation, timing
// with CUDA events (warm-up, median), and the outputs each stage's candidates are verified on.
import { cpus } from "node:os";
import type { CudaContext } from "../backends/cuda/executor.ts";
import { precompile } from "../backends/cuda/compile.ts";
import { CudaDecode, CudaPrefill } from "../backends/cuda/pipeline.ts";
import { renderKernels, STAGE_OF_OP, type KernelSource, type Stage } from "../backends/cuda/render.ts";
import { defaultConfig, type Config } from "../backends/cuda/schedule.ts";
import { getFunc, type Program } from "../ir/ir.ts";
import { randomTensor } from "../io/random.ts";
import { makeTensor, type Tensor } from "../io/tensor.ts";
import type { DeviceBuffer } from "../runtime/native.ts";
import { cudaSpace, type CudaLimits } from "./space.ts";
import { bucketOf, type TuneShape } from "./shapes.ts";
import { taskConfigId, type Harness, type Outputs, type Task } from "./search.ts";

export const CUDA_STAGES: readonly Stage[] = ["probe", "select", "sparse_attn", "decode"];

/** The stages a program has kernels for. */
export function programStages(p: Program): Stage[] {
  const ops = new Set([...getFunc(p, "prefill").body, ...getFunc(p, "decode").body].map((nd) => nd.op));
  return CUDA_STAGES.filter((s) => Object.entries(STAGE_OF_OP).some(([op, st]) => st === s && ops.has(op)));
}

/** One task per (stage, bucket); the first shape of a bucket is the one measured. */
export function cudaTasks(p: Program, shapes: readonly TuneShape[], L: CudaLimits): Task<Config>[] {
  const tasks = new Map<string, Task<Config>>();
  for (const shape of shapes) {
    for (const stage of programStages(p)) {
      const bucket = bucketOf(stage, shape);
      if (!tasks.has(`${stage} ${bucket}`)) tasks.set(`${stage} ${bucket}`, { stage, bucket, shape, space: cudaSpace(stage, shape, L) });
    }
  }
  return [...tasks.values()];
}

/** Device limits from the open device (the tuner prunes with these). */
export function cudaLimits(ctx: CudaContext): CudaLimits {
  const i = ctx.dev.info;
  const [major, minor] = i.computeCapability;
  // Threads per SM: 2048 on sm_80/sm_90, 1536 on sm_86/sm_89.
  return { name: i.name, arch: ctx.arch, maxSharedPerBlock: i.maxSharedPerBlock, maxSharedPerBlockOptin: i.maxSharedPerBlockOptin, maxSharedPerSM: i.maxSharedPerSM, maxThreadsPerBlock: i.maxThreadsPerBlock, maxThreadsPerSM: major === 8 && minor > 0 ? 1536 : 2048, regsPerSM: 65536 };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Random-looking inputs without drawing billions of normals: a 1M-value random block repeated. */
export function patternTensor(dtype: TuneShape["dtype"], shape: number[], seed: number): Tensor {
  const total = shape.reduce((a, x) => a * x, 1);
  const block = randomTensor(dtype, [Math.min(total, 1 << 20)], seed).data as Float64Array;
  const data = new Float64Array(total);
  for (let off = 0; off < total; off += block.length) data.set(block.subarray(0, Math.min(block.length, total - off)), off);
  return makeTensor(dtype, shape, data);
}

/** Up to `max` evenly spread elements of a 16-bit or 32-bit float buffer, as f32 (NaN bytes stay NaN). */
export function sampleFloats(buf: DeviceBuffer, dtype: TuneShape["dtype"], max = 1 << 20): Float32Array {
  if (dtype === "f32") {
    const all = buf.toArray(Float32Array);
    if (all.length <= max) return all;
    const out = new Float32Array(max);
    for (let j = 0; j < max; j++) out[j] = all[Math.floor((j * all.length) / max)]!;
    return out;
  }
  const u = buf.toArray(Uint16Array);
  const count = Math.min(u.length, max);
  const out = new Float32Array(count);
  const bits = new Uint32Array(out.buffer);
  for (let j = 0; j < count; j++) {
    const h = u[Math.floor((j * u.length) / count)]!;
    if (dtype === "bf16") bits[j] = h << 16;
    else {
      const e = (h >> 10) & 31;
      const m = h & 1023;
      const v = e === 0 ? m * 2 ** -24 : e === 31 ? (m ? NaN : Infinity) : (1 + m / 1024) * 2 ** (e - 15);
      out[j] = h & 0x8000 ? -v : v;
    }
  }
  return out;
}

export interface CudaHarnessOptions {
  readonly warmup: number;
  readonly iters: number;
  /** Parallel nvcc processes (default: the host's cores). */
  readonly jobs?: number;
}

export function cudaHarness(ctx: CudaContext, p: Program, o: CudaHarnessOptions): Harness<Config> {
  const fallbacks = (s: TuneShape): Record<Stage, Config> =>
    Object.fromEntries(CUDA_STAGES.map((st) => [st, defaultConfig(st, s.dtype, s.d, ctx.arch)])) as Record<Stage, Config>;
  const configsFor = (t: Task<Config>, c: Config): Record<Stage, Config> => ({ ...fallbacks(t.shape), [t.stage]: c });
  const ratioParam = p.params.some((x) => x.name === "ratio");
  let inputs: { id: string; m: Map<string, Tensor> } | null = null;
  const inputsFor = (t: Task<Config>): Map<string, Tensor> => {
    const s = t.shape;
    const Hkv = s.Hq / s.gqa;
    const decode = t.stage === "decode";
    const c = decode ? Math.max(1, Math.round(s.kept * s.n)) : s.n;
    const id = `${decode} ${s.dtype} ${s.Hq} ${Hkv} ${c} ${s.d}`;
    if (inputs?.id !== id) {
      inputs = null; // let the previous tensors go before making the next
      const m = decode
        ? new Map([["q", patternTensor(s.dtype, [s.Hq, 1, s.d], 1)], ["k_cache", patternTensor(s.dtype, [Hkv, c, s.d], 2)], ["v_cache", patternTensor(s.dtype, [Hkv, c, s.d], 3)]])
        : new Map([["q", patternTensor(s.dtype, [s.Hq, s.n, s.d], 1)], ["k", patternTensor(s.dtype, [Hkv, s.n, s.d], 2)], ["v", patternTensor(s.dtype, [Hkv, s.n, s.d], 3)]]);
      inputs = { id, m };
    }
    return inputs.m;
  };
  return {
    timed: `CUDA events; the whole prefill layer (other stages at their fallback) or decode step; ${o.warmup} warm-up, median of ${o.iters}`,
    tolerance: (t) => (t.shape.dtype === "bf16" ? 2 ** -6 : t.shape.dtype === "f16" ? 2 ** -9 : 1e-5),
    async prepare(tasks) {
      // Render every candidate's kernel set; build each distinct source once, in parallel, isolating failures.
      const byId = new Map<string, KernelSource[]>();
      const sources = new Map<string, KernelSource>();
      const failures = new Map<string, string>();
      for (const t of tasks) {
        for (const c of t.space.configs) {
          try {
            const ks = renderKernels(p, t.shape.dtype, t.shape.d, ctx.arch, configsFor(t, c));
            byId.set(taskConfigId(t, c), ks);
            for (const k of ks) sources.set(k.source, k);
          } catch (e) {
            failures.set(taskConfigId(t, c), `render: ${(e as Error).message}`);
          }
        }
      }
      const bad = new Map<string, string>();
      const todo = [...sources.values()];
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < todo.length) {
          const k = todo[next++]!;
          try {
            await precompile([{ k, arch: ctx.arch }], 1);
          } catch (e) {
            bad.set(k.source, `nvcc: ${String((e as { stderr?: string }).stderr ?? (e as Error).message).split("\n").find((l) => /error/.test(l)) ?? (e as Error).message}`.slice(0, 300));
          }
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, o.jobs ?? cpus().length) }, worker));
      for (const [id, ks] of byId) {
        const k = ks.find((x) => bad.has(x.source));
        if (k) failures.set(id, `${k.name}: ${bad.get(k.source)}`);
      }
      return failures;
    },
    async measure(t, c) {
      const ks = ctx.kernels(p, t.shape.dtype, t.shape.d, configsFor(t, c));
      const m = inputsFor(t);
      const stream = ctx.dev.createStream({ nonBlocking: true });
      const run = t.stage === "decode" ? new CudaDecode(ctx.dev, p, m, ks, {}, stream) : new CudaPrefill(ctx.dev, p, m, ks, { params: ratioParam ? { ratio: t.shape.kept } : {} }, stream);
      try {
        run.poison();
        ctx.dev.synchronize();
        run.enqueue();
        ctx.dev.synchronize();
        const outputs = stageOutputs(t.stage as Stage, run, t.shape.dtype);
        for (let i = 0; i < o.warmup; i++) run.enqueue();
        const ms = median(Array.from({ length: o.iters }, () => ctx.dev.time(() => run.enqueue(), stream)));
        return { ms, outputs };
      } finally {
        run.free();
        stream.destroy();
      }
    },
  };
}

/** What a stage's config can change, so what its candidates are compared on. */
function stageOutputs(stage: Stage, run: CudaPrefill | CudaDecode, dtype: TuneShape["dtype"]): Outputs {
  if (run instanceof CudaDecode) return new Map([["o", sampleFloats(run.outputBuffer(), dtype)]]);
  const b = run.outputBuffers();
  const f32 = (name: string): Float32Array => b.get(name)!.toArray(Float32Array);
  const i32 = (name: string): Int32Array => b.get(name)!.toArray(Int32Array);
  switch (stage) {
    case "probe": // column mass and the visible counts behind norm_scores
      return new Map([["scores", f32("scores")], ["norm_scores", f32("norm_scores")]]);
    case "select":
      return new Map<string, Float32Array | Int32Array>([["norm_scores", f32("norm_scores")], ["count", i32("count")], ["order", i32("order")]]);
    default:
      return new Map([["o", sampleFloats(b.get("o")!, dtype)], ["k_cache", sampleFloats(b.get("k_cache")!, dtype)], ["v_cache", sampleFloats(b.get("v_cache")!, dtype)]]);
  }
}

