// The schedule of each CUDA kernel: config (data, never code) and the launch geometry it implies. The templates
// document the same formulas; keeping them here lets the autotuner vary configs and the launcher follow.
import type { CudaDType, Stage } from "./render.ts";

export type Config = Readonly<Record<string, number>>;

/** The wgmma path (sm_90a, 16-bit, d a multiple of 64) or mma.sync; `wgmma: 1 | -1` pins the kernel's choice. */
export function defaultConfig(stage: Stage, dtype: CudaDType, d: number, arch: 80 | 90 = 90): Config {
  switch (stage) {
    case "probe":
      // sm_80 gets no second CTA per SM: at 128 registers its probe kernel spills 8 bytes (ptxas), at 1 it does not.
      return { warps: dtype !== "f32" && d <= 128 ? 8 : 4, mTiles: 1, nTiles: d > 128 ? 1 : 2, rowsF32: 16, minBlocks: arch === 80 ? 1 : 2 };
    case "select":
      return { threads: 1024 };
    case "sparse_attn":
      if (dtype === "f32") return { BM: 64, BN: 64, warps: 4, minBlocks: 1, wgmma: -1 };
      if (arch === 90 && d % 64 === 0) return { BM: 128, BN: 64, warps: 8, minBlocks: d <= 128 ? 2 : 1, wgmma: 1 };
      return { BM: d <= 128 ? 128 : 64, BN: 64, warps: 4, minBlocks: d <= 64 ? 2 : 1, wgmma: -1 };
    case "decode":
      // fuse absent = 1: the last CTA merges the splits where decodeFused allows. mma absent = 0: the tensor-core
      // GQA pass (decodeMma) is 2.2x faster on an H200 (harness: 143 -> 65 us at cache 32768, Hkv 5) and passes the
      // harness, but the H200 tuner saw 13 of 17 SIMT configs disagree with it at cache ~10k (GQA 8): until that is
      // settled it is a tuner candidate, verified against this SIMT fallback, not the default.
      return { warps: 4 };
  }
}

export interface Geometry {
  readonly grid: readonly [number, number, number];
  readonly block: readonly [number, number, number];
  readonly smem: number;
}

const cdiv = (a: number, b: number): number => Math.ceil(a / b);

export interface Dims {
  readonly Hq: number;
  readonly Hkv: number;
  readonly n: number;
  readonly d: number;
  readonly m: number; // probe rows
  readonly S: number; // selection sets
}

/** Probe CTAs per thread-block cluster (config `cluster`, absent = 1): they split the keys of the same rows. */
export const probeCluster = (c: Config): number => c.cluster ?? 1;

/** grid.x = row blocks x cluster size (CTA x of row block b, cluster rank r is b * cluster + r). */
export function probeGeometry(c: Config, dtype: CudaDType, x: Dims): Geometry {
  const BM = dtype === "f32" ? c.rowsF32! : 16 * c.mTiles!;
  return { grid: [cdiv((x.Hq / x.Hkv) * x.m, BM) * probeCluster(c), x.Hkv, 1], block: [32 * c.warps!, 1, 1], smem: 0 };
}

/** Keys cached in shared memory when 4n bytes fit beside the kernel's ~26 KB of static shared memory. */
export function selectGeometry(c: Config, x: Dims, maxSmemOptin: number): Geometry {
  const want = 4 * x.n;
  return { grid: [x.S, 1, 1], block: [c.threads!, 1, 1], smem: want <= maxSmemOptin - 32 * 1024 ? want : 0 };
}

export function sparseGeometry(c: Config, dtype: CudaDType, x: Dims): Geometry {
  // wgmma tiles are unpadded (swizzled); mma.sync rows are padded by 8 elements against bank conflicts.
  const smem = dtype === "f32" ? 0 : (c.BM! + 2 * c.BN!) * (c.wgmma === 1 ? x.d : x.d + 8) * 2 + 16 * c.BN!;
  return { grid: [cdiv(x.n, c.BM!), x.Hq, 1], block: [32 * c.warps!, 1, 1], smem };
}

/** Most splits a decode step gets: the fused combine keeps (S + 2) floats per head in ~40 KB of shared memory. */
export const DECODE_MAX_SPLITS = 1024;
/** Fewest cache rows a split should own (4 shared-memory tiles at d = 128 bf16); shorter caches get fewer splits. */
export const DECODE_MIN_ROWS = 64;

/** CTAs of the decode split kernel resident per SM: its __launch_bounds__ minimum (zv_decode.cuh kSplitMinBlocks). */
export const decodeBlocksPerSM = (warps: number): number => Math.max(1, Math.floor(8 / warps));

/**
 * Split-KV count: at most the (Hkv x splits) CTAs that are resident at once (rounded down: a second, partial wave
 * would nearly double a bandwidth-bound step), at least 1, and no split shorter than DECODE_MIN_ROWS rows.
 * `scale` (a tuned `splitScale`) multiplies the target; `warps` is the config's.
 */
export function decodeSplits(smCount: number, Hkv: number, capacity: number, scale = 1, warps = 4): number {
  const target = Math.floor((scale * decodeBlocksPerSM(warps) * smCount) / Hkv);
  return Math.max(1, Math.min(target, cdiv(capacity, DECODE_MIN_ROWS), DECODE_MAX_SPLITS));
}

/**
 * Whether a step of `splits` > 1 merges its splits inside the split kernel (the last CTA of each KV head, through
 * args.counters) instead of launching the combine kernel: unless the config says `fuse: 0`, when one CTA's combine
 * chain (float4 loads per thread) is at most twice the combine kernel's (which has one CTA per query head).
 */
export function decodeFused(c: Config, x: { Hq: number; Hkv: number; d: number; splits: number }): boolean {
  if (x.splits <= 1 || c.fuse === 0) return false;
  const pairs = ((x.Hq / x.Hkv) * x.d) / 4;
  return pairs <= 2 * 32 * c.warps!;
}

/**
 * Whether a step takes the tensor-core split pass (config `mma: 1`, zv_decode_mma.cuh): 16-bit dtypes with at
 * least 4 query heads a KV head; f32 and smaller groups keep the SIMT pass. Grid, block, workspace and combine
 * are the same either way (decodeGeometry ignores it).
 */
export function decodeMma(c: Config, x: { dtype: CudaDType; Hq: number; Hkv: number }): boolean {
  return c.mma === 1 && x.dtype !== "f32" && x.Hq / x.Hkv >= 4;
}

/** Launches of one step: the split kernel, then the combine kernel only when there are splits and they are not fused. */
export function decodeGeometry(c: Config, x: { Hq: number; Hkv: number; d: number; splits: number }): { split: Geometry; combine: Geometry | null } {
  return {
    split: { grid: [x.Hkv, x.splits, 1], block: [32 * c.warps!, 1, 1], smem: 0 },
    combine: x.splits > 1 && !decodeFused(c, x) ? { grid: [x.Hq, 1, 1], block: [128, 1, 1], smem: 0 } : null,
  };
}
