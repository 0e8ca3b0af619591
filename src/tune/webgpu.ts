// The WebGPU harness of the tuner: WGSL workgroup sizes and tiles per stage, pruned with the adapter's limits,
// pipelines created concurrently up front, each stage timed on the host clock (Dawn has no timestamp queries
// everywhere: a time covers upload, dispatch and readback of that stage) and verified against chooseConfig's.
import { planPrefill } from "../backends/plan.ts";
import { chooseConfig, decode, makeContext, probeScores, renderWgsl, select, sparseAttention, STAGE_BINDINGS, STAGE_ENTRIES, type WgslConfig, type WgslStage } from "../backends/wgsl/stages.ts";
import { wgslVariants } from "../backends/wgsl/variant.ts";
import { paramSlots, slotValues } from "../backends/cstyle.ts";
import { fusedNode } from "../backends/plan.ts";
import { knobValue } from "../interp/run.ts";
import type { Expr } from "../expr/ast.ts";
import type { Program } from "../ir/ir.ts";
import type { ZvGpu } from "../runtime/webgpu.ts";
import { patternTensor } from "./cuda.ts";
import { bucketOf, type TuneShape } from "./shapes.ts";
import { taskConfigId, type Harness, type Outputs, type Task } from "./search.ts";
import { WGSL_STAGES, wgslSpace } from "./space.ts";
import type { Stage } from "../backends/cuda/render.ts";

type WConfig = Partial<WgslConfig>;
const BUCKET_STAGE: Record<WgslStage, Stage> = { probe: "probe", select: "select", attention: "sparse_attn", decode: "decode" };

