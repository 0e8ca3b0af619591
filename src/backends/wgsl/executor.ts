// The webgpu executor: runs a fused program's stages as WGSL compute shaders through Dawn, with host tensors in
// and out like the cpu backend. f32 on the device (f16 storage where the adapter offers shader-f16 and the inputs
// are f16); results are rounded to the input dtype.
import { fail } from "../../diagnostics/diagnostic.ts";
import type { DType } from "../../io/dtype.ts";
import { tensorFrom, type Tensor } from "../../io/tensor.ts";
import type { Program } from "../../ir/ir.ts";
import { bindDecode } from "../../interp/bind.ts";
import { knobValue } from "../../interp/run.ts";
import type { Expr } from "../../expr/ast.ts";
import type { ZvGpu } from "../../runtime/webgpu.ts";
import type { Executor, ExecOptions } from "../backend.ts";
import { paramSlots, slotValues } from "../cstyle.ts";
import { assemblePrefill, fusedNode, planPrefill } from "../plan.ts";
import { decode, probeScores, select, sparseAttention } from "./stages.ts";
import { wgslVariants } from "./variant.ts";
import { webgpuKey } from "../../tune/keys.ts";
import { keptOf, tunedWgslConfig, type RunShape } from "../../tune/lookup.ts";
import type { WgslStage } from "./stages.ts";

/** Tuned config fields of one stage for this adapter and shape ({} without a matching record). */
const tuned = (dev: ZvGpu, stage: WgslStage, entry: "prefill" | "decode", s: RunShape) => ({ config: tunedWgslConfig(webgpuKey(dev.info), stage, entry, s) });

const f32 = (t: Tensor): Float32Array => Float32Array.from(t.data);
const asTensor = (dtype: DType, shape: number[], a: Float32Array): Tensor => tensorFrom(dtype, shape, a);

export async function createWebGpuExecutor(): Promise<Executor> {
  const { sharedWebGpu } = await import("../../runtime/webgpu.ts");
  const dev: ZvGpu = await sharedWebGpu();
  return {
    name: "webgpu",
    async run(p: Program, fname, inputs, opts: ExecOptions) {
      return fname === "prefill" ? prefill(dev, p, inputs, opts) : decodeStep(dev, p, inputs, opts);
    },
  };
}

async function prefill(dev: ZvGpu, p: Program, inputs: ReadonlyMap<string, Tensor>, opts: ExecOptions): Promise<Map<string, Tensor>> {
  const plan = planPrefill(p, inputs, opts, "the webgpu backend");
  const { b, probes, S, perKvHead } = plan;
  const { Hq, Hkv, n, d } = b;
  const dtype = inputs.get("q")!.dtype;
  const v = wgslVariants(p, d);
  const params = Float32Array.from(slotValues(paramSlots(p), b.env));
  const useF16 = dtype === "f16";
  const shape: RunShape = { Hq, Hkv, n, d, dtype, kept: keptOf(plan.select.mode, plan.select.amount, n) };
  const q = f32(inputs.get("q")!);
  const k = f32(inputs.get("k")!);
  const vv = f32(inputs.get("v")!);
  const ps = await probeScores(dev, { q, k, probes, Hq, Hkv, n, d, scale: plan.probe.scale, perKvHead, params, variant: v.probe, useF16, ...tuned(dev, "probe", "prefill", shape) });
  const sl = plan.select;
  const chosen = await select(dev, {
    colmass: ps.colmass, visible: ps.visible, n, S, mode: sl.mode as "tau", amount: sl.amount,
    normalizer: plan.probe.normalizer as "visible", pool: { kind: sl.pool as "none", size: sl.poolSize }, keepFirst: sl.keepFirst, keepLast: sl.keepLast,
    params, variant: v.select, ...tuned(dev, "select", "prefill", shape),
  });
  const att = await sparseAttention(dev, { q, k, v: vv, order: chosen.order, count: chosen.count, Hq, Hkv, n, d, scale: plan.attn.scale, perKvHead, params, variant: v.attention, useF16, ...tuned(dev, "attention", "prefill", shape) });
  return assemblePrefill(plan, {
    scores: ps.colmass, normScores: chosen.normScores, count: chosen.count, order: chosen.order,
    o: asTensor(dtype, [Hq, n, d], att.o), kFull: asTensor(dtype, [Hkv, n, d], att.kCache), vFull: asTensor(dtype, [Hkv, n, d], att.vCache),
  }, "the webgpu backend");
}

async function decodeStep(dev: ZvGpu, p: Program, inputs: ReadonlyMap<string, Tensor>, opts: ExecOptions): Promise<Map<string, Tensor>> {
  const b = bindDecode(p, inputs, opts.params ?? {}, opts.layer ?? 0);
  const nd = fusedNode(p, "decode", "decode_attn", "the webgpu backend");
  wgslVariants(p, b.d); // rejects decode modifiers the shader lacks
  const scale = knobValue(nd.attrs.scale as Expr, b.env, "scale", "scale");
  const dtype = inputs.get("q")!.dtype;
  if (!["f32", "f16", "bf16"].includes(dtype)) fail("ZV2103", [`decode q is ${dtype}`]);
  const r = await decode(dev, { q: f32(inputs.get("q")!), kCache: f32(inputs.get("k_cache")!), vCache: f32(inputs.get("v_cache")!), length: b.c, Hq: b.Hq, Hkv: b.Hkv, d: b.d, scale, useF16: dtype === "f16", ...tuned(dev, "decode", "decode", { Hq: b.Hq, Hkv: b.Hkv, n: b.c, d: b.d, dtype }) });
  return new Map([["o", asTensor(dtype, [b.Hq, 1, b.d], r.o)]]);
}


