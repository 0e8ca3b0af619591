// One ZipVL prefill layer (or one decode step) on the GPU: buffers allocated once, kernels enqueued on a stream
// with no host round trip (the kept count stays on the device), so the sequence can be timed or captured in a
// CUDA graph. Prefill is at most three kernel launches plus one memset: probe_score, select, sparse_attn_compact.
import type { Expr } from "../../expr/ast.ts";
import { tensorFromBytes, tensorToBytes } from "../../io/safetensors.ts";
import type { Tensor } from "../../io/tensor.ts";
import type { Program } from "../../ir/ir.ts";
import { bindDecode, type Binding } from "../../interp/bind.ts";
import { knobValue } from "../../interp/run.ts";
import type { ExecOptions } from "../backend.ts";
import { assemblePrefill, fusedNode, planPrefill, type PrefillPlan } from "../plan.ts";
import { type CudaDevice, type CudaFunction, type CudaStream, type DeviceBuffer } from "../../runtime/native.ts";
import { paramSlots, slotValues } from "../cstyle.ts";
import { packStruct } from "./args.ts";
import type { CudaDType, Stage } from "./render.ts";
import { decodeGeometry, type Config } from "./schedule.ts";
import { decodeSplits, probeCluster, probeGeometry, selectGeometry, sparseGeometry } from "./schedule.ts";
import { fail } from "../../diagnostics/diagnostic.ts";
import { ESIZE } from "./model-pool.ts";

/** Compiled kernels of one program at one dtype/head dim, by stage (decode: split and combine). */
export interface KernelSet {
  fn(stage: Stage, suffix?: string): CudaFunction;
  config(stage: Stage): Config;
}

const NORMALIZER: Record<string, number> = { visible: 0, n_minus_j: 1, none: 2 };
const MODE: Record<string, number> = { tau: 0, ratio: 1, budget: 2, all: 3 };
const POOL: Record<string, number> = { none: 0, max: 1, avg: 2 };
const i64 = (v: number): { i64: number } => ({ i64: v });
const f64 = (v: number): { f64: number } => ({ f64: v });


// Encoded bytes per host tensor: the tuner and the benchmarks build many pipelines over the same inputs, and
// encoding 167M bf16 values takes seconds. Held only while the tensor lives.
const encodedCache = new WeakMap<Tensor, Uint8Array>();
function encoded(t: Tensor): Uint8Array {
  let b = encodedCache.get(t);
  if (!b) encodedCache.set(t, (b = tensorToBytes(t)));
  return b;
}

/** Device buffers owned by one pipeline, freed together. */
class Arena {
  private readonly bufs: DeviceBuffer[] = [];
  constructor(private readonly dev: CudaDevice) {}
  alloc(bytes: number): DeviceBuffer {
    const buf = this.dev.alloc(Math.max(bytes, 16));
    this.bufs.push(buf);
    return buf;
  }
  /** A tensor's bytes in its dtype (esz bytes an element). */
  upload(t: Tensor, esz: number): DeviceBuffer {
    const buf = this.alloc(t.data.length * esz);
    buf.write(encoded(t));
    return buf;
  }
  /** Hands `buf` to the caller: the arena no longer frees it. */
  release(buf: DeviceBuffer): DeviceBuffer {
    const i = this.bufs.indexOf(buf);
    if (i >= 0) this.bufs.splice(i, 1);
    return buf;
  }
  free(): void {
    for (const b of this.bufs.splice(0)) b.free();
  }
}

/** Inputs already on the device (the model path): the pipeline reads them in place and never frees them. */
export interface DeviceInputs {
  readonly q: DeviceBuffer;
  readonly k: DeviceBuffer;
  readonly v: DeviceBuffer;
}

/** A stand-in tensor that carries only dtype and shape (binding reads no data of q, k or v). */
function shapeOnly(dtype: CudaDType, shape: readonly number[]): Tensor {
  return { dtype, shape, data: new Float64Array(0) };
}

/** What a device-resident prefill layer hands back; the caller owns (and frees) the buffers. */
export interface DevicePrefillOutputs {
  readonly o: DeviceBuffer; // [Hq, n, d]
  readonly kFull: DeviceBuffer; // [Hkv, n, d]: per selection set, the first count[set] rows are the compacted cache
  readonly vFull: DeviceBuffer;
  readonly count: Int32Array; // [S], read back once
}

export class CudaPrefill {
  readonly plan: PrefillPlan;
  readonly dtype: CudaDType;
  private readonly arena: Arena;
  private readonly launches: (() => void)[] = [];
  private readonly out: Record<string, DeviceBuffer> = {};

