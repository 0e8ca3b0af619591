// ModelOps on CUDA: cuBLASLt GEMMs for every linear layer, the generated model kernels (zv_model.cuh) for the rest,
// ZipVL layers through the fused pipeline on device-resident q/k/v (CudaPrefill.onDevice), and dense causal
// attention / decode through the same fused kernels running the built-in dense program (select.all). Activations
// and weights are stored in the ops dtype (default bf16); everything runs on one stream; free() hands memory to a
// stream-ordered pool (model-pool.ts) and dispose() returns it all to the driver.
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { openCuda, type CudaContext } from "../backends/cuda/executor.ts";
import { CudaPrefill, DecodeWorkspace } from "../backends/cuda/pipeline.ts";
import { ModelKernels } from "../backends/cuda/model-kernels.ts";
import { GemvKernels, gemvFits, gemvVec, pagedSinkOf, type GemvSegment } from "../backends/cuda/gemv.ts";
import { BufferPool, decodeToF32, DeviceMeter, encodeF32, ESIZE, type OpsMemory } from "../backends/cuda/model-pool.ts";
import { CUDA_HEAD_DIMS, type CudaDType } from "../backends/cuda/render.ts";
import type { Program } from "../ir/ir.ts";
import { Blas, nvrtcCompile, nvrtcVersion, type CudaStream, type DeviceBuffer } from "../runtime/native.ts";
import { nvccVersion } from "../backends/cuda/compile.ts";
import { knobs } from "../knobs.ts";
import { fail } from "../diagnostics/diagnostic.ts";
import { cudaOpsFail } from "./cuda-errors.ts";
import { LlavaError } from "./errors.ts";
import type { DKvCache, DTensor, HostWeight, KvSink, ModelOps, NormSpec, OpsFactory, Policy, Projection, RopeAt, SparseLayerResult } from "./ops.ts";
import { byteSize } from "../io/dtype.ts";

interface CudaTensor extends DTensor {
  readonly buf: DeviceBuffer;
  readonly dtype: CudaDType;
}

/** A capacity KV cache: storage [heads, capacity, d] for k and v (pool buffers), rows [0, len) live. */
interface CudaKv extends DKvCache {
  len: number;
  capacity: number;
  k: DeviceBuffer;
  v: DeviceBuffer;
}

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);
const shp = (x: DTensor): string => `[${x.shape.join(", ")}]`;

/** Where the built-in dense program lives: next to this source tree, else under the working directory (bundles). */
function densePath(): string {
  const here = fileURLToPath(new URL("../../dsl/variants/dense.ts", import.meta.url));
  return existsSync(here) ? here : resolve("dsl/variants/dense.ts");
}

export interface CudaOpsHandle extends ModelOps {
  readonly ctx: CudaContext;
  readonly stream: CudaStream;
  readonly blas: Blas;
  readonly kernels: ModelKernels;
  /** Wraps a device buffer the caller hands over (e.g. weights initialized on the device) as a tensor. */
  adopt(buf: DeviceBuffer, shape: readonly number[]): DTensor;
  /** The device buffer behind a tensor (benchmarks and tests). */
  bufferOf(x: DTensor): DeviceBuffer;
  /** An uninitialized tensor from the current buffer pool (no device allocation when the pool holds one). */
  empty(shape: readonly number[]): DTensor;
  /** Runs `body` with `pool` as the pool every tensor it allocates comes from (and goes back to when freed, even
   *  later): a captured step's private memory, reused only by replays of that step. */
  withPool<T>(pool: BufferPool, body: () => T): T;
  /** embed with the token ids already on the device (n int32 at `ids`): nothing read or written from the host. */
  embedFrom(table: DTensor, ids: DeviceBuffer, n: number): DTensor;
  /** rope with the positions already on the device (x.shape[1] int32 at `positions`); the frequencies are cached
   *  on the device per distinct table (the first call of a table uploads it, so run once before capturing). */
  ropeFrom(x: DTensor, positions: DeviceBuffer, invFreq: Float32Array, scale: number): DTensor;
  /** The first `count` values of x as f32 (toF32 reads them all): e.g. a padded batch's real rows. */
  readF32(x: DTensor, count: number): Float32Array;
  /** normProject with the rope positions already on the device (x.shape[0] int32 at `positions`). */
  normProjectAt(x: DTensor, norm: NormSpec | undefined, projs: readonly Projection[], rope: RopeAt | undefined, positions: DeviceBuffer, sink?: KvSink): DTensor[] | undefined;
  /** Device memory held by these ops (every allocation through the metered device) and its high-water mark. */
  readonly memory: OpsMemory;
}

