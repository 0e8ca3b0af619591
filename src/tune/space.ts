// The config space of each kernel and its pruning. Configs that cannot fit the device (shared memory, threads,
// registers) or break the device library's static_asserts are dropped BEFORE anything compiles. The fallback
// config (schedule.ts defaultConfig / WGSL chooseConfig) is always first in every list.
import { decodeBlocksPerSM, defaultConfig, type Config } from "../backends/cuda/schedule.ts";
import type { Stage } from "../backends/cuda/render.ts";
import type { WgslConfig, WgslStage } from "../backends/wgsl/stages.ts";
import type { TuneShape } from "./shapes.ts";
import { byteSize } from "../io/dtype.ts";

/** The device limits pruning needs (a subset of DeviceInfo, so --dry-run can use a preset). */
export interface CudaLimits {
  readonly name: string;
  readonly arch: 80 | 90;
  readonly maxSharedPerBlock: number; // static shared memory
  readonly maxSharedPerBlockOptin: number;
  readonly maxSharedPerSM: number;
  readonly maxThreadsPerBlock: number;
  readonly maxThreadsPerSM: number;
  readonly regsPerSM: number;
}
export const CUDA_PRESETS: Record<string, CudaLimits> = {
  sm90: { name: "sm_90 preset (H100/H200 limits)", arch: 90, maxSharedPerBlock: 49152, maxSharedPerBlockOptin: 232448, maxSharedPerSM: 233472, maxThreadsPerBlock: 1024, maxThreadsPerSM: 2048, regsPerSM: 65536 },
  sm80: { name: "sm_80 preset (A100 limits)", arch: 80, maxSharedPerBlock: 49152, maxSharedPerBlockOptin: 166912, maxSharedPerSM: 167936, maxThreadsPerBlock: 1024, maxThreadsPerSM: 2048, regsPerSM: 65536 },
};

export interface Space<C> {
  /** Fallback first, then every candidate that survived pruning. */
  readonly configs: readonly C[];
  readonly total: number;
  /** Why configs were dropped: reason -> count. */
  readonly pruned: Readonly<Record<string, number>>;
}

const product = (axes: Record<string, readonly number[]>): Record<string, number>[] =>
  Object.entries(axes).reduce<Record<string, number>[]>((acc, [k, vs]) => acc.flatMap((c) => vs.map((v) => ({ ...c, [k]: v }))), [{}]);
export const configId = (c: object): string => JSON.stringify(Object.fromEntries(Object.entries(c).sort(([a], [b]) => a.localeCompare(b))));

function build<C extends object>(fallback: C, all: C[], why: (c: C) => string | null): Space<C> {
  const pruned: Record<string, number> = {};
  const seen = new Set([configId(fallback)]);
  const configs: C[] = [fallback];
  for (const c of all) {
    if (seen.has(configId(c))) continue;
    seen.add(configId(c));
    const r = why(c);
    if (r) pruned[r] = (pruned[r] ?? 0) + 1;
    else configs.push(c);
  }
  return { configs, total: seen.size, pruned };
}

/** Registers a thread may use when `threads * minBlocks` threads share an SM (ptxas caps at 255). */
const regCap = (L: CudaLimits, threads: number, minBlocks: number): number => Math.min(255, Math.floor(L.regsPerSM / (threads * minBlocks) / 8) * 8);