  /** Device-resident layer: q [Hq, n, d], k/v [Hkv, n, d] of `dtype` already on the device; nothing is uploaded. */
  static onDevice(dev: CudaDevice, p: Program, qkv: DeviceInputs, dims: { Hq: number; Hkv: number; n: number; d: number; dtype: CudaDType }, kernels: KernelSet, opts: ExecOptions, stream: CudaStream | null = null): CudaPrefill {
    const { Hq, Hkv, n, d, dtype } = dims;
    const inputs = new Map([["q", shapeOnly(dtype, [Hq, n, d])], ["k", shapeOnly(dtype, [Hkv, n, d])], ["v", shapeOnly(dtype, [Hkv, n, d])]]);
    return new CudaPrefill(dev, p, inputs, kernels, opts, stream, qkv);
  }

  constructor(private readonly dev: CudaDevice, p: Program, inputs: ReadonlyMap<string, Tensor>, kernels: KernelSet, opts: ExecOptions, private stream: CudaStream | null = null, device?: DeviceInputs) {
    this.arena = new Arena(dev);
    // An allocation that fails part-way (out of memory) must not leak what the arena already holds.
    try {
      const plan = (this.plan = planPrefill(p, inputs, opts, "the cuda backend"));
      const { b, probes, S, perKvHead } = plan;
      const q = inputs.get("q")!;
      this.dtype = q.dtype as CudaDType;
      const m = probes.length;
      const { n, d, Hq, Hkv } = b;
      const esz = ESIZE[this.dtype];
      const alloc = (bytes: number): DeviceBuffer => this.arena.alloc(bytes);
      const upload = (t: Tensor): DeviceBuffer => this.arena.upload(t, esz);
      const qb = device ? device.q : upload(q);
      const kb = device ? device.k : upload(inputs.get("k")!);
      const vb = device ? device.v : upload(inputs.get("v")!);
      const probesB = alloc(4 * m);
      if (m > 0) probesB.write(probes);
      const P = alloc(8 * Math.max(1, paramSlots(p).names.length));
      P.write(slotValues(paramSlots(p), b.env));
      const colmass = (this.out.scores = alloc(4 * S * n));
      const visible = alloc(4 * n);
      const normScores = (this.out.norm_scores = alloc(4 * S * n));
      const count = (this.out.count = alloc(4 * S));
      const order = (this.out.order = alloc(4 * S * n));
      const o = (this.out.o = alloc(Hq * n * d * esz));
      const kc = (this.out.k_cache = alloc(Hkv * n * d * esz));
      const vc = (this.out.v_cache = alloc(Hkv * n * d * esz));
      const dims = { Hq, Hkv, n, d, m, S };
      const per = i64(perKvHead ? 1 : 0);

      // 1. probe scoring: column mass over probe rows and heads (+ probe-visible counts).
      const probeArgs = packStruct("ZvProbeArgs", {
        q: qb, k: kb, probes: probesB, colmass, visible, params: P, n: i64(n), m: i64(m), Hq: i64(Hq), Hkv: i64(Hkv), d: i64(d), per_kv_head: per, scale: f64(plan.probe.scale),
      });
      const pc = kernels.config("probe");
      // A key split over a thread-block cluster (__cluster_dims__ in the kernel; the launch itself is plain).
      if (probeCluster(pc) > 1 && dev.info.computeCapability[0] < 9)
        fail("ZV4002", ["the cuda backend", `probe config cluster ${probeCluster(pc)} on compute capability ${dev.info.computeCapability.join(".")} (thread-block clusters need 9.0)`]);
      const pg = probeGeometry(pc, this.dtype, dims);
      const probeFn = kernels.fn("probe");
      this.launches.push(() => {
        colmass.zero(this.stream);
        visible.zero(this.stream);
        if (m > 0) this.dev.launch(probeFn, { grid: pg.grid, block: pg.block, sharedBytes: pg.smem, stream: this.stream }, probeArgs);
      });
      // 2. selection: tau count from raw mass, identity from normalized scores, order = selected then the rest.
      const sl = plan.select;
      const selArgs = packStruct("ZvSelectArgs", {
        colmass, visible, norm_scores: normScores, count, order, params: P, n: i64(n), S: i64(S), mode: i64(MODE[sl.mode]!), amount: f64(sl.amount),
        normalizer: i64(NORMALIZER[plan.probe.normalizer]!), pool_kind: i64(POOL[sl.pool]!), pool_size: i64(sl.poolSize), keep_first: i64(sl.keepFirst), keep_last: i64(sl.keepLast),
      });
      const sg = selectGeometry(kernels.config("select"), dims, dev.info.maxSharedPerBlockOptin);
      const selFn = kernels.fn("select");
      // The kernel also has ~26 KB of static shared memory: opt in whenever dynamic memory is used at all.
      if (sg.smem > 0) selFn.setMaxDynamicShared(sg.smem);
      this.launches.push(() => this.dev.launch(selFn, { grid: sg.grid, block: sg.block, sharedBytes: sg.smem, stream: this.stream }, selArgs));
      // 3. token-sparse attention with gathered loads, zero rows and the compacted cache in the same pass.
      const saArgs = packStruct("ZvSparseArgs", {
        q: qb, k: kb, v: vb, o, k_cache: kc, v_cache: vc, count, order, params: P, n: i64(n), Hq: i64(Hq), Hkv: i64(Hkv), d: i64(d), per_kv_head: per, scale: f64(plan.attn.scale),
      });
      const ag = sparseGeometry(kernels.config("sparse_attn"), this.dtype, dims);
      const saFn = kernels.fn("sparse_attn");
      if (ag.smem > 0) saFn.setMaxDynamicShared(ag.smem);
      this.launches.push(() => this.dev.launch(saFn, { grid: ag.grid, block: ag.block, sharedBytes: ag.smem, stream: this.stream }, saArgs));
    } catch (e) {
      this.arena.free();
      throw e;
    }
  }

