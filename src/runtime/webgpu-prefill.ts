// GPU-resident ZipVL prefill chain (probe -> select -> sparse attention [-> decode]) whose buffers stay on the device
// between stages: the kept count is produced and consumed on the GPU, never read back, so stage times are the
// device's own. Plus a bench helper that times sparse attention alone and reports TFLOP/s.
import {
  type AttnBuffers, decodeSplits, elemDecode, elemOutput, elemUpload, expectLength, makeContext, opt, planAttention,
  planDecode, planProbe, planSelect, type SelectOptions, type StagePlan, type WgslConfig, type WgslStageOptions,
} from "../backends/wgsl/stages.ts";
import { toF16 } from "./webgpu-data.ts";
import type { PassTimer, ZvGpu } from "./webgpu.ts";

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
export interface PrefillChainSpec extends WgslStageOptions {
  Hq: number; Hkv: number; n: number; d: number; m: number; scale: number; perKvHead: boolean;
  select: SelectOptions;
  /** Also run one decode step over the pruned cache (length = count[0] read on the device). Per-layer sets only. */
  decode?: boolean;
}
export interface PrefillChainData { q: Float32Array; k: Float32Array; v: Float32Array; probes: Int32Array; params?: Float32Array; decodeQ?: Float32Array }
export interface PrefillChainOutputs {
  colmass: Float32Array; visible: Float32Array; normScores: Float32Array; count: Int32Array; order: Int32Array;
  o: Float32Array; kCache: Float32Array; vCache: Float32Array; decodeO: Float32Array | null;
}
export interface PrefillChain {
  readonly stages: string[];
  upload(data: PrefillChainData): void;
  /** One submission, one compute pass per stage; with a timer each pass gets begin/end timestamps. */
  run(timer?: PassTimer | null): Promise<void>;
  /** Median ms per stage over `reps` runs (timestamp queries; wall clock per run where the device has none). */
  time(reps: number): Promise<Record<string, number>>;
  read(): Promise<PrefillChainOutputs>;
  destroy(): void;
}

export async function createPrefillChain(dev: ZvGpu, s: PrefillChainSpec): Promise<PrefillChain> {
  if (s.decode && s.perKvHead) throw new RangeError("decode in the chain needs one selection set (per-layer)");
  const ctx = makeContext(dev, { headDim: s.d, ...opt(s) });
  const S = s.perKvHead ? s.Hkv : 1;
  const eb = ctx.useF16 ? 2 : 4;
  const qLen = s.Hq * s.n * s.d, kvLen = s.Hkv * s.n * s.d;
  const splits = decodeSplits(s.n, s.Hq, ctx.config.decodeWorkgroup);
  const B = {
    params: dev.buffer(4 * 64, "P"), q: dev.buffer(eb * qLen, "q"), k: dev.buffer(eb * kvLen, "k"), v: dev.buffer(eb * kvLen, "v"),
    probes: dev.buffer(4 * s.m, "probes"), colmass: dev.buffer(4 * S * s.n, "colmass"), visible: dev.buffer(4 * s.n, "visible"),
    rowstat: dev.buffer(8 * s.Hq * s.m, "rowstat"), normScores: dev.buffer(4 * S * s.n, "norm_scores"), count: dev.buffer(4 * S, "count"),
    order: dev.buffer(4 * S * s.n, "order"), o: dev.buffer(eb * qLen, "o"), kCache: dev.buffer(eb * kvLen, "k_cache"),
    vCache: dev.buffer(eb * kvLen, "v_cache"), dq: dev.buffer(eb * s.Hq * s.d, "decode.q"), dO: dev.buffer(eb * s.Hq * s.d, "decode.o"),
    partO: dev.buffer(4 * s.Hq * splits * s.d, "part_o"), partMl: dev.buffer(8 * s.Hq * splits, "part_ml"),
  };
  const plans: [string, StagePlan][] = [
    ["probe", await planProbe(dev, ctx, s, B)],
    ["select", await planSelect(dev, ctx, s.n, S, s.select, B)],
    ["attention", await planAttention(dev, ctx, s, B)],
  ];
  if (s.decode) {
    const db = { params: B.params, q: B.dq, kCache: B.kCache, vCache: B.vCache, o: B.dO, partO: B.partO, partMl: B.partMl, length: B.count };
    plans.push(["decode", await planDecode(dev, ctx, { Hq: s.Hq, Hkv: s.Hkv, capacity: s.n, scale: s.scale, splits }, db)]);
  }
  const put = (b: GPUBuffer, a: Float32Array | Int32Array, elem: boolean): void =>
    dev.write(b, elem && ctx.useF16 ? toF16(a as Float32Array) : a);
  const run = (timer?: PassTimer | null): Promise<void> =>
    dev.checked("prefill chain", async () => {
      const enc = dev.device.createCommandEncoder();
      plans.forEach(([, p], i) => {
        const pass = enc.beginComputePass(timer ? { timestampWrites: timer.writes(i) } : {});
        p.record(pass);
        pass.end();
      });
      if (timer) timer.resolve(enc);
      dev.device.queue.submit([enc.finish()]);
      await dev.device.queue.onSubmittedWorkDone();
    });
  const stages = plans.map(([name]) => name);
  return {
    stages,
    upload(d) {
      expectLength("q", d.q, qLen);
      expectLength("k", d.k, kvLen);
      expectLength("v", d.v, kvLen);
      expectLength("probes", d.probes, s.m);
      put(B.q, d.q, true); put(B.k, d.k, true); put(B.v, d.v, true); put(B.probes, d.probes, false);
      if (d.params && d.params.length > 0) put(B.params, d.params.subarray(0, 64), false);
      if (d.decodeQ) put(B.dq, d.decodeQ, true);
    },
    run,
    async time(reps) {
      const timer = dev.timer(stages.length);
      const samples: number[][] = [];
      for (let r = 0; r < reps; r++) {
        const t0 = performance.now();
        await run(timer);
        const wall = performance.now() - t0;
        samples.push(timer ? await timer.ms() : stages.map((_, i) => (i === 0 ? wall : 0)));
      }
      timer?.destroy();
      const out: Record<string, number> = {};
      stages.forEach((n, i) => (out[n] = median(samples.map((x) => x[i] ?? 0))));
      out.total = median(samples.map((x) => x.reduce((a, b) => a + b, 0)));
      return out;
    },
    async read() {
      const bufs = [B.colmass, B.visible, B.normScores, B.count, B.order, B.o, B.kCache, B.vCache, B.dO];
      const [cm, vis, ns, cnt, ord, o, kc, vc, dO] = await dev.read(bufs);
      return {
        colmass: new Float32Array(cm!, 0, S * s.n), visible: new Float32Array(vis!, 0, s.n),
        normScores: new Float32Array(ns!, 0, S * s.n), count: new Int32Array(cnt!, 0, S), order: new Int32Array(ord!, 0, S * s.n),
        o: elemDecode(ctx, o!, qLen), kCache: elemDecode(ctx, kc!, kvLen), vCache: elemDecode(ctx, vc!, kvLen),
        decodeO: s.decode ? elemDecode(ctx, dO!, s.Hq * s.d) : null,
      };
    },
    destroy() {
      for (const b of Object.values(B)) b.destroy();
    },
  };
}

