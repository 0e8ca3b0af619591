// The small-batch linear kernels of decode (templates/cuda/gemv.cu.hbs over include/zv_gemv.cuh): rendering per
// dtype (one entry per token-row count M = 1..GEMV_MAX_ROWS), compile + load through the content-keyed cache, and
// the launcher that owns the geometry (units of two weight rows per warp; x, and the norm weight, riding in the
// weight ring, or x staged in shared-memory chunks: knobs.gemvDirect).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import Handlebars from "handlebars";
import type { CudaDevice, CudaFunction, CudaModule, CudaStream, DeviceBuffer } from "../../runtime/native.ts";
import { knobs } from "../../knobs.ts";
import { compileKernel, type Arch, type CompiledKernel } from "./compile.ts";
import { packModelArgs } from "./model-args.ts";
import { ESIZE } from "./model-pool.ts";
import { C_TYPE, TEMPLATE_DIR, type CudaDType, type KernelSource } from "./render.ts";
import type { KvSink } from "../../model/ops.ts";

/** Largest token-row count the kernels are instantiated for; more rows go to cuBLASLt. */
export const GEMV_MAX_ROWS = 8;
/** Warps per CTA (kGemvWarps in zv_gemv.cuh). */
export const GEMV_WARPS = 4;
/** Ring stages instantiated (1 KiB a warp each; R - 1 in flight): one row takes each, more rows the default. */
export const GEMV_RINGS = [4, 8, 16] as const;
export type GemvRing = (typeof GEMV_RINGS)[number];
export const GEMV_RING_DEFAULT: GemvRing = 8;
/** Shared memory for the staged x of one CTA (the rings take GEMV_WARPS * R KiB more). */
export const GEMV_SMEM_CAP = 32 * 1024;
/** Ring bytes of a CTA: two weight vectors a lane a stage, plus `xRows` more when x rides in the ring ("direct": M x
 *  vectors, and one of the norm weight where there is a norm). */
const ringBytes = (r: number, xRows = 0): number => GEMV_WARPS * r * (2 + xRows) * 512;
/** Warps per unit: 2 splits K for one row (x in one chunk), else 1. */
export type GemvSplitK = 1 | 2;
/** Entries instantiated; minBlocks: the launch bounds' CTAs an SM (one row: knobs.gemvMinBlocks, 5 by default: at
 *  most 102 registers, 88 used, five CTAs an SM, which the H100 step ran faster than six (80 registers) or four;
 *  more rows keep 3, their accumulators need the registers). */
export function gemvEntries(): readonly { m: number; r: GemvRing; ks: GemvSplitK; minBlocks: number }[] {
  const one = knobs.gemvMinBlocks;
  return [
    ...GEMV_RINGS.map((r) => ({ m: 1, r, ks: 1 as const, minBlocks: one })),
    { m: 1, r: 4, ks: 2, minBlocks: one },
    ...Array.from({ length: GEMV_MAX_ROWS - 1 }, (_, i) => ({ m: i + 2, r: GEMV_RING_DEFAULT, ks: 1 as const, minBlocks: 3 })),
  ];
}

/** Warps per unit of a launch: 2 (split K) only where forced (knobs.gemvSplitK) and possible: one row, ring 4, x in
 *  one chunk, two stages or more. Off by default: on the H100 the 13B layer's linear work took 9.55 ms with it on
 *  the launches under 3000 CTAs against 9.33 without (docs/PERFORMANCE.md); kept for a card where short launches
 *  drain worse. */
export function gemvSplitK(dtype: CudaDType, M: number, K: number, ring: GemvRing, force?: GemvSplitK): GemvSplitK {
  const can = M === 1 && ring === 4 && gemvChunk(dtype, M, K) >= K && K >= 2 * gemvStage(dtype);
  return can ? (force ?? 1) : 1;
}

/** Elements of one 16-byte vector. */
export const gemvVec = (dt: CudaDType): number => 16 / ESIZE[dt];
/** Elements of K a warp covers per ring stage. */
export const gemvStage = (dt: CudaDType): number => 32 * gemvVec(dt);

/** Whether the kernels take x [M, K] (else the caller composes the plain ops). */
export function gemvFits(dtype: CudaDType, M: number, K: number): boolean {
  return Number.isInteger(M) && M >= 1 && M <= GEMV_MAX_ROWS && Number.isInteger(K) && K > 0 && K % gemvVec(dtype) === 0;
}

/** Chunk of x staged at a time: a multiple of the stage width, at most GEMV_SMEM_CAP bytes for M rows. */
export function gemvChunk(dtype: CudaDType, M: number, K: number, capElems = knobs.gemvChunk): number {
  const batch = gemvStage(dtype);
  let cap = Math.max(1, Math.floor(GEMV_SMEM_CAP / (M * ESIZE[dtype] * batch))) * batch;
  if (capElems) cap = Math.min(cap, Math.max(1, Math.floor(capElems / batch)) * batch);
  return Math.min(Math.ceil(K / batch) * batch, cap);
}

