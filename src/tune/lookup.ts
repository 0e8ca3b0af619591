// Config selection at run time: the tuned config of each stage for the running shape's bucket, when the record for
// this GPU (and toolchain, driver, library) has one. Anything else gets the fallback config.
import type { Stage } from "../backends/cuda/render.ts";
import type { Config } from "../backends/cuda/schedule.ts";
import type { WgslConfig, WgslStage } from "../backends/wgsl/stages.ts";
import type { RecordKey } from "./records.ts";
import { lookup } from "./records.ts";
import { bucketOf, DEFAULT_KEPT, type TuneDType, type TuneShape } from "./shapes.ts";
import { WGSL_FIELDS } from "./space.ts";

export interface RunShape {
  readonly Hq: number;
  readonly Hkv: number;
  /** Prompt length (prefill) or cache length (decode). */
  readonly n: number;
  readonly d: number;
  readonly dtype: string;
  /** Kept fraction when the selection fixes it (ratio, budget, all); undefined for tau (device-side count). */
  readonly kept?: number | undefined;
}

/** The kept fraction a selection implies before it runs, or undefined when only the device knows it. */
export function keptOf(mode: string, amount: number, n: number): number | undefined {
  return mode === "ratio" ? Math.min(1, amount) : mode === "budget" ? Math.min(1, amount / Math.max(1, n)) : mode === "all" ? 1 : undefined;
}

const shapeOf = (s: RunShape, entry: "prefill" | "decode"): TuneShape => ({
  n: s.n, d: s.d, Hq: s.Hq, gqa: Math.max(1, Math.round(s.Hq / Math.max(1, s.Hkv))), dtype: s.dtype as TuneDType,
  // bucketOf("decode") reads the cache as round(kept * n): a decode shape's n is already the cache.
  kept: entry === "decode" ? 1 : (s.kept ?? DEFAULT_KEPT),
});

/** Tuned CUDA configs for a prefill (probe, select, sparse_attn) or decode step; stages without a record are absent. */
export function tunedCudaConfigs(key: RecordKey, entry: "prefill" | "decode", s: RunShape): Partial<Record<Stage, Config>> {
  const shape = shapeOf(s, entry);
  const stages: Stage[] = entry === "prefill" ? ["probe", "select", "sparse_attn"] : ["decode"];
  const out: Partial<Record<Stage, Config>> = {};
  for (const st of stages) {
    const c = lookup(key, st, bucketOf(st, shape));
    if (c) out[st] = c as Config;
  }
  return out;
}

/** WGSL stage names map onto the CUDA bucket rules (attention = sparse_attn). */
const BUCKET_STAGE: Record<WgslStage, Stage> = { probe: "probe", select: "select", attention: "sparse_attn", decode: "decode" };

/** The tuned WGSL config fields of one stage (merged over chooseConfig's by the caller), or {}. */
export function tunedWgslConfig(key: RecordKey, stage: WgslStage, entry: "prefill" | "decode", s: RunShape): Partial<WgslConfig> {
  const c = lookup(key, stage, bucketOf(BUCKET_STAGE[stage], shapeOf(s, entry)));
  if (!c) return {};
  return Object.fromEntries(WGSL_FIELDS[stage].filter((f) => c[f] !== undefined).map((f) => [f, c[f]])) as Partial<WgslConfig>;
}