export function wgslTasks(dev: ZvGpu, shapes: readonly TuneShape[]): Task<WConfig>[] {
  const tasks = new Map<string, Task<WConfig>>();
  for (const shape of shapes) {
    for (const stage of WGSL_STAGES) {
      const bucket = bucketOf(BUCKET_STAGE[stage], shape);
      const fallback = chooseConfig(dev.limits, stage === "select" ? 0 : shape.d, dev.info.isSoftware);
      if (!tasks.has(`${stage} ${bucket}`)) tasks.set(`${stage} ${bucket}`, { stage, bucket, shape, space: wgslSpace(stage, shape.d, dev.limits, fallback) });
    }
  }
  return [...tasks.values()];
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export function wgslHarness(dev: ZvGpu, p: Program, o: { warmup: number; iters: number }): Harness<WConfig> {
  const ratioParam = p.params.some((x) => x.name === "ratio");
  /** Per shape: inputs and the fallback's upstream results (probe -> select -> attention), computed once. */
  const memo = new Map<string, Promise<Record<string, unknown>>>();
  const upstream = (s: TuneShape): Promise<Record<string, unknown>> => {
    const id = JSON.stringify(s);
    let m = memo.get(id);
    if (!m) {
      m = (async () => {
        const Hkv = s.Hq / s.gqa;
        const tq = patternTensor("f32", [s.Hq, s.n, s.d], 1);
        const tk = patternTensor("f32", [Hkv, s.n, s.d], 2);
        const tv = patternTensor("f32", [Hkv, s.n, s.d], 3);
        const [q, k, v] = [tq, tk, tv].map((x) => Float32Array.from(x.data)) as [Float32Array, Float32Array, Float32Array];
        const inputs = new Map([["q", tq], ["k", tk], ["v", tv]]);
        const plan = planPrefill(p, inputs, { params: ratioParam ? { ratio: s.kept } : {} }, "the webgpu backend");
        const variants = wgslVariants(p, s.d);
        const params = Float32Array.from(slotValues(paramSlots(p), plan.b.env));
        const probeArgs = { q, k, probes: plan.probes, Hq: s.Hq, Hkv, n: s.n, d: s.d, scale: plan.probe.scale, perKvHead: plan.perKvHead, params, variant: variants.probe };
        const ps = await probeScores(dev, probeArgs);
        const sl = plan.select;
        const selectArgs = {
          colmass: ps.colmass, visible: ps.visible, n: s.n, S: plan.S, mode: sl.mode as "tau", amount: sl.amount, normalizer: plan.probe.normalizer as "visible",
          pool: { kind: sl.pool as "none", size: sl.poolSize }, keepFirst: sl.keepFirst, keepLast: sl.keepLast, params, variant: variants.select,
        };
        const chosen = await select(dev, selectArgs);
        const attnArgs = { q, k, v, order: chosen.order, count: chosen.count, Hq: s.Hq, Hkv, n: s.n, d: s.d, scale: plan.attn.scale, perKvHead: plan.perKvHead, params, variant: variants.attention };
        const c = Math.max(1, Math.round(s.kept * s.n));
        const dn = fusedNode(p, "decode", "decode_attn", "the webgpu backend");
        const decodeArgs = { q: q.subarray(0, s.Hq * s.d), kCache: k.subarray(0, Hkv * c * s.d), vCache: v.subarray(0, Hkv * c * s.d), length: c, Hq: s.Hq, Hkv, d: s.d, scale: knobValue(dn.attrs.scale as Expr, { ...plan.b.env, n: c }, "scale", "scale") };
        return { probeArgs, selectArgs, attnArgs, decodeArgs, variants };
      })();
      memo.set(id, m);
    }
    return m;
  };
  const runStage = async (t: Task<WConfig>, config: WConfig): Promise<Outputs> => {
    const u = await upstream(t.shape);
    switch (t.stage as WgslStage) {
      case "probe": {
        const r = await probeScores(dev, { ...(u.probeArgs as Parameters<typeof probeScores>[1]), config });
        return new Map([["scores", r.colmass], ["visible", r.visible]]);
      }
      case "select": {
        const r = await select(dev, { ...(u.selectArgs as Parameters<typeof select>[1]), config });
        return new Map<string, Float32Array | Int32Array>([["norm_scores", r.normScores], ["count", r.count], ["order", r.order]]);
      }
      case "attention": {
        const r = await sparseAttention(dev, { ...(u.attnArgs as Parameters<typeof sparseAttention>[1]), config });
        return new Map([["o", r.o], ["k_cache", r.kCache], ["v_cache", r.vCache]]);
      }
      case "decode":
        return new Map([["o", (await decode(dev, { ...(u.decodeArgs as Parameters<typeof decode>[1]), config })).o]]);
    }
  };
  return {
    timed: `host clock around one stage call (upload, dispatch, readback); ${o.warmup} warm-up, median of ${o.iters}`,
    tolerance: () => 2e-4,
    async prepare(tasks) {
      const failures = new Map<string, string>();
      await Promise.all(tasks.flatMap((t) => t.space.configs.map(async (c) => {
        try {
          const u = await upstream(t.shape);
          const stage = t.stage as WgslStage;
          const variants = u.variants as ReturnType<typeof wgslVariants>;
          const variant = stage === "probe" ? variants.probe : stage === "select" ? variants.select : stage === "attention" ? variants.attention : undefined;
          const ctx = makeContext(dev, { headDim: stage === "select" ? 0 : t.shape.d, config: c, ...(variant ? { variant } : {}) });
          const code = renderWgsl(stage, ctx);
          await Promise.all(STAGE_ENTRIES[stage].map((e) => dev.pipeline(code, e, STAGE_BINDINGS[stage])));
        } catch (e) {
          failures.set(taskConfigId(t, c), String((e as Error).message).split("\n")[0]!.slice(0, 300));
        }
      })));
      return failures;
    },
    async measure(t, c) {
      const outputs = await runStage(t, c);
      for (let i = 0; i < o.warmup; i++) await runStage(t, c);
      const times: number[] = [];
      for (let i = 0; i < o.iters; i++) {
        const t0 = performance.now();
        await runStage(t, c);
        times.push(performance.now() - t0);
      }
      return { ms: median(times), outputs };
    },
  };
}
