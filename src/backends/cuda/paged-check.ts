// The paged decode kernel against the host reference (src/serve/paged-ref.ts) on a real GPU: random ragged batches,
// both page layouts, page sizes and GQA groups; K/V reach the pages both by host writes (prefill's kept rows) and by
// the device append kernel (decode tokens). Shared by test/gpu/paged.test.ts and the bundled bench/serve-gpu.ts.
// Also times one batched decode step (bandwidth-bound: bytes of the caches read over time).
import { decodeAttention } from "../../interp/kernels.ts";
import { roundTo } from "../../io/dtype.ts";
import type { DTensor, ModelOps } from "../../model/ops.ts";
import type { CudaDevice, DeviceBuffer } from "../../runtime/native.ts";
import { pagedDecodeReference } from "../../serve/paged-ref.ts";
import { HostPageStorage, PagedKvPool, type PageLayout, type PageStorage, type PoolGeometry } from "../../serve/pool.ts";
import type { Arch } from "./compile.ts";
import { CudaPagedDecode, CudaPageStorage, decodeRows, encodeRows, loadPagedKernels } from "./paged.ts";
import { createCudaAttention } from "./paged-serve.ts";
import type { CudaDType } from "./render.ts";
import { xorshift32 } from "../../interp/probes.ts";
import { ESIZE } from "./model-pool.ts";

export interface PagedCase {
  readonly dtype: CudaDType;
  readonly d: number;
  readonly Hkv: number;
  readonly g: number;
  readonly pageTokens: number;
  readonly layout: PageLayout;
  /** Kept tokens per sequence (per head for per-head: ragged around this). */
  readonly lengths: readonly number[];
  readonly seed: number;
  /** q/o layout: [batch, Hq, d] or the model's head-major [Hq, batch, d]. */
  readonly qLayout?: "bhd" | "hbd";
  /** As a serving step runs: tables uploaded first, the new rows NaN until the append kernel writes them, and the
   *  split launched right behind it (PDL) with `fresh` = 1, so it reads every older key before its wait. */
  readonly early?: { readonly fresh: number };
}

/** [A, B, d] -> [B, A, d]. */
function swap01(x: Float32Array, A: number, B: number, d: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let a = 0; a < A; a++) for (let b = 0; b < B; b++) out.set(x.subarray((a * B + b) * d, (a * B + b + 1) * d), (b * A + a) * d);
  return out;
}

/** Uniform values in [-0.5, 0.5) from the shared xorshift32 (src/interp/probes.ts). */
function rng(seed: number): () => number {
  const next = xorshift32(seed);
  return () => next() / 2 ** 32 - 0.5;
}

/** Writes to both a device pool and a host mirror (values rounded to the device dtype). */
class Mirror implements PageStorage {
  readonly kind = "cuda";
  constructor(readonly dev: CudaPageStorage, readonly host: HostPageStorage, private readonly dt: CudaDType) {}
  writeRows(rows: Int32Array, k: Float32Array, v: Float32Array): void {
    this.dev.writeRows(rows, k, v);
    this.host.writeRows(rows, k.map((x) => roundTo(this.dt, x)), v.map((x) => roundTo(this.dt, x)));
  }
  dispose(): void {
    this.dev.dispose();
  }
}

export interface PagedCheckResult {
  readonly maxErr: number;
  readonly tol: number;
  readonly bad: string[];
}