/** The CUDA config space of one stage at one shape, pruned for the device. */
export function cudaSpace(stage: Stage, s: TuneShape, L: CudaLimits): Space<Config> {
  const fallback = defaultConfig(stage, s.dtype, s.d, L.arch);
  const tc = s.dtype !== "f32";
  const common = (threads: number, minBlocks: number): string | null =>
    threads > L.maxThreadsPerBlock ? "threads per block" : threads * minBlocks > L.maxThreadsPerSM ? "threads per SM" : null;
  switch (stage) {
    case "probe": {
      // cluster: CTAs of a thread-block cluster splitting the keys (sm_90 only; 1 is written as no key, as in the
      // fallback). With the key split, parallelism no longer needs small row blocks: mTiles 4 joins the space.
      const cluster = L.arch === 90 ? [1, 2, 4, 8] : [1];
      const axes = tc
        ? { warps: [4, 8, 16], mTiles: L.arch === 90 ? [1, 2, 4] : [1, 2], nTiles: [1, 2, 4], rowsF32: [16], minBlocks: [1, 2], cluster }
        : { warps: [4, 8], mTiles: [1], nTiles: [1], rowsF32: [8, 16, 32], minBlocks: [1, 2], cluster };
      const configs = product(axes).map(({ cluster: cl, ...c }) => (cl === 1 ? c : { ...c, cluster: cl! }));
      return build(fallback, configs, (c) => {
        const threads = 32 * c.warps!;
        const BM = tc ? 16 * c.mTiles! : c.rowsF32!;
        // In registers: Q fragments (mTiles * d / 4), the double-buffered K fragments of nTiles n8 tiles (nTiles * d / 8
        // after reuse) and the score accumulators (8 * mTiles * nTiles). ptxas on sm_90a (bf16, d 128): mTiles 1 /
        // nTiles 2 fits 128, mTiles 2 / nTiles 2 takes 198 (spills at a 128 cap), mTiles 4 / nTiles 1 takes 248.
        const need = tc ? 40 + (c.mTiles! * s.d) / 4 + (c.nTiles! * s.d) / 8 + 8 * c.mTiles! * c.nTiles! : 48 + s.d / 4;
        if (common(threads, c.minBlocks!)) return common(threads, c.minBlocks!);
        if (8 * c.warps! * BM + 1024 > L.maxSharedPerBlock) return "static shared memory";
        if (regCap(L, threads, c.minBlocks!) < need) return "registers";
        // mTiles 4 trades parallelism for fewer K re-reads: only worth it when a cluster restores the CTA count.
        return tc && c.mTiles === 4 && (c.cluster ?? 1) < 4 ? "mTiles 4 without a cluster of 4+" : null;
      });
    }
    case "select":
      return build(fallback, product({ threads: [128, 256, 512, 1024] }), (c) => (2048 % c.threads! !== 0 ? "threads must divide 2048 buckets" : common(c.threads!, 1)));
    case "sparse_attn": {
      const axes = tc
        ? { BM: [64, 128, 192], BN: [32, 64, 128], warps: [4, 8, 12], minBlocks: [1, 2], wgmma: L.arch === 90 && s.d % 64 === 0 ? [1, -1] : [-1] }
        : { BM: [32, 64], BN: [32, 64], warps: [4, 8], minBlocks: [1, 2], wgmma: [-1] };
      return build(fallback, product(axes), (c) => {
        const { BM, BN, warps, minBlocks, wgmma } = c as Required<Record<"BM" | "BN" | "warps" | "minBlocks" | "wgmma", number>>;
        const threads = 32 * warps;
        if (common(threads, minBlocks)) return common(threads, minBlocks);
        if (tc && wgmma === 1 && (BM !== 16 * warps || warps % 4 !== 0 || ![64, 128, 256].includes(BN))) return "wgmma tiling (BM = 16 * warps, warps % 4 == 0)";
        if (tc && wgmma !== 1 && (BM % (16 * warps) !== 0 || (BN * 8) % threads !== 0 || (BM * 8) % threads !== 0)) return "mma.sync tiling (BM % 16 * warps, BN * 8 % threads)";
        const smem = tc ? (BM + 2 * BN) * (wgmma === 1 ? s.d : s.d + 8) * 2 : 4 * (BM + 2 * BN) * s.d;
        if (smem > L.maxSharedPerBlockOptin - 16 * BN) return "shared memory per block";
        if (minBlocks * (smem + 16 * BN + 1024) > L.maxSharedPerSM) return "shared memory per SM";
        // Per thread: the O accumulator (BM x d) and the score tile (BM x BN) in fp32, plus ~24 for addresses.
        return regCap(L, threads, minBlocks) < (BM * s.d + BM * BN) / threads + 24 ? "registers" : null;
      });
    }
    case "decode": {
      const configs = product({ warps: [2, 4, 8, 16], splitScale: [0.5, 1, 2, 4] }).map((c) => (c.splitScale === 1 ? { warps: c.warps! } : c));
      // fuse 0: the split + combine kernel pair, to compare with the last-CTA merge (fuse absent = 1).
      configs.push({ warps: 4, fuse: 0 });
      // mma 1: the tensor-core pass for GQA groups of 4+ heads at 16 bits (schedule.ts decodeMma); same launch.
      if (tc && s.gqa >= 4) for (const warps of [4, 8]) for (const splitScale of [1, 2]) configs.push(splitScale === 1 ? { warps, mma: 1 } : { warps, splitScale, mma: 1 });
      // DecodeShared (static): a union of the 5-stage K/V ring (~40 KB) and o[warps][4][d] plus m, l in fp32.
      const ring = 5 * 2 * Math.max(1, Math.floor(4096 / (s.d * byteSize(s.dtype)))) * s.d * byteSize(s.dtype);
      // Registers: ~200 a thread at 4 warps (q and o of 4 heads, the team's tile loop); the bound must not force spills.
      return build(fallback, configs, (c) => {
        const threads = 32 * c.warps!, blocks = decodeBlocksPerSM(c.warps!);
        if (common(threads, blocks)) return common(threads, blocks);
        if (Math.max(ring, 4 * c.warps! * 4 * (s.d + 2)) + 16 > L.maxSharedPerBlock) return "static shared memory";
        return regCap(L, threads, blocks) < 200 ? "registers" : null;
      });
    }
  }
}