export interface CudaOpsOptions {
  /** Decode's small-batch linear layers through the fused zv_gemv kernels (default: knobs.gemv, on). */
  readonly gemv?: boolean;
  /** Most token rows they take (default knobs.gemvRows); more rows go to cuBLASLt and the composed ops. */
  readonly gemvRows?: number;
  /** Launch them with programmatic dependent launch (default knobs.pdl, on). */
  readonly pdl?: boolean;
}

export function createCudaOpsWith(ctx: CudaContext, dtype: CudaDType, dense: Program, opts: CudaOpsOptions = {}): CudaOpsHandle {
  const gemvRows = (opts.gemv ?? knobs.gemv !== "off") ? (opts.gemvRows ?? knobs.gemvRows) : 0;
  // Every allocation of these ops (pools, pipeline arenas, workspaces) goes through the meter.
  const meter = new DeviceMeter();
  const dev = meter.device(ctx.dev);
  const stream = dev.createStream();
  const blas = Blas.open(dev);
  let nvrtc: ConstructorParameters<typeof ModelKernels>[4];
  if (knobs.jit === "nvrtc" || !nvccVersion()) nvrtc = { version: nvrtcVersion().join("."), compile: (src, o) => nvrtcCompile(src, o) };
  const k = new ModelKernels(dev, dtype, ctx.arch, stream, nvrtc);
  const mainPool = new BufferPool(dev);
  meter.cached = () => mainPool.cachedBytes;
  /** Gives the main pool's cached free buffers back to the driver; returns the bytes freed. */
  const releaseCached = (): number => {
    const had = mainPool.cachedBytes;
    if (had > 0) mainPool.release();
    return had;
  };
  meter.onPressure = () => releaseCached() > 0;
  let pool = mainPool;
  // Tensors taken from another pool than the main one (withPool) go back to it.
  const owners = new WeakMap<CudaTensor, BufferPool>();
  const freqs = new Map<string, DeviceBuffer>();
  const esz = ESIZE[dtype];
  const live = new Set<CudaTensor>();
  // Allocation order of live tensors (OpsMemory.mark / freeSince).
  const serials = new WeakMap<CudaTensor, number>();
  let serial = 0;
  // Fused kernel sets per (program, head dim): rendering and the cache lookup happen once, not once per layer.
  const sets = new Map<Program, Map<number, ReturnType<CudaContext["kernels"]>>>();
  const kernelsFor = (p: Program, d: number): ReturnType<CudaContext["kernels"]> => {
    let byD = sets.get(p);
    if (!byD) sets.set(p, (byD = new Map()));
    let ks = byD.get(d);
    if (!ks) byD.set(d, (ks = ctx.kernels(p, dtype, d)));
    return ks;
  };

  const wrap = (buf: DeviceBuffer, shape: readonly number[]): CudaTensor => {
    const t: CudaTensor = { shape: Object.freeze([...shape]), buf, dtype };
    live.add(t);
    serials.set(t, serial++);
    return t;
  };
  const alloc = (shape: readonly number[]): CudaTensor => {
    const t = wrap(pool.take(numel(shape) * esz), shape);
    meter.noteLive();
    if (pool !== mainPool) owners.set(t, pool);
    return t;
  };
  const T = (x: DTensor): CudaTensor => {
    const t = x as CudaTensor;
    if (!t.buf || t.dtype === undefined) cudaOpsFail("ZV6201", [`a tensor of another backend ${shp(x)} reached the cuda ops`]);
    if (!live.has(t)) cudaOpsFail("ZV6201", [`tensor ${shp(x)} was used after free()`]);
    return t;
  };
  const d2 = (x: DTensor, what: string): [number, number] => (x.shape.length === 2 ? (x.shape as [number, number]) : cudaOpsFail("ZV6201", [`${what} needs a 2-D tensor, got ${shp(x)}`]));
  const d3 = (x: DTensor, what: string): [number, number, number] => (x.shape.length === 3 ? (x.shape as [number, number, number]) : cudaOpsFail("ZV6201", [`${what} needs [H, n, d], got ${shp(x)}`]));
  const same = (a: DTensor, b: DTensor, what: string): void => {
    if (a.shape.join() !== b.shape.join()) cudaOpsFail("ZV6201", [`${what} of ${shp(a)} and ${shp(b)}`]);
  };
  const small = <A extends Int32Array | Float32Array>(data: A): DeviceBuffer => {
    const b = pool.take(data.byteLength);
    b.write(data, 0, stream);
    return b;
  };
  const fused = (d: number, what: string): boolean => (CUDA_HEAD_DIMS as readonly number[]).includes(d) || cudaOpsFail("ZV6202", [what, `head dim ${d} (the fused kernels take ${CUDA_HEAD_DIMS.join(", ")})`]);

  // Decode's small-batch linear layers (<= 8 rows): the zv_gemv kernels, compiled on first use.
  let gemv: GemvKernels | undefined;
  const gemvK = (): GemvKernels => (gemv ??= new GemvKernels(dev, dtype, ctx.arch, stream, nvrtc, opts.pdl ?? knobs.pdl !== "off", knobs.gemvRing));
  const gemvOn = (M: number, K: number): boolean => M <= gemvRows && gemvFits(dtype, M, K);
  const freqBuf = (invFreq: Float32Array): DeviceBuffer => {
    const key = invFreq.join(",");
    let fb = freqs.get(key);
    if (!fb) freqs.set(key, (fb = dev.upload(invFreq, stream)));
    return fb;
  };
  const weightOf = (wt: DTensor, K: number, what: string): [CudaTensor, number] => {
    const [N, K2] = d2(wt, what);
    if (K2 !== K) cudaOpsFail("ZV6201", [`${what} ${shp(wt)} for rows of ${K}`]);
    return [T(wt), N];
  };
  const biasOf = (b: DTensor | undefined, N: number, what: string): DeviceBuffer | null => {
    if (!b) return null;
    if (numel(b.shape) !== N) cudaOpsFail("ZV6201", [`${what} bias ${shp(b)} for ${N} outputs`]);
    return T(b).buf;
  };
  const normOf = (norm: NormSpec | undefined, K: number): { w: DeviceBuffer; eps: number } | undefined => {
    if (!norm) return undefined;
    if (numel(norm.w.shape) !== K) cudaOpsFail("ZV6201", [`rmsNorm weight ${shp(norm.w)} for ${K} columns`]);
    return { w: T(norm.w).buf, eps: norm.eps };
  };
  /** q/k/v-style projections in one launch: norm prologue, rope and head-major epilogues. */
  const normProjectOn = (x: DTensor, norm: NormSpec | undefined, projs: readonly Projection[], rope: RopeAt | undefined, posDev?: DeviceBuffer, sink?: KvSink): DTensor[] | undefined => {
    if (x.shape.length !== 2 || projs.length < 1 || projs.length > 3) return undefined;
    const [M, K] = d2(x, "normProject");
    if (!gemvOn(M, K)) return undefined;
    const ws = projs.map((p, i) => weightOf(p.w, K, `normProject weight ${i}`));
    let d = 0;
    for (let i = 0; i < projs.length; i++) {
      const p = projs[i]!, N = ws[i]![1];
      if (p.heads <= 0) continue;
      if (N % p.heads !== 0) return undefined; // the composition's toHeads reports it
      const hd = N / p.heads;
      if ((d !== 0 && hd !== d) || hd % 2 !== 0) return undefined;
      d = hd;
    }
    if (projs.some((p) => p.rope && p.heads > 0) && (!rope || (!posDev && rope.positions.length !== M) || rope.invFreq.length !== d / 2)) return undefined;
    const nm = normOf(norm, K);
    const outs = projs.map((p, i) => (p.heads > 0 ? alloc([p.heads, M, ws[i]![1] / p.heads]) : alloc([M, ws[i]![1]])));
    const segs: GemvSegment[] = projs.map((p, i) => ({ w: ws[i]![0].buf, bias: biasOf(p.bias, ws[i]![1], "normProject"), y: outs[i]!.buf, n: ws[i]![1], rope: p.rope && p.heads > 0, heads: p.heads > 0 }));
    const needRope = segs.some((s) => s.rope);
    const pb = needRope && !posDev ? small(rope!.positions) : undefined;
    try {
      // A paged sink takes k and v (segments 1 and 2, head-major) of a q/k/v launch.
      const to = sink && projs.length === 3 && projs[1]!.heads > 0 && projs[2]!.heads > 0 ? pagedSinkOf(sink) : undefined;
      gemvK().run({ M, K, x: T(x).buf, ...(nm ? { norm: nm } : {}), segments: segs, d, ...(needRope ? { rope: { positions: posDev ?? pb!, invFreq: freqBuf(rope!.invFreq), scale: rope!.scale } } : {}), ...(to ? { sink: to } : {}) });
      if (to) sink!.written = true;
    } catch (e) {
      for (const o of outs) ops.free(o);
      throw e;
    } finally {
      if (pb) pool.give(pb);
    }
    return outs;
  };

  // Decode attention workspaces (split partials, parameter slots), one per (Hq, Hkv, d): allocated on the first
  // step and reused by every layer and step (all run in order on this stream).
  const decoders = new Map<string, DecodeWorkspace>();
  const decoderFor = (Hq: number, Hkv: number, d: number): DecodeWorkspace => {
    const key = `${Hq}/${Hkv}/${d}`;
    let ws = decoders.get(key);
    if (!ws) decoders.set(key, (ws = DecodeWorkspace.forShape(dev, dense, { Hq, Hkv, d, dtype }, kernelsFor(dense, d), {}, stream)));
    return ws;
  };
  // A device int32 ramp 0, 1, 2, ...: the decode kernels read a cache's live length through &ramp[len], so a step
  // writes nothing to the device for it. Sized when a cache is created or regrows, never inside a step.
  let ramp: DeviceBuffer | null = null;
  let rampLen = 0;
  const lengthAt = (len: number): bigint => {
    if (len >= rampLen) {
      const n = Math.max(len + 1, 2 * rampLen, 4096);
      if (ramp) {
        stream.synchronize(); // queued decode steps may still read the old one
        ramp.free();
      }
      ramp = dev.alloc(4 * n);
      ramp.write(Int32Array.from({ length: n }, (_, i) => i), 0, stream);
      rampLen = n;
    }
    return ramp!.at(4 * len);
  };
  const kvs = new Set<CudaKv>();
  const KV = (c: DKvCache): CudaKv => (kvs.has(c as CudaKv) ? (c as CudaKv) : cudaOpsFail("ZV6201", [`a KV cache [${c.heads}, ${c.len}, ${c.d}] of another backend or used after freeKv()`]));
  /** Rows [0, rows) of every head of [H, from, d] storage into [H, to, d] storage (one copy launch per head). */
  const copyHeads = (src: DeviceBuffer, from: number, dst: DeviceBuffer, to: number, H: number, rows: number, d: number): void => {
    if (rows > 0) for (let h = 0; h < H; h++) k.elt("copy", src.at(h * from * d * esz), null, dst.at(h * to * d * esz), rows * d);
  };
  /** Decode of q [Hq, 1, d] over `len` rows of caches with row stride `capacity`, through the shared workspace. */
  const decodeOne = (q: CudaTensor, kc: DeviceBuffer, vc: DeviceBuffer, Hkv: number, len: number, capacity: number): CudaTensor => {
    const [Hq, , d] = q.shape as [number, number, number];
    const length = lengthAt(len);
    const o = alloc([Hq, 1, d]);
    decoderFor(Hq, Hkv, d).enqueue({ q: q.buf, kCache: kc, vCache: vc, o: o.buf, length, len, capacity });
    return o;
  };

  /** Per-KV-head compaction: rows [0, count) of each head of full [Hkv, n, d] into a new [Hkv, count, d]. */
  const compact = (full: DeviceBuffer, Hkv: number, n: number, d: number, count: number): CudaTensor => {
    const out = alloc([Hkv, count, d]);
    for (let h = 0; h < Hkv; h++) k.elt("copy", full.at(h * n * d * esz), null, out.buf.at(h * count * d * esz), count * d);
    return out;
  };

  const ops: CudaOpsHandle = {
    name: "cuda",
    dtype,
    ctx, stream, blas, kernels: k,
    adopt: (buf, shape) => {
      if (buf.bytes < numel(shape) * esz) cudaOpsFail("ZV6201", [`a ${buf.bytes}-byte buffer cannot hold ${dtype}[${shape.join(", ")}]`]);
      return wrap(buf, shape);
    },
    bufferOf: (x) => T(x).buf,
    memory: {
      meter,
      stats: () => ({ heldBytes: meter.heldBytes, peakBytes: meter.peakBytes, cachedBytes: mainPool.cachedBytes, peakLiveBytes: meter.peakLiveBytes }),
      resetPeak: () => meter.resetPeak(),
      releaseCached,
      deviceFree: () => ctx.dev.memInfo().free,
      mark: () => serial,
      freeSince(mark) {
        let n = 0;
        for (const t of [...live]) if ((serials.get(t) ?? -1) >= mark) (ops.free(t), n++);
        return n;
      },
    },
    empty: (shape) => alloc(shape),
    withPool(p, body) {
      const prev = pool;
      pool = p;
      try {
        return body();
      } finally {
        pool = prev;
      }
    },
    embedFrom(table, ids, n) {
      const [V, H] = d2(table, "embed");
      const y = alloc([n, H]);
      if (n > 0) k.embed(T(table).buf, ids, y.buf, n, H, V);
      return y;
    },
    ropeFrom(x, positions, invFreq, scale) {
      const [H, n, d] = d3(x, "rope");
      if (d % 2 !== 0 || invFreq.length !== d / 2) cudaOpsFail("ZV6201", [`rope of ${shp(x)} with ${invFreq.length} frequencies`]);
      const y = alloc([H, n, d]);
      if (n > 0) k.rope(T(x).buf, y.buf, positions, freqBuf(invFreq), H, n, d, scale);
      return y;
    },
    upload(w: HostWeight) {
      const n = numel(w.shape);
      const width = byteSize(w.dtype);
      if (w.bytes.byteLength !== n * width) cudaOpsFail("ZV6201", [`${w.dtype}[${w.shape.join(", ")}] needs ${n * width} bytes, got ${w.bytes.byteLength}`]);
      const bytes = w.dtype === dtype ? w.bytes : encodeF32(decodeToF32(w.bytes, w.dtype), dtype);
      const t = alloc(w.shape);
      t.buf.write(bytes, 0, stream);
      return t;
    },
    fromF32(shape, data) {
      if (numel(shape) !== data.length) cudaOpsFail("ZV6201", [`[${shape.join(", ")}] needs ${numel(shape)} values, got ${data.length}`]);
      const t = alloc(shape);
      t.buf.write(encodeF32(data, dtype), 0, stream);
      return t;
    },
    toF32: (x) => ops.readF32(x, numel(x.shape)),
    readF32(x, count) {
      const t = T(x);
      if (!(Number.isInteger(count) && count >= 0 && count <= numel(t.shape))) cudaOpsFail("ZV6201", [`reading ${count} values of ${shp(x)}`]);
      return decodeToF32(t.buf.read(new Uint8Array(count * esz), 0, stream), dtype);
    },
    free(x) {
      const t = x as CudaTensor;
      if (!live.delete(t)) return;
      (owners.get(t) ?? mainPool).give(t.buf);
    },
    linear(x, w, bias) {
      const [M, K] = d2(x, "linear");
      const [N, K2] = d2(w, "linear");
      if (K !== K2) cudaOpsFail("ZV6201", [`linear ${shp(x)} x ${shp(w)}^T`]);
      if (bias && numel(bias.shape) !== N) cudaOpsFail("ZV6201", [`linear bias ${shp(bias)} for ${N} outputs`]);
      const y = alloc([M, N]);
      if (M > 0 && gemvOn(M, K)) gemvK().run({ M, K, x: T(x).buf, segments: [{ w: T(w).buf, bias: bias ? T(bias).buf : null, y: y.buf, n: N }] });
      else if (M > 0) blas.gemm(dtype, M, N, K, T(x).buf, T(w).buf, y.buf, { bias: bias ? T(bias).buf : null, stream });
      return y;
    },
    normProject: (x, norm, projs, rope, sink) => normProjectOn(x, norm, projs, rope, undefined, sink),
    normProjectAt: (x, norm, projs, rope, positions, sink) => normProjectOn(x, norm, projs, rope, positions, sink),
    linearAdd(x, w, bias, residual) {
      const three = x.shape.length === 3;
      const [M, K, hd] = three ? [x.shape[1]!, x.shape[0]! * x.shape[2]!, x.shape[2]!] : [...d2(x, "linearAdd"), 0];
      if (!gemvOn(M, K) || (three && hd % gemvVec(dtype) !== 0)) return undefined;
      const [wt, N] = weightOf(w, K, "linearAdd weight");
      if (residual.shape.join() !== `${M},${N}`) cudaOpsFail("ZV6201", [`linearAdd residual ${shp(residual)} for [${M}, ${N}]`]);
      const y = alloc([M, N]);
      gemvK().run({ M, K, x: T(x).buf, ...(three ? { xHeadDim: hd } : {}), res: T(residual).buf, segments: [{ w: wt.buf, bias: biasOf(bias, N, "linearAdd"), y: y.buf, n: N }] });
      return y;
    },
    normGatedUp(x, norm, gate, up) {
      const [M, K] = d2(x, "normGatedUp");
      if (!gemvOn(M, K)) return undefined;
      const [wg, N] = weightOf(gate.w, K, "normGatedUp gate");
      const [wu, N2] = weightOf(up.w, K, "normGatedUp up");
      if (N2 !== N) cudaOpsFail("ZV6201", [`normGatedUp gate ${shp(gate.w)} and up ${shp(up.w)}`]);
      const y = alloc([M, N]);
      gemvK().run({ M, K, x: T(x).buf, norm: normOf(norm, K)!, gated: true, segments: [{ w: wg.buf, bias: biasOf(gate.bias, N, "gate"), y: y.buf, n: N }, { w: wu.buf, bias: biasOf(up.bias, N, "up"), y: y.buf, n: N }] });
      return y;
    },
    embed(table, ids) {
      const [V, H] = d2(table, "embed");
      for (const id of ids) if (id < 0 || id >= V) throw new LlavaError("ZV6109", [`token id ${id} is outside the vocabulary [0, ${V})`]);
      const y = alloc([ids.length, H]);
      if (ids.length === 0) return y;
      const idb = small(ids);
      k.embed(T(table).buf, idb, y.buf, ids.length, H, V);
      pool.give(idb);
      return y;
    },
    rmsNorm(x, w, eps) {
      const [R, C] = d2(x, "rmsNorm");
      if (numel(w.shape) !== C) cudaOpsFail("ZV6201", [`rmsNorm weight ${shp(w)} for ${C} columns`]);
      const y = alloc([R, C]);
      if (R > 0) k.norm(T(x).buf, T(w).buf, null, y.buf, R, C, 0, eps);
      return y;
    },
    layerNorm(x, w, b, eps) {
      const [R, C] = d2(x, "layerNorm");
      if (numel(w.shape) !== C || numel(b.shape) !== C) cudaOpsFail("ZV6201", [`layerNorm weight ${shp(w)} / bias ${shp(b)} for ${C} columns`]);
      const y = alloc([R, C]);
      if (R > 0) k.norm(T(x).buf, T(w).buf, T(b).buf, y.buf, R, C, 1, eps);
      return y;
    },
    add(a, b) {
      same(a, b, "add");
      const y = alloc(a.shape);
      if (numel(a.shape) > 0) k.elt("add", T(a).buf, T(b).buf, y.buf, numel(a.shape));
      return y;
    },
    siluMul(gate, up) {
      same(gate, up, "siluMul");
      const y = alloc(gate.shape);
      if (numel(gate.shape) > 0) k.elt("silu_mul", T(gate).buf, T(up).buf, y.buf, numel(gate.shape));
      return y;
    },
    act(x, kind) {
      const y = alloc(x.shape);
      if (numel(x.shape) > 0) k.elt(kind, T(x).buf, null, y.buf, numel(x.shape));
      return y;
    },
    sliceRows(x, start, end) {
      const [R, C] = d2(x, "sliceRows");
      if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && start <= end && end <= R)) cudaOpsFail("ZV6201", [`rows [${start}, ${end}) of ${shp(x)}`]);
      const y = alloc([end - start, C]);
      if (end > start) k.elt("copy", T(x).buf.at(start * C * esz), null, y.buf, (end - start) * C);
      return y;
    },
    concatRows(xs) {
      if (xs.length === 0) cudaOpsFail("ZV6201", ["concatRows of no tensors"]);
      const C = d2(xs[0]!, "concatRows")[1];
      let R = 0;
      for (const x of xs) {
        if (d2(x, "concatRows")[1] !== C) cudaOpsFail("ZV6201", [`concatRows of ${shp(x)} with ${C} columns`]);
        R += x.shape[0]!;
      }
      const y = alloc([R, C]);
      let at = 0;
      for (const x of xs) {
        const n = numel(x.shape);
        if (n > 0) k.elt("copy", T(x).buf, null, y.buf.at(at * esz), n);
        at += n;
      }
      return y;
    },
    addRows(x, row) {
      const [R, C] = d2(x, "addRows");
      const n = numel(row.shape);
      if (n !== C && n !== R * C) cudaOpsFail("ZV6201", [`addRows ${shp(x)} + ${shp(row)}`]);
      const y = alloc([R, C]);
      if (R > 0) k.elt("add_rows", T(x).buf, T(row).buf, y.buf, R * C, C, n / C);
      return y;
    },
    toHeads(x, heads) {
      const [n, HD] = d2(x, "toHeads");
      if (!(heads >= 1 && HD % heads === 0)) cudaOpsFail("ZV6201", [`toHeads of ${shp(x)} into ${heads} heads`]);
      const d = HD / heads;
      const y = alloc([heads, n, d]);
      if (n > 0) k.heads(T(x).buf, y.buf, n, heads, d, 0);
      return y;
    },
    fromHeads(x) {
      const [H, n, d] = d3(x, "fromHeads");
      const y = alloc([n, H * d]);
      if (n > 0) k.heads(T(x).buf, y.buf, n, H, d, 1);
      return y;
    },
    rope(x, positions, invFreq, scale) {
      const [H, n, d] = d3(x, "rope");
      if (d % 2 !== 0 || positions.length !== n || invFreq.length !== d / 2) cudaOpsFail("ZV6201", [`rope of ${shp(x)} with ${positions.length} positions and ${invFreq.length} frequencies`]);
      const y = alloc([H, n, d]);
      if (n === 0) return y;
      const pb = small(positions);
      const fb = small(invFreq);
      k.rope(T(x).buf, y.buf, pb, fb, H, n, d, scale);
      pool.give(pb);
      pool.give(fb);
      return y;
    },
    attention(q, kk, v, causal) {
      const [Hq, n, d] = d3(q, "attention");
      const [Hkv, nk, dk] = d3(kk, "attention");
      same(kk, v, "attention k/v");
      if (nk !== n || dk !== d || Hq % Hkv !== 0) cudaOpsFail("ZV6201", [`attention q ${shp(q)} k ${shp(kk)}`]);
      if (causal && (CUDA_HEAD_DIMS as readonly number[]).includes(d)) {
        // Flash attention of the fused pipeline running the dense program (every token kept).
        const run = CudaPrefill.onDevice(dev, dense, { q: T(q).buf, k: T(kk).buf, v: T(v).buf }, { Hq, Hkv, n, d, dtype }, kernelsFor(dense, d), {}, stream);
        try {
          run.enqueue();
          const r = run.takeDevice();
          pool.give(r.kFull);
          pool.give(r.vFull);
          return wrap(r.o, [Hq, n, d]);
        } finally {
          run.free();
        }
      }
      if (d > 256) cudaOpsFail("ZV6202", ["attention", `head dim ${d} (at most 256)`]);
      const o = alloc([Hq, n, d]);
      if (n > 0) k.attn(T(q).buf, T(kk).buf, T(v).buf, o.buf, { Hq, Hkv, nq: n, nk: n, d }, causal, 1 / Math.sqrt(d));
      return o;
    },
    sparsePrefill(policy: Policy, layer: number, q, kk, v): SparseLayerResult {
      const [Hq, n, d] = d3(q, "sparsePrefill");
      const [Hkv, nk, dk] = d3(kk, "sparsePrefill");
      same(kk, v, "sparsePrefill k/v");
      if (nk !== n || dk !== d || Hq % Hkv !== 0) cudaOpsFail("ZV6201", [`sparsePrefill q ${shp(q)} k ${shp(kk)}`]);
      fused(d, "sparsePrefill");
      const p = policy.program;
      const run = CudaPrefill.onDevice(dev, p, { q: T(q).buf, k: T(kk).buf, v: T(v).buf }, { Hq, Hkv, n, d, dtype }, kernelsFor(p, d), { params: policy.params, layer }, stream);
      try {
        if (run.plan.S !== 1) throw new LlavaError("ZV6107", [`program '${p.name}' selects per KV head; the model needs one set per layer`]);
        run.enqueue();
        const r = run.takeDevice();
        const count = r.count[0]!;
        // A faulty kernel gets the coded device-output error every backend uses, not a crash further on.
        if (!(count >= 1 && count <= n)) fail("ZV4003", ["the cuda backend", `kept count ${count} outside [1, ${n}]`]);
        const kCache = compact(r.kFull, Hkv, n, d, count);
        const vCache = compact(r.vFull, Hkv, n, d, count);
        pool.give(r.kFull);
        pool.give(r.vFull);
        return { o: wrap(r.o, [Hq, n, d]), kCache, vCache, count };
      } finally {
        run.free();
      }
    },
    decodeAttention(q, kCache, vCache) {
      const [Hq, t, d] = d3(q, "decodeAttention");
      const [Hkv, len, dk] = d3(kCache, "decodeAttention");
      same(kCache, vCache, "decodeAttention caches");
      if (dk !== d || Hq % Hkv !== 0 || len < 1) cudaOpsFail("ZV6201", [`decodeAttention q ${shp(q)} cache ${shp(kCache)}`]);
      if (t === 1 && (CUDA_HEAD_DIMS as readonly number[]).includes(d)) return decodeOne(T(q), T(kCache).buf, T(vCache).buf, Hkv, len, len);
      if (d > 256) cudaOpsFail("ZV6202", ["decodeAttention", `head dim ${d} (at most 256)`]);
      const o = alloc([Hq, t, d]);
      if (t > 0) k.attn(T(q).buf, T(kCache).buf, T(vCache).buf, o.buf, { Hq, Hkv, nq: t, nk: len, d }, false, 1 / Math.sqrt(d));
      return o;
    },
    createKvCache(heads, d, capacity) {
      if (!(Number.isInteger(heads) && heads >= 1 && Number.isInteger(d) && d >= 1 && Number.isInteger(capacity) && capacity >= 1)) cudaOpsFail("ZV6201", [`a KV cache of ${heads} heads, head dim ${d}, capacity ${capacity}`]);
      const bytes = heads * capacity * d * esz;
      const c: CudaKv = { heads, d, len: 0, capacity, k: mainPool.take(bytes), v: mainPool.take(bytes) };
      kvs.add(c);
      lengthAt(capacity);
      return c;
    },
    appendKv(cache, kk, v) {
      const c = KV(cache);
      const [H, t, d] = d3(kk, "appendKv");
      same(kk, v, "appendKv k/v");
      if (H !== c.heads || d !== c.d) cudaOpsFail("ZV6201", [`append of ${shp(kk)} to a KV cache of ${c.heads} heads, head dim ${c.d}`]);
      if (t === 0) return;
      if (c.len + t > c.capacity) {
        // Regrow (the only copy of the cached rows): double, or more if one append needs it.
        const cap = Math.max(2 * c.capacity, c.len + t);
        const bytes = H * cap * d * esz;
        const nk = mainPool.take(bytes), nv = mainPool.take(bytes);
        copyHeads(c.k, c.capacity, nk, cap, H, c.len, d);
        copyHeads(c.v, c.capacity, nv, cap, H, c.len, d);
        mainPool.give(c.k);
        mainPool.give(c.v);
        Object.assign(c, { k: nk, v: nv, capacity: cap });
        lengthAt(cap);
      }
      // k/v [H, t, d] into rows [len, len + t) of every head: one strided copy launch each.
      k.elt("copy_strided", T(kk).buf, null, c.k.at(c.len * d * esz), H * t * d, t * d, c.capacity * d);
      k.elt("copy_strided", T(v).buf, null, c.v.at(c.len * d * esz), H * t * d, t * d, c.capacity * d);
      c.len += t;
    },
    decodeAttentionKv(q, cache) {
      const c = KV(cache);
      const [Hq, t, d] = d3(q, "decodeAttentionKv");
      if (d !== c.d || Hq % c.heads !== 0 || c.len < 1) cudaOpsFail("ZV6201", [`decodeAttentionKv q ${shp(q)} over a KV cache of ${c.heads} heads, ${c.len} rows, head dim ${d}`]);
      if (t === 1 && (CUDA_HEAD_DIMS as readonly number[]).includes(d)) return decodeOne(T(q), c.k, c.v, c.heads, c.len, c.capacity);
      // Several query rows (not the model's decode): the dense kernel, which reads contiguous rows.
      const { k: kc, v: vc } = ops.readKv(c);
      try {
        return ops.decodeAttention(q, kc, vc);
      } finally {
        ops.free(kc);
        ops.free(vc);
      }
    },
    readKv(cache) {
      const c = KV(cache);
      const kc = alloc([c.heads, c.len, c.d]), vc = alloc([c.heads, c.len, c.d]);
      copyHeads(c.k, c.capacity, kc.buf, c.len, c.heads, c.len, c.d);
      copyHeads(c.v, c.capacity, vc.buf, c.len, c.heads, c.len, c.d);
      return { k: kc, v: vc };
    },
    freeKv(cache) {
      const c = cache as CudaKv;
      if (!kvs.delete(c)) return;
      mainPool.give(c.k);
      mainPool.give(c.v);
    },
    sync() {
      stream.synchronize();
    },
    dispose() {
      stream.synchronize();
      for (const c of kvs) for (const b of [c.k, c.v]) b.free();
      kvs.clear();
      for (const ws of decoders.values()) ws.free();
      decoders.clear();
      ramp?.free();
      ramp = null;
      for (const b of freqs.values()) b.free();
      freqs.clear();
      for (const t of live) t.buf.free();
      live.clear();
      mainPool.release();
      k.unload();
      gemv?.unload();
      gemv = undefined;
      stream.destroy();
    },
  };
  return ops;
}

export const createCudaOps: OpsFactory = async (opts = {}) => {
  const dtype: CudaDType = opts.dtype ?? "bf16";
  const { compileFile } = await import("../driver.ts");
  const dense = compileFile(densePath()).final;
  return createCudaOpsWith(openCuda(), dtype, dense);
};
