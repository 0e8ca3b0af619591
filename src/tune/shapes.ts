// Shapes the tuner measures and the buckets its records are keyed by. A bucket names only the dimensions a stage's
// speed depends on (select ignores the head dim; decode keys on the cache length, not the prompt): the other
// fields read "*", so one record serves every shape that falls in it.
import type { Stage } from "../backends/cuda/render.ts";
import { tuneFail } from "./errors.ts";

export type TuneDType = "f32" | "f16" | "bf16";
export interface TuneShape {
  readonly n: number;
  /** Kept fraction of the prefill (decode: the cache holds round(kept * n) tokens). */
  readonly kept: number;
  readonly d: number;
  /** Query heads per KV head. */
  readonly gqa: number;
  readonly dtype: TuneDType;
  /** Query heads. */
  readonly Hq: number;
}

/** Upper bounds of the n buckets (tokens) and of the kept buckets (fraction). */
export const N_BUCKETS = [4096, 16384, 65536] as const;
export const KEPT_BUCKETS = [0.25, 0.5, 1] as const;
/** What the runtime assumes when the kept count is only known on the device (tau selection). */
export const DEFAULT_KEPT = 0.3;

export const nBucket = (n: number): string => {
  const b = N_BUCKETS.find((x) => n <= x);
  return b === undefined ? "n>64k" : `n<=${b / 1024}k`;
};
export const keptBucket = (k: number): string => `k<=${Math.round(100 * (KEPT_BUCKETS.find((x) => k <= x + 1e-9) ?? 1))}%`;

/** The bucket of a shape for one stage ("*" for the dimensions the stage does not depend on). */
export function bucketOf(stage: Stage, s: TuneShape): string {
  const cache = Math.max(1, Math.round(s.kept * s.n));
  switch (stage) {
    case "probe":
      return `${s.dtype}/d${s.d}/g${s.gqa}/${nBucket(s.n)}/*`;
    case "select":
      return `*/*/*/${nBucket(s.n)}/*`;
    case "sparse_attn":
      return `${s.dtype}/d${s.d}/g${s.gqa}/${nBucket(s.n)}/${keptBucket(s.kept)}`;
    case "decode":
      return `${s.dtype}/d${s.d}/g${s.gqa}/cache-${nBucket(cache)}/*`;
  }
}

export const SHAPE_FIELDS = ["n", "kept", "d", "gqa", "dtype", "H"] as const;
export const DEFAULT_GPU_SHAPES = "n=2880,8192,32768:kept=0.3:d=128:gqa=1,8:dtype=bf16:H=40";

/**
 * `--shapes n=2880,32768:kept=0.1,0.3:d=64,128:gqa=1,8:dtype=bf16:H=40`: the cross product of the lists; missing
 * fields take the defaults of DEFAULT_GPU_SHAPES.
 */
export function parseShapes(spec: string = DEFAULT_GPU_SHAPES): TuneShape[] {
  const lists: Record<string, string[]> = Object.fromEntries(DEFAULT_GPU_SHAPES.split(":").map((p) => [p.split("=")[0]!, p.split("=")[1]!.split(",")]));
  for (const part of spec.split(":").filter((x) => x.trim())) {
    const m = /^\s*(\w+)\s*=\s*([^=]+)$/.exec(part);
    if (!m) tuneFail("ZV8001", ["--shapes", `expected FIELD=V1,V2 separated by ':', got '${part}'`]);
    if (!(SHAPE_FIELDS as readonly string[]).includes(m![1]!)) tuneFail("ZV8007", [m![1]!, SHAPE_FIELDS.join(", ")]);
    lists[m![1]!] = m![2]!.split(",").map((x) => x.trim());
  }
  const num = (field: string, v: string, ok: (x: number) => boolean): number => {
    const x = Number(v);
    if (v === "" || !Number.isFinite(x) || !ok(x)) tuneFail("ZV8001", ["--shapes", `bad ${field} '${v}'`]);
    return x;
  };
  const out: TuneShape[] = [];
  for (const n of lists.n!) for (const kept of lists.kept!) for (const d of lists.d!) for (const gqa of lists.gqa!) for (const dtype of lists.dtype!) for (const H of lists.H!) {
    if (!["f32", "f16", "bf16"].includes(dtype)) tuneFail("ZV8001", ["--shapes", `bad dtype '${dtype}' (f32, f16 or bf16)`]);
    const Hq = num("H", H, (x) => Number.isInteger(x) && x >= 1);
    const g = num("gqa", gqa, (x) => Number.isInteger(x) && x >= 1 && Hq % x === 0);
    out.push({
      n: num("n", n, (x) => Number.isInteger(x) && x >= 1), kept: num("kept", kept, (x) => x > 0 && x <= 1),
      d: num("d", d, (x) => Number.isInteger(x) && x >= 16 && x % 16 === 0), gqa: g, dtype: dtype as TuneDType, Hq,
    });
  }
  return out;
}