/** The WebGPU adapter limits the WGSL configs depend on (ZvLimits subset). */
export interface WgslLimits {
  readonly maxComputeWorkgroupStorageSize: number;
  readonly maxComputeInvocationsPerWorkgroup: number;
  readonly maxComputeWorkgroupSizeX: number;
}
export const WGSL_STAGES: readonly WgslStage[] = ["probe", "select", "attention", "decode"];
/** The WgslConfig fields each WGSL stage reads. */
export const WGSL_FIELDS: Record<WgslStage, readonly (keyof WgslConfig)[]> = {
  probe: ["probeWorkgroup", "probeQChunk"],
  select: ["selectWorkgroup", "selectItems"],
  attention: ["attnBQ", "attnBK", "attnTPR"],
  decode: ["decodeWorkgroup"],
};
const attnSmem = (bq: number, bk: number, d: number): number => 4 * ((bq + bk) * (d + 4) + bk * d + bq * (bk + 1) + bq + bk);

/** The WGSL space of one stage: the stage's fields varied around the fallback (chooseConfig's) config. */
export function wgslSpace(stage: WgslStage, d: number, L: WgslLimits, fallback: WgslConfig): Space<Partial<WgslConfig>> {
  const inv = Math.min(L.maxComputeInvocationsPerWorkgroup, L.maxComputeWorkgroupSizeX);
  const smem = L.maxComputeWorkgroupStorageSize;
  const pick = (c: WgslConfig): Partial<WgslConfig> => Object.fromEntries(WGSL_FIELDS[stage].map((k) => [k, c[k]]));
  const axes: Record<WgslStage, Record<string, number[]>> = {
    probe: { probeWorkgroup: [32, 64, 128, 256], probeQChunk: [4, 8, 16, 32] },
    select: { selectWorkgroup: [64, 128, 256, 512], selectItems: [4] },
    attention: { attnBQ: [4, 8, 16, 32], attnBK: [8, 16, 32], attnTPR: [1, 2, 4, 8] },
    decode: { decodeWorkgroup: [32, 64, 128, 256] },
  };
  return build(pick(fallback), product(axes[stage]) as Partial<WgslConfig>[], (c) => {
    switch (stage) {
      case "probe":
        return c.probeWorkgroup! > inv ? "invocations" : 4 * (c.probeQChunk! * d + 2 * c.probeWorkgroup!) > smem ? "workgroup storage" : null;
      case "select":
        return c.selectWorkgroup! > inv ? "invocations" : 4 * (16 * c.selectWorkgroup! + 256 + 2 * c.selectWorkgroup! + 1) > smem ? "workgroup storage" : null;
      case "attention":
        if ((d / 4) % c.attnTPR! !== 0 || c.attnBK! % c.attnTPR! !== 0) return "lanes must divide d / 4 and the key tile";
        // lib/attention.wgsl loads the key tile's positions one per thread (`if (t < ATT_BK)`): fewer threads than
        // keys leave positions unset (the tuner's verification caught these configs: wrong output).
        if (c.attnBQ! * c.attnTPR! < c.attnBK!) return "threads (BQ x TPR) must cover the key tile";
        return c.attnBQ! * c.attnTPR! > inv ? "invocations" : attnSmem(c.attnBQ!, c.attnBK!, d) > smem ? "workgroup storage" : null;
      case "decode":
        return c.decodeWorkgroup! > inv ? "invocations" : null;
    }
  });
}