export function checkPagedCase(dev: CudaDevice, arch: Arch, c: PagedCase): PagedCheckResult {
  const r = rng(c.seed);
  const Hq = c.Hkv * c.g;
  const esz = ESIZE[c.dtype];
  const batch = c.lengths.length;
  const need = c.lengths.reduce((a, n) => a + (c.layout === "per-layer" ? 1 : c.Hkv) * (Math.ceil((n + 2) / c.pageTokens) + 1), 0);
  const geom: PoolGeometry = { layers: 1, kvHeads: c.Hkv, headDim: c.d, pageTokens: c.pageTokens, layout: c.layout, numPages: need + 3, elemBytes: esz };
  const kernels = loadPagedKernels(dev, arch, c.dtype, c.d);
  const devStore = new CudaPageStorage(dev, geom, c.dtype);
  const host = new HostPageStorage(geom);
  const pool = new PagedKvPool(geom, new Mirror(devStore, host, c.dtype));
  const ids = c.lengths.map((_, b) => `s${b}`);
  const rand = (n: number): Float32Array => Float32Array.from({ length: n }, () => 2 * r());
  const appendBuf = dev.alloc(Math.max(16, 2 * c.Hkv * batch * c.d * esz));
  const rowsBuf = dev.alloc(4 * c.Hkv * batch);
  const qBuf = dev.alloc(batch * Hq * c.d * esz);
  const oBuf = dev.alloc(batch * Hq * c.d * esz);
  const decode = new CudaPagedDecode(dev, devStore, kernels, Hq, batch);
  try {
    // Prefill's kept rows through host writes (ragged per head in the per-head layout).
    c.lengths.forEach((n, b) => {
      pool.addSequence(ids[b]!);
      const counts = Array.from({ length: c.Hkv }, () => (c.layout === "per-head" ? Math.max(0, n - Math.floor((r() + 0.5) * Math.min(n, 5))) : n));
      pool.append(ids[b]!, 0, rand(c.Hkv * n * c.d), rand(c.Hkv * n * c.d), n, counts);
    });
    // One decode token per sequence through the device append kernel: source [Hkv, batch, d], one launch.
    const kNew = rand(c.Hkv * batch * c.d);
    const vNew = rand(c.Hkv * batch * c.d);
    const rows = new Int32Array(c.Hkv * batch);
    ids.forEach((id, b) => {
      const add = c.layout === "per-layer" ? [1] : new Array<number>(c.Hkv).fill(1);
      const rr = pool.reserveRows(id, 0, add, 1);
      for (let kv = 0; kv < c.Hkv; kv++) {
        rows[kv * batch + b] = rr[kv]!;
        const src = (kv * batch + b) * c.d;
        host.writeRows(Int32Array.of(rr[kv]!), kNew.subarray(src, src + c.d).map((x) => roundTo(c.dtype, x)), vNew.subarray(src, src + c.d).map((x) => roundTo(c.dtype, x)));
      }
    });
    const tables = pool.tables(ids, 0);
    const half = c.Hkv * batch * c.d * esz;
    appendBuf.write(encodeRows(kNew, c.dtype), 0);
    appendBuf.write(encodeRows(vNew, c.dtype), half);
    rowsBuf.write(rows);
    const q = rand(batch * Hq * c.d).map((x) => roundTo(c.dtype, x));
    const hbd = c.qLayout === "hbd";
    qBuf.write(encodeRows(hbd ? swap01(q, batch, Hq, c.d) : q, c.dtype));
    oBuf.fill32(0xffffffff);
    const scale = 1 / Math.sqrt(c.d);
    if (c.early) {
      const nan = new Float32Array(rows.length * c.d).fill(NaN);
      devStore.writeRows(rows, nan, nan);
    }
    const s = c.early ? dev.createStream() : null;
    try {
      // Early: the tables go up before the append, which the split follows at once; else the classic order.
      const up = c.early ? decode.upload(tables, s) : null;
      devStore.appendDevice(kernels, { k: appendBuf, v: appendBuf.at(half), t: batch }, rowsBuf, s);
      if (up) decode.launch({ ...up, fresh: c.early!.fresh }, qBuf, oBuf, scale, s, c.qLayout ?? "bhd");
      else decode.enqueue(tables, qBuf, oBuf, scale, null, c.qLayout ?? "bhd");
      s?.synchronize();
    } finally {
      s?.destroy();
    }
    dev.synchronize();
    const raw = decodeRows(oBuf.read(new Uint8Array(batch * Hq * c.d * esz)), c.dtype);
    const got = hbd ? swap01(raw, Hq, batch, c.d) : raw;
    const want = pagedDecodeReference({ geometry: geom, k: host.k, v: host.v, tables, q, Hq, scale });
    const tol = c.dtype === "bf16" ? 1.6e-2 : c.dtype === "f16" ? 2e-3 : 2e-4;
    let maxErr = 0;
    const bad: string[] = [];
    for (let i = 0; i < got.length; i++) {
      const err = Math.abs(got[i]! - want[i]!) / Math.max(1, Math.abs(want[i]!));
      if (!(err <= tol) && bad.length < 5) bad.push(`o[${Math.floor(i / (Hq * c.d))}, ${Math.floor(i / c.d) % Hq}, ${i % c.d}] = ${got[i]} want ${want[i]}`);
      maxErr = Math.max(maxErr, Number.isNaN(err) ? Infinity : err);
    }
    return { maxErr, tol, bad };
  } finally {
    decode.free();
    for (const b of [appendBuf, rowsBuf, qBuf, oBuf]) b.free();
    pool.dispose();
  }
}