  /** Fills every output with NaN bytes so a kernel that skips a write cannot pass a comparison. */
  poison(): void {
    for (const buf of Object.values(this.out)) buf.fill32(0xffffffff, this.stream);
  }

  /** The raw output buffers (scores, norm_scores, count, order, o, k_cache, v_cache), e.g. for the tuner's checks. */
  outputBuffers(): ReadonlyMap<string, DeviceBuffer> {
    return new Map(Object.entries(this.out));
  }

  /** Enqueues the whole layer (one memset pair and three kernels); nothing waits on the host. */
  enqueue(): void {
    for (const l of this.launches) l();
  }

  /** Enqueues one launch group alone (0: memsets + probe, 1: select, 2: sparse attention), for per-kernel timing. */
  enqueueStage(i: 0 | 1 | 2): void {
    this.launches[i]!();
  }

  /** Downloads the outputs in the cpu backend's layout. */
  download(): Map<string, Tensor> {
    this.dev.synchronize();
    const { n, d, Hq, Hkv } = this.plan.b;
    const S = this.plan.S;
    const esz = ESIZE[this.dtype];
    const bytes = (buf: DeviceBuffer, elems: number): Uint8Array => buf.read(new Uint8Array(elems * esz));
    return assemblePrefill(this.plan, {
      scores: this.out.scores!.toArray(Float32Array, S * n),
      normScores: this.out.norm_scores!.toArray(Float32Array, S * n),
      count: this.out.count!.toArray(Int32Array, S),
      order: this.out.order!.toArray(Int32Array, S * n),
      o: tensorFromBytes(this.dtype, [Hq, n, d], bytes(this.out.o!, Hq * n * d)),
      kFull: tensorFromBytes(this.dtype, [Hkv, n, d], bytes(this.out.k_cache!, Hkv * n * d)),
      vFull: tensorFromBytes(this.dtype, [Hkv, n, d], bytes(this.out.v_cache!, Hkv * n * d)),
    }, "the cuda backend");
  }

  /** After enqueue(): reads the kept counts (the one host sync of the layer) and hands o and the caches over. */
  takeDevice(): DevicePrefillOutputs {
    const count = this.out.count!.read(new Int32Array(this.plan.S), 0, this.stream);
    if (this.stream) this.stream.synchronize();
    return { o: this.arena.release(this.out.o!), kFull: this.arena.release(this.out.k_cache!), vFull: this.arena.release(this.out.v_cache!), count };
  }

  free(): void {
    this.arena.free();
  }
}

/** What one decode step reads and writes (device buffers or raw device addresses). */
export interface DecodeStepIO {
  readonly q: DeviceBuffer | bigint; // [Hq, 1, d]
  readonly kCache: DeviceBuffer | bigint; // [Hkv, capacity, d]: head h's rows start capacity * h rows in
  readonly vCache: DeviceBuffer | bigint;
  readonly o: DeviceBuffer | bigint; // [Hq, 1, d]
  /** A device int32 that holds `len` (the kernels read the live length on the device). */
  readonly length: DeviceBuffer | bigint;
  /** Live rows (host copy of *length; sets the split count). */
  readonly len: number;
  /** Rows per head of the cache storage (the row stride). */
  readonly capacity: number;
}

