// Work per kernel (FLOPs and bytes) and the floors they imply on a card: FLOPs over the measured bf16 matmul rate,
// bytes over the measured copy bandwidth; the floor is the larger of the two.
import type { Floors } from "./results.ts";

export interface Work {
  readonly flops: number;
  readonly bytes: number;
}
export interface ShapeW {
  readonly n: number;
  readonly kept: number;
  readonly d: number;
  readonly Hq: number;
  readonly Hkv: number;
}
/** Probe rows of dsl/zipvl.ts (64 recent + 64 random). */
export const PROBE_ROWS = 128;
const ESZ = 2; // bf16

export const keptCount = (s: ShapeW): number => Math.max(1, Math.min(s.n, Math.ceil(s.kept * s.n - 1e-9)));
/** 4 * H * d * c(c+1)/2: QK^T and PV on the causal half, 2 FLOPs per MAC. */
export const causalFlops = (H: number, d: number, c: number): number => (4 * H * d * c * (c + 1)) / 2;

export const WORK = {
  /** Two passes (row max/sum, then column mass) of Q[P] K^T over every key; K read twice. */
  probe: (s: ShapeW): Work => ({ flops: 2 * 2 * s.Hq * PROBE_ROWS * s.n * s.d, bytes: 2 * s.Hkv * s.n * s.d * ESZ }),
  /** Column mass and visible counts in, normalized scores and order out (fp32 / i32). */
  select: (s: ShapeW): Work => ({ flops: 0, bytes: 16 * s.n }),
  /** Causal attention among the kept tokens; gathered Q, K, V in; O (all n rows, zeros outside) and the compacted cache out. */
  sparse_attn: (s: ShapeW): Work => {
    const c = keptCount(s);
    return { flops: causalFlops(s.Hq, s.d, c), bytes: ESZ * s.d * (s.Hq * c + 2 * s.Hkv * c + s.Hq * s.n + 2 * s.Hkv * c) };
  },
  dense: (s: ShapeW): Work => ({ flops: causalFlops(s.Hq, s.d, s.n), bytes: ESZ * s.d * (2 * s.Hq * s.n + 2 * s.Hkv * s.n) }),
  /** One query token over a cache of round(kept * n) tokens: K and V read once. */
  decode: (s: ShapeW): Work => ({ flops: 4 * s.Hq * s.d * Math.round(s.kept * s.n), bytes: 2 * s.Hkv * Math.round(s.kept * s.n) * s.d * ESZ }),
};
export const stepWork = (s: ShapeW): Work => {
  const parts = [WORK.probe(s), WORK.select(s), WORK.sparse_attn(s)];
  return { flops: parts.reduce((a, w) => a + w.flops, 0), bytes: parts.reduce((a, w) => a + w.bytes, 0) };
};

export interface Floor {
  readonly ms: number;
  readonly bound: "compute" | "memory";
  readonly computeMs: number;
  readonly memoryMs: number;
}
export function floorOf(w: Work, f: Floors): Floor {
  const computeMs = w.flops / (f.matmulTflops * 1e9);
  const memoryMs = w.bytes / (f.copyTbps * 1e9);
  return { ms: Math.max(computeMs, memoryMs), bound: computeMs >= memoryMs ? "compute" : "memory", computeMs, memoryMs };
}

/** The next improvement per kernel and its predicted time at n = 32768, 30% kept, H = 40, d = 128 (H200). */
export const NEXT_STEPS: Record<string, string> = {
  probe: "cp.async shared-memory staging of K tiles, split keys over a cluster so pass 1 is not repeated (predict 0.25 ms)",
  select: "cluster/multi-block radix histogram (predict 0.03 ms)",
  sparse_attn: "warp-specialized producer/consumer with gathered cp.async, softmax overlapped with the next QK^T (FA3 style; predict 1.6 ms)",
  step: "the three kernel steps above (predict 1.9 ms at 32k)",
  dense: "the sparse_attn step (dense runs the same kernel; predict 80% of the matmul rate)",
  decode: "more splits for Hkv = 40 and 16-byte loads in flight per thread (predict 0.052 ms at cache 9830)",
};