/** Median time of one batched paged decode step (one layer) and the bandwidth it implies. */
export function benchPaged(dev: CudaDevice, arch: Arch, o: { dtype: CudaDType; d: number; Hkv: number; g: number; pageTokens: number; batch: number; len: number }): { us: number; gbps: number } {
  const esz = ESIZE[o.dtype];
  const geom: PoolGeometry = { layers: 1, kvHeads: o.Hkv, headDim: o.d, pageTokens: o.pageTokens, layout: "per-layer", numPages: o.batch * Math.ceil(o.len / o.pageTokens), elemBytes: esz };
  const kernels = loadPagedKernels(dev, arch, o.dtype, o.d);
  const store = new CudaPageStorage(dev, geom, o.dtype);
  const pool = new PagedKvPool(geom, store);
  const Hq = o.Hkv * o.g;
  const q = dev.alloc(o.batch * Hq * o.d * esz);
  const out = dev.alloc(o.batch * Hq * o.d * esz);
  q.zero();
  store.k.zero();
  store.v.zero();
  const dec = new CudaPagedDecode(dev, store, kernels, Hq, o.batch);
  try {
    const ids = Array.from({ length: o.batch }, (_, b) => `s${b}`);
    // Page bookkeeping only (reserveRows): the timing does not depend on the values.
    for (const id of ids) pool.addSequence(id), pool.reserveRows(id, 0, [o.len]);
    const t = pool.tables(ids, 0);
    const times: number[] = [];
    for (let i = 0; i < 25; i++) times.push(dev.time(() => dec.enqueue(t, q, out, 1 / Math.sqrt(o.d))));
    times.sort((a, b) => a - b);
    const ms = times[12]!;
    const bytes = 2 * o.batch * o.len * o.Hkv * o.d * esz;
    return { us: ms * 1e3, gbps: bytes / (ms * 1e-3) / 1e9 };
  } finally {
    dec.free();
    q.free();
    out.free();
    pool.dispose();
  }
}

/**
 * The serving engine's CUDA attention (src/backends/cuda/paged-serve.ts) end to end on the device: prefill caches
 * appended from device tensors, one decode step through beginStep (all layers' rows and tables in one upload),
 * appendStep (the append kernel) and attend (q/o head-major [Hq, B, d]), checked layer by layer against the
 * interpreter's decode over dense copies the check keeps itself.
 */