/**
 * The reusable part of decode attention: split partials (sized for the most splits any length gets), parameter
 * slots, the per-KV-head arrival counters of the fused combine (zeroed once; the kernel's last CTA resets them) and the
 * kernels, allocated once (per model: layers run one after another on one stream, so they can share it). A step packs
 * its argument block on the host (passed by value at launch) and enqueues the split kernel, plus the combine kernel
 * only when its splits are not merged in place (schedule.ts decodeFused): no device allocation, no host sync.
 */
export class DecodeWorkspace {
  private readonly arena: Arena;
  private readonly P: DeviceBuffer;
  private readonly partO: DeviceBuffer;
  private readonly partMl: DeviceBuffer;
  private readonly counters: DeviceBuffer;
  private readonly scaleOf: (len: number) => number;
  private readonly split: CudaFunction;
  private readonly combine: CudaFunction;
  private readonly geometry: (splits: number) => ReturnType<typeof decodeGeometry>;
  private readonly splitScale: number;
  private readonly config: Config;
  readonly maxSplits: number;

  /** A workspace for q [Hq, 1, d] over caches of Hkv heads, any length (shapes are all the binding reads). */
  static forShape(dev: CudaDevice, p: Program, dims: { Hq: number; Hkv: number; d: number; dtype: CudaDType }, kernels: KernelSet, opts: ExecOptions, stream: CudaStream | null = null): DecodeWorkspace {
    const { Hq, Hkv, d, dtype } = dims;
    const shapes = new Map([["q", shapeOnly(dtype, [Hq, 1, d])], ["k_cache", shapeOnly(dtype, [Hkv, 1, d])], ["v_cache", shapeOnly(dtype, [Hkv, 1, d])]]);
    return new DecodeWorkspace(dev, p, bindDecode(p, shapes, opts.params ?? {}, opts.layer ?? 0), kernels, stream);
  }

  /** `b` is the bound decode (its env gives parameters and the scale; its c is not used). */
  constructor(private readonly dev: CudaDevice, p: Program, readonly b: Binding, kernels: KernelSet, private readonly stream: CudaStream | null = null) {
    this.arena = new Arena(dev);
    // An allocation that fails part-way (out of memory) must not leak what the arena already holds.
    try {
      const { Hq, Hkv, d } = b;
      this.config = kernels.config("decode");
      this.splitScale = this.config.splitScale ?? 1;
      this.maxSplits = decodeSplits(dev.info.smCount, Hkv, Number.MAX_SAFE_INTEGER, this.splitScale, this.config.warps);
      this.partO = this.arena.alloc(4 * Hq * this.maxSplits * d);
      this.partMl = this.arena.alloc(4 * Hq * this.maxSplits * 2);
      this.counters = this.arena.alloc(4 * Hkv);
      this.counters.zero(stream);
      this.P = this.arena.alloc(8 * Math.max(1, paramSlots(p).names.length));
      this.P.write(slotValues(paramSlots(p), b.env), 0, stream);
      const nd = fusedNode(p, "decode", "decode_attn", "the cuda backend");
      const scaleExpr = nd.attrs.scale as Expr;
      this.scaleOf = (len) => knobValue(scaleExpr, { ...b.env, n: len }, "scale", "scale");
      this.split = kernels.fn("decode", "_split");
      this.combine = kernels.fn("decode", "_combine");
      this.geometry = (splits) => decodeGeometry(this.config, { Hq, Hkv, d, splits });
    } catch (e) {
      this.arena.free();
      throw e;
    }
  }

  /** Splits a cache of `len` live rows gets (the same count a cache of exactly len rows gets). */
  splitsFor(len: number): number {
    return decodeSplits(this.dev.info.smCount, this.b.Hkv, len, this.splitScale, this.config.warps);
  }

  /** Launches a step over `len` live rows takes: 1 (one split, or splits merged by their last CTA) or 2. */
  launchesFor(len: number): 1 | 2 {
    return this.geometry(this.splitsFor(len)).combine ? 2 : 1;
  }