let tpl: Handlebars.TemplateDelegate | undefined;
export function renderGemv(dtype: CudaDType): { name: string; source: string } {
  tpl ??= Handlebars.compile(readFileSync(join(TEMPLATE_DIR, "gemv.cu.hbs"), "utf8"), { noEscape: true, strict: true });
  return { name: `zv_gemv_${dtype}`, source: tpl({ dtype: C_TYPE[dtype], suffix: dtype, entries: gemvEntries() }) };
}
export const gemvEntry = (dtype: CudaDType, M: number, r: GemvRing = GEMV_RING_DEFAULT, ks: GemvSplitK = 1): string => `zv_gemv_${dtype}_m${M}_r${r}_k${ks}`;
/** Dynamic shared memory of a launch: the staged x chunk and the warps' rings, or (direct) the rings with x in them. */
export const gemvSharedBytes = (dtype: CudaDType, M: number, K: number, r: GemvRing, direct = false, norm = false): number =>
  direct ? ringBytes(r, M + (norm ? 1 : 0)) : M * gemvChunk(dtype, M, K) * ESIZE[dtype] + ringBytes(r);
/** Whether a launch takes x (and the norm weight) through its weight ring instead of staging it: one row, and no norm
 *  unless knobs.gemvDirect is "all". */
export const gemvDirect = (M: number, norm: boolean): boolean => knobs.gemvDirect !== "off" && M === 1 && (!norm || knobs.gemvDirect === "all");

/** One weight matrix of a launch: w [n, K]; y [M, n] row-major, or [n / d, M, d] with `heads`. */
export interface GemvSegment {
  readonly w: DeviceBuffer;
  readonly bias?: DeviceBuffer | null;
  readonly y: DeviceBuffer;
  readonly n: number;
  /** Rotary embedding on the rows of each head (pairs i, i + d/2). */
  readonly rope?: boolean;
  readonly heads?: boolean;
}

/** Paged-cache rows a q/k/v launch also writes k and v to (decode's append folded in): rows [Hkv, M] i32 (-1: none),
 *  k / v the pages' row arrays [rows, d]. Carried as a KvSink's target (src/model/ops.ts). */
export interface GemvSink {
  readonly kind: "cuda-paged";
  readonly rows: DeviceBuffer | bigint;
  readonly k: DeviceBuffer | bigint;
  readonly v: DeviceBuffer | bigint;
}
export const pagedSinkOf = (s: KvSink): GemvSink | undefined => ((s.target as Partial<GemvSink> | null)?.kind === "cuda-paged" ? (s.target as GemvSink) : undefined);

export interface GemvLaunch {
  readonly M: number;
  readonly K: number;
  readonly x: DeviceBuffer | bigint;
  /** x is head-major [K / xHeadDim, M, xHeadDim]. */
  readonly xHeadDim?: number;
  readonly norm?: { readonly w: DeviceBuffer; readonly eps: number };
  /** Residual [M, n] added to segment 0. */
  readonly res?: DeviceBuffer;
  readonly segments: readonly GemvSegment[];
  /** silu(segment 0) * segment 1 into segment 0's y. */
  readonly gated?: boolean;
  /** Head dim of rope / head-major outputs. */
  readonly d?: number;
  readonly rope?: { readonly positions: DeviceBuffer | bigint; readonly invFreq: DeviceBuffer | bigint; readonly scale: number };
  /** Segments 1 and 2 (head-major k and v) also go to these paged-cache rows. */
  readonly sink?: GemvSink;
}

type Nvrtc = Parameters<typeof compileKernel>[2];

export class GemvKernels {
  readonly compiled: CompiledKernel;
  private readonly fns = new Map<string, CudaFunction>();
  private readonly module: CudaModule;

  /** pdl: launch with programmatic dependent launch (the kernels wait before reading the previous one's outputs). */
  /** ring: stages of the one-row kernels' weight rings (knobs.gemvRing, default GEMV_RING_DEFAULT). */
  constructor(private readonly dev: CudaDevice, readonly dtype: CudaDType, arch: Arch, private readonly stream: CudaStream | null, nvrtc?: Nvrtc, private readonly pdl = true, private readonly ring: GemvRing = GEMV_RING_DEFAULT) {
    const src = renderGemv(dtype);
    const k = { stage: "decode", name: src.name, source: src.source, dtype, headDim: 0, config: {} } satisfies KernelSource;
    this.compiled = compileKernel(k, arch, nvrtc);
    this.module = dev.loadModule(this.compiled.cubin);
    for (const e of gemvEntries()) {
      const fn = this.module.getFunction(gemvEntry(dtype, e.m, e.r, e.ks));
      // Staged: the x chunk and the rings; direct (one row): x and the norm weight in the rings.
      fn.setMaxDynamicShared(Math.max(GEMV_SMEM_CAP + ringBytes(e.r), e.m === 1 ? ringBytes(e.r, e.m + 1) : 0));
      this.fns.set(`${e.m}/${e.r}/${e.ks}`, fn);
    }
  }