export interface BenchSparseOptions { n: number; kept: number; d: number; Hq?: number; Hkv?: number; reps?: number; useF16?: boolean; config?: Partial<WgslConfig> }
export interface BenchSparseResult { ms: number; flops: number; tflops: number; device: string; software: boolean; useF16: boolean; config: WgslConfig }
/**
 * Times token-sparse attention (causal, `kept` of `n` tokens, evenly spread) with timestamp queries; median of reps.
 * FLOPs count the causal work actually done: 4 * d * Hq * kept * (kept + 1) / 2 (QK^T and PV, 2 per MAC).
 */
export async function benchSparseAttention(dev: ZvGpu, o: BenchSparseOptions): Promise<BenchSparseResult> {
  const Hq = o.Hq ?? 32, Hkv = o.Hkv ?? 8, reps = o.reps ?? 20, { n, kept, d } = o;
  const ctx = makeContext(dev, { headDim: d, ...opt(o) });
  let seed = 12345;
  const rnd = (len: number): Float32Array => {
    const a = new Float32Array(len);
    for (let i = 0; i < len; i++) a[i] = ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
    return a;
  };
  const order = new Int32Array(n);
  const picked = new Uint8Array(n);
  for (let i = 0; i < kept; i++) picked[Math.floor((i * n) / kept)] = 1;
  let w = 0;
  for (let j = 0; j < n; j++) if (picked[j]) order[w++] = j;
  for (let j = 0; j < n; j++) if (!picked[j]) order[w++] = j;
  const b: AttnBuffers = {
    params: dev.buffer(new Float32Array(1), "P"), q: elemUpload(dev, ctx, rnd(Hq * n * d), "q"), k: elemUpload(dev, ctx, rnd(Hkv * n * d), "k"),
    v: elemUpload(dev, ctx, rnd(Hkv * n * d), "v"), o: elemOutput(dev, ctx, Hq * n * d, "o"),
    kCache: elemOutput(dev, ctx, Hkv * n * d, "k_cache"), vCache: elemOutput(dev, ctx, Hkv * n * d, "v_cache"),
    count: dev.buffer(new Int32Array([kept]), "count"), order: dev.buffer(order, "order"),
  };
  const p = await planAttention(dev, ctx, { Hq, Hkv, n, scale: 1 / Math.sqrt(d), perKvHead: false }, b);
  const timer = dev.timer(1);
  const times: number[] = [];
  try {
    for (let r = 0; r < reps + 2; r++) {
      const t0 = performance.now();
      await dev.checked("benchSparseAttention", async () => {
        const enc = dev.device.createCommandEncoder();
        const pass = enc.beginComputePass(timer ? { timestampWrites: timer.writes(0) } : {});
        p.record(pass);
        pass.end();
        if (timer) timer.resolve(enc);
        dev.device.queue.submit([enc.finish()]);
        await dev.device.queue.onSubmittedWorkDone();
      });
      const wall = performance.now() - t0;
      if (r >= 2) times.push(timer ? ((await timer.ms())[0] ?? wall) : wall); // 2 warm-up runs
    }
  } finally {
    timer?.destroy();
    for (const x of Object.values(b)) x.destroy();
  }
  const ms = median(times);
  const flops = 4 * d * Hq * (kept * (kept + 1)) / 2;
  return { ms, flops, tflops: flops / (ms * 1e-3) / 1e12, device: dev.info.description, software: dev.info.isSoftware, useF16: ctx.useF16, config: ctx.config };
}