  /** Enqueues one decode step (one launch, or split + combine). */
  enqueue(io: DecodeStepIO): void {
    const { Hq, Hkv, d } = this.b;
    if (!(io.len >= 1 && io.len <= io.capacity)) throw new RangeError(`decode over ${io.len} live rows of a ${io.capacity}-row cache`);
    const splits = this.splitsFor(io.len);
    const g = this.geometry(splits);
    const args = packStruct("ZvDecodeArgs", {
      q: io.q, k_cache: io.kCache, v_cache: io.vCache, o: io.o, part_o: this.partO, part_ml: this.partMl, length: io.length, params: this.P,
      capacity: i64(io.capacity), Hq: i64(Hq), Hkv: i64(Hkv), d: i64(d), splits: i64(splits), scale: f64(this.scaleOf(io.len)),
      // The split kernel merges the splits itself (schedule.ts decodeFused) exactly when no combine launch follows.
      counters: splits > 1 && !g.combine ? this.counters : null,
    });
    this.dev.launch(this.split, { grid: g.split.grid, block: g.split.block, sharedBytes: 0, stream: this.stream }, args);
    if (g.combine) this.dev.launch(this.combine, { grid: g.combine.grid, block: g.combine.block, sharedBytes: 0, stream: this.stream }, args);
  }

  free(): void {
    this.arena.free();
  }
}

/** One decode step over a cache of exactly c rows (executor, tuner, benchmarks): its own o and length buffers plus
 *  a workspace. For step after step over a growing cache, use one DecodeWorkspace (the model ops do). */
export class CudaDecode {
  readonly b: Binding & { c: number };
  private readonly arena: Arena;
  private readonly ws: DecodeWorkspace;
  private readonly io: DecodeStepIO;
  private readonly o: DeviceBuffer;
  readonly dtype: CudaDType;

  /** Device-resident step: q [Hq, 1, d], caches [Hkv, c, d] of `dtype` already on the device. */
  static onDevice(dev: CudaDevice, p: Program, inputs: { q: DeviceBuffer; kCache: DeviceBuffer; vCache: DeviceBuffer }, dims: { Hq: number; Hkv: number; c: number; d: number; dtype: CudaDType }, kernels: KernelSet, opts: ExecOptions, stream: CudaStream | null = null): CudaDecode {
    const { Hq, Hkv, c, d, dtype } = dims;
    const shapes = new Map([["q", shapeOnly(dtype, [Hq, 1, d])], ["k_cache", shapeOnly(dtype, [Hkv, c, d])], ["v_cache", shapeOnly(dtype, [Hkv, c, d])]]);
    return new CudaDecode(dev, p, shapes, kernels, opts, stream, { q: inputs.q, k: inputs.kCache, v: inputs.vCache });
  }

  constructor(private readonly dev: CudaDevice, p: Program, inputs: ReadonlyMap<string, Tensor>, kernels: KernelSet, opts: ExecOptions, stream: CudaStream | null = null, device?: DeviceInputs) {
    this.arena = new Arena(dev);
    // An allocation that fails part-way (out of memory) must not leak what the arena already holds.
    try {
      const b = (this.b = bindDecode(p, inputs, opts.params ?? {}, opts.layer ?? 0));
      this.dtype = inputs.get("q")!.dtype as CudaDType;
      const { Hq, d, c } = b;
      const esz = ESIZE[this.dtype];
      const upload = (t: Tensor): DeviceBuffer => this.arena.upload(t, esz);
      const q = device ? device.q : upload(inputs.get("q")!);
      const kc = device ? device.k : upload(inputs.get("k_cache")!);
      const vc = device ? device.v : upload(inputs.get("v_cache")!);
      this.o = this.arena.alloc(Hq * d * esz);
      const length = this.arena.alloc(4);
      length.write(Int32Array.of(c), 0, stream);
      this.ws = new DecodeWorkspace(dev, p, b, kernels, stream);
      this.io = { q, kCache: kc, vCache: vc, o: this.o, length, len: c, capacity: c };
    } catch (e) {
      this.arena.free();
      throw e;
    }
  }
  poison(): void {
    this.o.fill32(0xffffffff);
  }
  /** The raw output buffer o [Hq, 1, d]. */
  outputBuffer(): DeviceBuffer {
    return this.o;
  }
  enqueue(): void {
    this.ws.enqueue(this.io);
  }
  /** After enqueue(): hands the output o [Hq, 1, d] over to the caller. */
  takeO(): DeviceBuffer {
    return this.arena.release(this.o);
  }
  download(): Map<string, Tensor> {
    this.dev.synchronize();
    const { Hq, d } = this.b;
    const esz = ESIZE[this.dtype];
    return new Map([["o", tensorFromBytes(this.dtype, [Hq, 1, d], this.o.read(new Uint8Array(Hq * d * esz)))]]);
  }
  free(): void {
    this.ws.free();
    this.arena.free();
  }
}