  unload(): void {
    this.module.unload();
  }

  /** Units (warps) of a launch. */
  static units(l: GemvLaunch): number {
    if (l.gated) return l.segments[0]!.n;
    return l.segments.reduce((s, g) => s + Math.ceil(g.n / 2), 0);
  }

  run(l: GemvLaunch): void {
    const { M, K, segments: segs } = l;
    if (!gemvFits(this.dtype, M, K)) throw new RangeError(`gemv: ${M} rows of K ${K} (${this.dtype})`);
    if (segs.length < 1 || segs.length > 3 || (l.gated && (segs.length !== 2 || segs[1]!.n !== segs[0]!.n))) throw new RangeError(`gemv: ${segs.length} segments${l.gated ? " (gated: two of equal rows)" : ""}`);
    if (l.xHeadDim && (l.xHeadDim % gemvVec(this.dtype) !== 0 || K % l.xHeadDim !== 0)) throw new RangeError(`gemv: head-major x with head dim ${l.xHeadDim} for K ${K}`);
    const d = l.d ?? 0;
    let ropeMask = 0;
    let headsMask = 0;
    segs.forEach((s, i) => {
      if ((s.rope || s.heads) && !(d > 0 && d % 2 === 0 && s.n % d === 0)) throw new RangeError(`gemv: segment ${i} of ${s.n} rows in heads of ${d}`);
      if (s.rope) ropeMask |= 1 << i;
      if (s.heads) headsMask |= 1 << i;
    });
    if (ropeMask && !l.rope) throw new RangeError("gemv: rope segments without positions");
    if (l.sink && (segs.length !== 3 || l.gated || !segs[1]!.heads || !segs[2]!.heads)) throw new RangeError("gemv: a paged sink needs head-major k and v as segments 1 and 2");
    const units = GemvKernels.units(l);
    if (units === 0) return;
    const direct = gemvDirect(M, l.norm !== undefined);
    const kc = direct ? 0 : gemvChunk(this.dtype, M, K);
    const r: GemvRing = M === 1 ? this.ring : GEMV_RING_DEFAULT;
    const force = knobs.gemvSplitK === "gated" ? (l.gated ? 2 : 1) : knobs.gemvSplitK;
    const ks = gemvSplitK(this.dtype, M, K, r, force);
    // Rotating the stage order needs x in one chunk (or in the ring) and one warp a unit.
    const rotate = knobs.gemvRotate && ks === 1 && (direct || kc >= K);
    const s = (i: number): GemvSegment | undefined => segs[i];
    const args = packModelArgs("ZvGemvArgs", {
      x: l.x,
      norm_w: l.norm?.w ?? null,
      res: l.res ?? null,
      positions: l.rope?.positions ?? null,
      inv_freq: l.rope?.invFreq ?? null,
      w0: segs[0]!.w,
      w1: s(1)?.w ?? null,
      w2: s(2)?.w ?? null,
      b0: segs[0]!.bias ?? null,
      b1: s(1)?.bias ?? null,
      b2: s(2)?.bias ?? null,
      y0: segs[0]!.y,
      y1: l.gated ? null : (s(1)?.y ?? null),
      y2: s(2)?.y ?? null,
      K: { i64: K },
      x_head_dim: { i64: l.xHeadDim ?? 0 },
      n0: { i64: segs[0]!.n },
      n1: { i64: s(1)?.n ?? 0 },
      n2: { i64: s(2)?.n ?? 0 },
      nseg: { i64: segs.length },
      mode: { i64: l.gated ? 1 : 0 },
      d: { i64: d },
      rope_mask: { i64: ropeMask },
      heads_mask: { i64: headsMask },
      kc: { i64: kc },
      rotate: { i64: rotate ? 1 : 0 },
      sink_rows: l.sink?.rows ?? null,
      sink_k: l.sink?.k ?? null,
      sink_v: l.sink?.v ?? null,
      eps: { f64: l.norm?.eps ?? 0 },
      rope_scale: { f64: l.rope?.scale ?? 1 },
    });
    this.dev.launch(this.fns.get(`${M}/${r}/${ks}`)!, { grid: [Math.ceil((units * ks) / GEMV_WARPS), 1, 1], block: [32 * GEMV_WARPS, 1, 1], sharedBytes: gemvSharedBytes(this.dtype, M, K, r, direct, l.norm !== undefined), stream: this.stream, pdl: this.pdl }, args);
  }
}