export function checkServeAttention(dev: CudaDevice, arch: Arch, c: { dtype: CudaDType; d: number; Hkv: number; g: number; pageTokens: number; layout: PageLayout; layers: number; lengths: readonly number[]; seed: number }): PagedCheckResult {
  const r = rng(c.seed);
  const Hq = c.Hkv * c.g;
  const B = c.lengths.length;
  const esz = ESIZE[c.dtype];
  const stream = dev.createStream();
  const bufs: DeviceBuffer[] = [];
  const tensor = (shape: number[], data: Float32Array): DTensor & { buf: DeviceBuffer } => {
    const buf = dev.alloc(Math.max(16, data.length * esz));
    buf.write(encodeRows(data, c.dtype));
    bufs.push(buf);
    return { shape, buf };
  };
  // The slice of CudaOpsHandle the attention uses.
  const ops = {
    name: "cuda", dtype: c.dtype, ctx: { dev, arch }, stream,
    bufferOf: (x: DTensor) => (x as DTensor & { buf: DeviceBuffer }).buf,
    adopt: (buf: DeviceBuffer, shape: readonly number[]) => (bufs.push(buf), { shape, buf }),
    empty: (shape: readonly number[]) => {
      const buf = dev.alloc(Math.max(16, shape.reduce((a, x) => a * x, 1) * esz));
      bufs.push(buf);
      return { shape, buf };
    },
  } as unknown as ModelOps;
  const need = c.lengths.reduce((a, n) => a + c.layers * (c.layout === "per-layer" ? 1 : c.Hkv) * (Math.ceil((n + 1) / c.pageTokens) + 1), 0);
  const attn = createCudaAttention(ops, { layers: c.layers, heads: Hq, kvHeads: c.Hkv, headDim: c.d, pageTokens: c.pageTokens, layout: c.layout, numPages: need + 2, maxBatch: B });
  const rand = (n: number): Float32Array => Float32Array.from({ length: n }, () => roundTo(c.dtype, 2 * r()));
  const ids = c.lengths.map((_, b) => `s${b}`);
  // dense[l][b] = { k, v } as [Hkv, len, d] rows, what the caches must hold.
  const dense: { k: number[][][]; v: number[][][] }[][] = [];
  try {
    for (const id of ids) attn.pool.addSequence(id);
    for (let l = 0; l < c.layers; l++) {
      dense.push([]);
      c.lengths.forEach((n, b) => {
        const k = rand(c.Hkv * n * c.d);
        const v = rand(c.Hkv * n * c.d);
        attn.appendCache(ids[b]!, l, tensor([c.Hkv, n, c.d], k), tensor([c.Hkv, n, c.d], v));
        const rows = (x: Float32Array, kv: number): number[][] => Array.from({ length: n }, (_, i) => Array.from(x.subarray((kv * n + i) * c.d, (kv * n + i + 1) * c.d)));
        dense[l]!.push({ k: Array.from({ length: c.Hkv }, (_, kv) => rows(k, kv)), v: Array.from({ length: c.Hkv }, (_, kv) => rows(v, kv)) });
      });
    }
    attn.beginStep!(ids);
    const scale = 1 / Math.sqrt(c.d);
    let maxErr = 0;
    const bad: string[] = [];
    const tol = c.dtype === "bf16" ? 1.6e-2 : c.dtype === "f16" ? 2e-3 : 2e-4;
    for (let l = 0; l < c.layers; l++) {
      const k = rand(c.Hkv * B * c.d);
      const v = rand(c.Hkv * B * c.d);
      const q = rand(Hq * B * c.d); // head-major [Hq, B, d]
      attn.appendStep(l, ids, tensor([c.Hkv, B, c.d], k), tensor([c.Hkv, B, c.d], v));
      const o = attn.attend(l, ids, tensor([Hq, B, c.d], q), scale) as DTensor & { buf: DeviceBuffer };
      stream.synchronize();
      const got = decodeRows(o.buf.read(new Uint8Array(Hq * B * c.d * esz)), c.dtype);
      for (let b = 0; b < B; b++)
        for (let kv = 0; kv < c.Hkv; kv++) {
          const dk = dense[l]![b]!.k[kv]!;
          const dv = dense[l]![b]!.v[kv]!;
          dk.push(Array.from(k.subarray((kv * B + b) * c.d, (kv * B + b + 1) * c.d)));
          dv.push(Array.from(v.subarray((kv * B + b) * c.d, (kv * B + b + 1) * c.d)));
          const qs = new Float64Array(c.g * c.d);
          for (let j = 0; j < c.g; j++) qs.set(q.subarray(((kv * c.g + j) * B + b) * c.d, ((kv * c.g + j) * B + b + 1) * c.d), j * c.d);
          const want = decodeAttention(qs, Float64Array.from(dk.flat()), Float64Array.from(dv.flat()), c.g, 1, dk.length, c.d, scale, (s) => s);
          for (let j = 0; j < c.g; j++)
            for (let e = 0; e < c.d; e++) {
              const a = got[((kv * c.g + j) * B + b) * c.d + e]!;
              const w = want[j * c.d + e]!;
              const err = Math.abs(a - w) / Math.max(1, Math.abs(w));
              if (!(err <= tol) && bad.length < 5) bad.push(`layer ${l} seq ${b} head ${kv * c.g + j} [${e}] = ${a} want ${w}`);
              maxErr = Math.max(maxErr, Number.isNaN(err) ? Infinity : err);
            }
        }
    }
    return { maxErr, tol, bad };
  } finally {
    attn.dispose();
    for (const b of bufs) b.free();
    stream.destroy();
  }
}
