// Device memory for the model ops: a stream-ordered caching pool plus host <-> dtype byte conversion.
// Every op of one ModelOps runs on ONE stream, so a freed buffer may be handed to a later op at once: the later
// op's writes are queued after the earlier op's reads (the same reasoning as PyTorch's caching allocator). That
// keeps cuMemFree (which waits for the device) off the per-op path; release() returns the memory to the driver.
import { decodeTable, floatToF16Bits } from "../../io/dtype.ts";
import { RuntimeError } from "../../runtime/errors.ts";
import type { CudaDevice, DeviceBuffer } from "../../runtime/native.ts";
import type { CudaDType } from "./render.ts";

export const ESIZE: Record<CudaDType, number> = { f32: 4, f16: 2, bf16: 2 };

/**
 * Size classes: 256-byte steps up to 1 MiB, then 16 steps per power of two (at most ~6% slack). A KV cache that
 * grows by one token per decode step stays in one class for many steps, so its buffers are reused.
 */
export function sizeClass(bytes: number): number {
  const b = Math.max(256, bytes);
  if (b <= 1 << 20) return Math.ceil(b / 256) * 256;
  const step = 2 ** (Math.floor(Math.log2(b)) - 4);
  return Math.ceil(b / step) * step;
}

/** A pool asked for memory it does not hold while frozen (e.g. inside a graph capture, where allocating is not allowed). */
export class FrozenPoolError extends Error {
  constructor(readonly bytes: number) {
    super(`an allocation of ${bytes} bytes while the buffer pool is frozen (inside a captured step)`);
  }
}

export class BufferPool {
  private readonly free = new Map<number, DeviceBuffer[]>();
  private held = 0;
  /** While true, take() only hands out cached buffers (a miss is a FrozenPoolError, never a device allocation). */
  frozen = false;
  constructor(private readonly dev: CudaDevice) {}

  /** A buffer of at least `bytes` (its size class), reused when one of that class was given back. */
  take(bytes: number): DeviceBuffer {
    const size = sizeClass(bytes);
    const list = this.free.get(size);
    const hit = list?.pop();
    if (hit) {
      this.held -= size;
      return hit;
    }
    if (this.frozen) throw new FrozenPoolError(size);
    try {
      return this.dev.alloc(size);
    } catch (e) {
      // Out of memory with cached buffers: give them back to the driver and try once more.
      if (this.held === 0) throw e;
      this.release();
      return this.dev.alloc(size);
    }
  }

  /** Back to the pool (not to the driver). Buffers of other sizes (e.g. the fused pipeline's) go to the driver. */
  give(buf: DeviceBuffer): void {
    if (buf.released) return;
    if (sizeClass(buf.bytes) !== buf.bytes) {
      buf.free();
      return;
    }
    const list = this.free.get(buf.bytes) ?? [];
    list.push(buf);
    this.free.set(buf.bytes, list);
    this.held += buf.bytes;
  }

  /** Bytes cached for reuse. */
  get cachedBytes(): number {
    return this.held;
  }

  /** Frees every cached buffer (waits for the device). */
  release(): void {
    for (const list of this.free.values()) for (const b of list) b.free();
    this.free.clear();
    this.held = 0;
  }
}

/** Device memory one ModelOps holds (in use or cached by its pools) and the most it held since resetPeak(). */
export interface DeviceMemoryStats {
  readonly heldBytes: number;
  readonly peakBytes: number;
  readonly cachedBytes: number;
  /** High-water mark of held minus cached bytes since resetPeak. */
  readonly peakLiveBytes: number;
}

/**
 * Counts the bytes held from the driver through a metered view of the device (device()): every allocation of the
 * ops (pool misses, fused-pipeline arenas, workspaces), freed or not, and the high-water mark. The serving planner
 * calibrates its prefill reserve from the mark (src/serve/engine.ts calibratePrefill). An allocation the driver
 * refuses gets one retry after `onPressure` gave cached memory back (e.g. the pool's free buffers); `capBytes`
 * bounds what may be held at once (the same ZV3004 a full device raises: tests and memory-capped runs).
 */
export class DeviceMeter {
  heldBytes = 0;
  peakBytes = 0;
  /** High-water mark of held minus cached bytes (what must fit: cached buffers go back under pressure). */
  peakLiveBytes = 0;
  capBytes = Infinity;
  /** Bytes held but cached for reuse (the owner's pool), reclaimable by onPressure. */
  cached: () => number = () => 0;
  /** Gives cached memory back to the driver; true when it freed anything (then the allocation is retried). */
  onPressure: (() => boolean) | null = null;

  resetPeak(): void {
    this.peakBytes = this.heldBytes;
    this.peakLiveBytes = this.heldBytes - this.cached();
  }

  /** Updates the live high-water mark (after an allocation or a take from the cache). */
  noteLive(): void {
    this.peakLiveBytes = Math.max(this.peakLiveBytes, this.heldBytes - this.cached());
  }

  /** A view of `dev` whose alloc (and upload, which allocates through it) is counted here. */
  device(dev: CudaDevice): CudaDevice {
    const view = Object.create(dev) as CudaDevice;
    Object.defineProperty(view, "alloc", { value: (bytes: number) => this.alloc(dev, bytes) });
    return view;
  }

  private alloc(dev: CudaDevice, bytes: number): DeviceBuffer {
    let buf: DeviceBuffer;
    try {
      if (this.heldBytes + bytes > this.capBytes) {
        throw new RuntimeError("ZV3004", [`${bytes} bytes requested with ${this.heldBytes} of the ${this.capBytes}-byte cap held`], { driver: { cuName: "CUDA_ERROR_OUT_OF_MEMORY", cuCall: "cuMemAlloc_v2" } });
      }
      buf = dev.alloc(bytes);
    } catch (e) {
      if (!(e instanceof RuntimeError && e.code === "ZV3004") || !this.onPressure?.()) throw e;
      if (this.heldBytes + bytes > this.capBytes) throw e;
      buf = dev.alloc(bytes);
    }
    this.heldBytes += bytes;
    this.peakBytes = Math.max(this.peakBytes, this.heldBytes);
    this.noteLive();
    // Counted down on the buffer's first free() (later calls are no-ops, as DeviceBuffer's own).
    const free = buf.free.bind(buf);
    buf.free = () => {
      if (buf.released) return;
      free();
      this.heldBytes -= bytes;
    };
    return buf;
  }
}

/** What a ModelOps on the device tells about its memory (cuda-ops.ts `memory`; the serving engine's calibration). */
export interface OpsMemory {
  readonly meter: DeviceMeter;
  stats(): DeviceMemoryStats;
  resetPeak(): void;
  /** Gives the main pool's cached free buffers back to the driver; returns the bytes freed. */
  releaseCached(): number;
  /** Free bytes on the device (the driver's count). */
  deviceFree(): number;
  /** A mark before a unit of work (a request's prefill): freeSince(mark) frees every tensor allocated after it
   *  that is still live, i.e. what a failed unit left behind. */
  mark(): number;
  freeSince(mark: number): number;
}

/** f32 values -> little-endian bytes of `dtype` (round to nearest even, like torch's casts). */
export function encodeF32(data: Float32Array, dtype: CudaDType): Uint8Array {
  if (dtype === "f32") return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  const out = new Uint16Array(data.length);
  if (dtype === "bf16") {
    const u = new Uint32Array(data.buffer, data.byteOffset, data.length);
    for (let i = 0; i < data.length; i++) {
      const x = u[i]!;
      out[i] = (x & 0x7fffffff) > 0x7f800000 ? (x >>> 16) | 0x40 : (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
    }
  } else for (let i = 0; i < data.length; i++) out[i] = floatToF16Bits(data[i]!);
  return new Uint8Array(out.buffer);
}

/** Little-endian bytes of `dtype` -> f32 values. */
export function decodeToF32(bytes: Uint8Array, dtype: CudaDType): Float32Array {
  if (dtype === "f32") return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const n = bytes.byteLength / 2;
  const h = bytes.byteOffset % 2 === 0 ? new Uint16Array(bytes.buffer, bytes.byteOffset, n) : new Uint16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const out = new Float32Array(n);
  if (dtype === "bf16") {
    // bf16 is the top half of an f32: a shift (a table lookup per value was the serving host's largest cost at
    // large batches: 2M logits a step).
    const o = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) o[i] = h[i]! << 16;
    return out;
  }
  const table = decodeTable(dtype);
  for (let i = 0; i < n; i++) out[i] = table[h[i]!]!;
  return out;
}
