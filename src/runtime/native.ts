// Public CUDA runtime API of zipvl: typed wrappers over the zipvl_native addon. This is the module the rest of
// zipvl imports; it is the only importer of ./cuda-driver.ts, which loads the addon and codes its errors (ZV30xx).
// Calls are synchronous and run on the calling JS thread; one device (the primary context of one ordinal) per
// process. Resources are freed explicitly (free()/destroy()): GPU memory must not wait for the JS GC.
import {
  loadNativeAddon,
  type DeviceInfo,
  type MockLaunchRecord,
  type NativeAddon,
  type NvrtcOutput,
} from "./cuda-driver.ts";
import { RuntimeError } from "./errors.ts";

export { RUNTIME_CODES, RuntimeError, type RuntimeErrorCode } from "./errors.ts";
export { nativeAddonAvailable, nativeAddonPath, toRuntimeError } from "./cuda-driver.ts";
export type { DeviceInfo, MockLaunchRecord, NvrtcOutput } from "./cuda-driver.ts";

export type Dim3 = readonly [number, number, number];
/** Bytes of the kernel's single by-value argument struct (zv_args.cuh: 8 bytes per field). */
export type ArgsBlock = ArrayBuffer | ArrayBufferView;
export interface TypedArrayCtor<T extends ArrayBufferView> {
  new (length: number): T;
  readonly BYTES_PER_ELEMENT: number;
}
export interface OpenOptions {
  /** Device ordinal; default $ZIPVL_DEVICE or 0. */
  readonly ordinal?: number;
  /** libcuda path; default $ZIPVL_LIBCUDA or libcuda.so.1 (the mock: native/mock/libcuda_mock.so). */
  readonly libcuda?: string;
}
export interface LaunchConfig {
  readonly grid: Dim3;
  readonly block: Dim3;
  readonly sharedBytes?: number;
  /** Omitted or null: the legacy default stream. */
  readonly stream?: CudaStream | null;
  /** Programmatic dependent launch: the kernel may start while the previous one on the stream finishes, so it must
   *  run griddepcontrol.wait before reading that kernel's outputs (zv_gemv.cuh does). Plain launch where the driver
   *  lacks cuLaunchKernelEx. */
  readonly pdl?: boolean;
}
export interface CompileOptions {
  /** File name used in NVRTC diagnostics. */
  readonly name?: string;
  /** e.g. ["-arch=sm_90a", "-std=c++17"]; an sm_XX arch yields a cubin, otherwise PTX. */
  readonly options?: readonly string[];
  /** Headers resolvable by #include "name" without touching the file system. */
  readonly headers?: Readonly<Record<string, string>>;
}

function misuse(what: string): RuntimeError {
  return new RuntimeError("ZV3008", [what]);
}

function streamOf(s: CudaStream | null | undefined): bigint {
  return s ? s.handle : 0n;
}

function byteLength(b: ArgsBlock): number {
  return b instanceof ArrayBuffer ? b.byteLength : b.byteLength;
}

function checkCount(v: number, what: string, min: number): void {
  if (!Number.isSafeInteger(v) || v < min) throw misuse(`${what} must be an integer >= ${min}, got ${String(v)}`);
}

/** A resource that must be released exactly once; every use after release is ZV3008. */
abstract class Owned {
  #alive = true;
  protected constructor(protected readonly n: NativeAddon, private readonly kind: string) {}
  get released(): boolean {
    return !this.#alive;
  }
  protected live(): NativeAddon {
    if (!this.#alive) throw misuse(`${this.kind} used after it was freed/destroyed`);
    return this.n;
  }
  /** Runs the release once; later calls are no-ops so cleanup paths can be unconditional. */
  protected release(fn: (n: NativeAddon) => void): void {
    if (!this.#alive) return;
    this.#alive = false;
    fn(this.n);
  }
}

export class DeviceBuffer extends Owned {
  /** @internal use CudaDevice.alloc */
  constructor(n: NativeAddon, readonly ptr: bigint, readonly bytes: number) {
    super(n, "DeviceBuffer");
  }
  /** Device address `offset` bytes into the buffer (for argument blocks). */
  at(offset: number): bigint {
    checkCount(offset, "offset", 0);
    if (offset > this.bytes) throw misuse(`offset ${offset} is past the end of a ${this.bytes}-byte buffer`);
    return this.ptr + BigInt(offset);
  }
  /** Host -> device copy at `offset`; queued on `stream` if given (the source may be reused at once). */
  write(src: ArgsBlock, offset = 0, stream?: CudaStream | null): void {
    const len = byteLength(src);
    this.bounds(offset, len);
    const n = this.live();
    if (stream) n.htod(this.ptr + BigInt(offset), src, stream.handle);
    else n.htod(this.ptr + BigInt(offset), src);
  }
  /** Device -> host copy into `dst`; returns `dst`. */
  read<T extends ArgsBlock>(dst: T, offset = 0, stream?: CudaStream | null): T {
    this.bounds(offset, byteLength(dst));
    const n = this.live();
    if (stream) n.dtoh(dst, this.ptr + BigInt(offset), stream.handle);
    else n.dtoh(dst, this.ptr + BigInt(offset));
    return dst;
  }
  /** Downloads the buffer (or its first `count` elements) as a new typed array. */
  toArray<T extends ArrayBufferView>(ctor: TypedArrayCtor<T>, count = Math.floor(this.bytes / ctor.BYTES_PER_ELEMENT)): T {
    return this.read(new ctor(count));
  }
  /** Sets every 32-bit word to `value` (u32 bits); the buffer size must be a multiple of 4. */
  fill32(value: number, stream?: CudaStream | null): void {
    if (this.bytes % 4 !== 0) throw misuse(`fill32 on a ${this.bytes}-byte buffer (not a multiple of 4)`);
    this.live().memsetD32(this.ptr, value >>> 0, this.bytes / 4, streamOf(stream));
  }
  zero(stream?: CudaStream | null): void {
    this.live().memsetD8(this.ptr, 0, this.bytes, streamOf(stream));
  }
  free(): void {
    this.release((n) => n.memFree(this.ptr));
  }
  private bounds(offset: number, len: number): void {
    checkCount(offset, "offset", 0);
    if (offset + len > this.bytes) throw misuse(`copy of ${len} bytes at offset ${offset} overruns a ${this.bytes}-byte buffer`);
  }
}

export class CudaStream extends Owned {
  /** @internal use CudaDevice.createStream */
  constructor(n: NativeAddon, readonly handle: bigint) {
    super(n, "CudaStream");
  }
  synchronize(): void {
    this.live().streamSynchronize(this.handle);
  }
  destroy(): void {
    this.release((n) => n.streamDestroy(this.handle));
  }
}

export class CudaFunction {
  /** @internal use CudaModule.getFunction */
  constructor(private readonly module: CudaModule, readonly handle: bigint, readonly name: string) {}
  /** Raises the dynamic shared memory limit (needed above 48 KiB; at most info.maxSharedPerBlockOptin). */
  setMaxDynamicShared(bytes: number): void {
    checkCount(bytes, "shared bytes", 0);
    this.module.addon().setMaxDynamicShared(this.handle, bytes);
  }
  /** CTAs of `threads` threads with `sharedBytes` of dynamic shared memory that one SM holds at once. */
  maxActiveBlocks(threads: number, sharedBytes = 0): number {
    checkCount(threads, "threads", 1);
    checkCount(sharedBytes, "shared bytes", 0);
    return this.module.addon().maxActiveBlocks(this.handle, threads, sharedBytes);
  }
  /** @internal */
  addon(): NativeAddon {
    return this.module.addon();
  }
}

export class CudaModule extends Owned {
  /** @internal use CudaDevice.loadModule */
  constructor(n: NativeAddon, readonly handle: bigint) {
    super(n, "CudaModule");
  }
  getFunction(name: string): CudaFunction {
    return new CudaFunction(this, this.live().getFunction(this.handle, name), name);
  }
  /** @internal */
  addon(): NativeAddon {
    return this.live();
  }
  unload(): void {
    this.release((n) => n.moduleUnload(this.handle));
  }
}

export class CudaEvent extends Owned {
  /** @internal use CudaDevice.createEvent */
  constructor(n: NativeAddon, readonly handle: bigint) {
    super(n, "CudaEvent");
  }
  record(stream?: CudaStream | null): void {
    this.live().eventRecord(this.handle, streamOf(stream));
  }
  synchronize(): void {
    this.live().eventSynchronize(this.handle);
  }
  /** Milliseconds from `start` to this event; both must have completed (synchronize this one first). */
  elapsedSince(start: CudaEvent): number {
    return this.live().eventElapsed(start.handle, this.handle);
  }
  destroy(): void {
    this.release((n) => n.eventDestroy(this.handle));
  }
}

/** An instantiated CUDA graph (the captured graph is kept until destroy for debugging/re-instantiation). */
export class CudaGraph extends Owned {
  /** @internal use CudaDevice.captureGraph */
  constructor(n: NativeAddon, readonly graph: bigint, readonly exec: bigint) {
    super(n, "CudaGraph");
  }
  launch(stream?: CudaStream | null): void {
    this.live().graphLaunch(this.exec, streamOf(stream));
  }
  destroy(): void {
    this.release((n) => {
      n.graphExecDestroy(this.exec);
      n.graphDestroy(this.graph);
    });
  }
}

let opened: CudaDevice | undefined;

export class CudaDevice {
  private constructor(readonly info: DeviceInfo, private readonly n: NativeAddon) {}

  /**
   * Loads the driver and makes the device's primary context current. Idempotent: later calls return the same
   * device. Errors: ZV3001 addon missing, ZV3002 no driver, ZV3003 no device, ZV3005 other driver failure.
   */
  static open(opts: OpenOptions = {}): CudaDevice {
    const env = process.env["ZIPVL_DEVICE"];
    const ordinal = opts.ordinal ?? (env ? Number(env) : 0);
    checkCount(ordinal, "device ordinal", 0);
    if (opened) {
      if (opened.info.ordinal !== ordinal) throw misuse(`device ${opened.info.ordinal} is already open; one device per process`);
      return opened;
    }
    const n = loadNativeAddon();
    const lib = opts.libcuda ?? process.env["ZIPVL_LIBCUDA"];
    const raw = lib ? n.init(ordinal, lib) : n.init(ordinal);
    const cc = raw.computeCapability;
    opened = new CudaDevice(Object.freeze({ ...raw, computeCapability: [cc[0], cc[1]] as const }), n);
    return opened;
  }

  memInfo(): { free: number; total: number } {
    return this.n.memGetInfo();
  }
  /** Allocates `bytes` of device memory (ZV3004 when the device is out of memory). Contents are undefined. */
  alloc(bytes: number): DeviceBuffer {
    checkCount(bytes, "allocation size", 1);
    return new DeviceBuffer(this.n, this.n.memAlloc(bytes), bytes);
  }
  /** alloc + write of a whole typed array. */
  upload(data: ArgsBlock, stream?: CudaStream | null): DeviceBuffer {
    const buf = this.alloc(Math.max(1, byteLength(data)));
    try {
      buf.write(data, 0, stream);
    } catch (e) {
      buf.free();
      throw e;
    }
    return buf;
  }
  /** Default streams order against the legacy stream; nonBlocking ones do not (sync them yourself). */
  createStream(opts: { nonBlocking?: boolean } = {}): CudaStream {
    return new CudaStream(this.n, this.n.streamCreate(opts.nonBlocking ?? false));
  }
  /** Loads a cubin/fatbin, or PTX text (NUL terminator optional). */
  loadModule(image: ArgsBlock): CudaModule {
    return new CudaModule(this.n, this.n.moduleLoad(image));
  }
  /** Launches `fn`, whose only parameter is a by-value struct with exactly the bytes of `args`. */
  launch(fn: CudaFunction, cfg: LaunchConfig, args?: ArgsBlock): void {
    const shared = cfg.sharedBytes ?? 0;
    checkCount(shared, "sharedBytes", 0);
    for (const d of [...cfg.grid, ...cfg.block]) checkCount(d, "grid/block dimension", 1);
    fn.addon().launch(fn.handle, cfg.grid, cfg.block, shared, streamOf(cfg.stream), args, cfg.pdl === true);
  }
  createEvent(): CudaEvent {
    return new CudaEvent(this.n, this.n.eventCreate());
  }
  /** Runs `body` between two events on `stream` and returns the GPU time in milliseconds. */
  time(body: () => void, stream?: CudaStream | null): number {
    const a = this.createEvent();
    const b = this.createEvent();
    try {
      a.record(stream);
      body();
      b.record(stream);
      b.synchronize();
      return b.elapsedSince(a);
    } finally {
      a.destroy();
      b.destroy();
    }
  }
  /**
   * Captures the work `body` queues on `stream` (a created stream, not the legacy one) into an instantiated graph.
   * Nothing runs during capture; launch the graph to run it. Capture ends even if `body` throws.
   */
  captureGraph(stream: CudaStream, body: () => void): CudaGraph {
    const n = this.n;
    n.beginCapture(stream.handle);
    try {
      body();
    } catch (e) {
      try {
        n.graphDestroy(n.endCapture(stream.handle));
      } catch {
        /* the capture may already be invalidated; the body's error is the one to report */
      }
      throw e;
    }
    const graph = n.endCapture(stream.handle);
    try {
      return new CudaGraph(n, graph, n.graphInstantiate(graph));
    } catch (e) {
      n.graphDestroy(graph);
      throw e;
    }
  }
  /** Waits for all work on the device (cuCtxSynchronize). */
  synchronize(): void {
    this.n.synchronize();
  }
  /** Geometry of the last launch when running on the mock driver; null on a real driver. */
  mockLastLaunch(): MockLaunchRecord | null {
    return this.n.mockLastLaunch();
  }
}

/** Field of an argument block: every zv_args.cuh field is 8 bytes (pointer, long long or double). */
export type ArgField = bigint | DeviceBuffer | null | { readonly i64: number | bigint } | { readonly f64: number };

/**
 * Packs fields into an 8-byte-per-field block. Plain numbers are rejected on purpose: 1.0 and 1 are the same JS
 * value, so the caller must say whether a slot is an integer ({i64}) or a double ({f64}).
 */
export function packArgs(fields: readonly ArgField[]): ArrayBuffer {
  const buf = new ArrayBuffer(fields.length * 8);
  const view = new DataView(buf);
  fields.forEach((f, i) => {
    const at = i * 8;
    if (f === null) view.setBigUint64(at, 0n, true);
    else if (typeof f === "bigint") view.setBigUint64(at, BigInt.asUintN(64, f), true);
    else if (f instanceof DeviceBuffer) view.setBigUint64(at, f.ptr, true);
    else if ("f64" in f) view.setFloat64(at, f.f64, true);
    else view.setBigInt64(at, BigInt(f.i64), true);
  });
  return buf;
}

/** Compiles CUDA C++ with NVRTC (ZV3006 if NVRTC is missing, ZV3007 with the log on compile errors). */
export function nvrtcCompile(source: string, opts: CompileOptions = {}): NvrtcOutput {
  const lib = process.env["ZIPVL_LIBNVRTC"];
  const args = [source, opts.name ?? "zipvl_kernel.cu", opts.options ?? [], opts.headers ?? {}] as const;
  return lib ? loadNativeAddon().nvrtcCompile(...args, lib) : loadNativeAddon().nvrtcCompile(...args);
}

/** NVRTC [major, minor] (ZV3006 if it cannot be loaded). */
export function nvrtcVersion(): [number, number] {
  const lib = process.env["ZIPVL_LIBNVRTC"];
  return lib ? loadNativeAddon().nvrtcVersion(lib) : loadNativeAddon().nvrtcVersion();
}

/** Whether cuBLASLt (libcublasLt.so.13, or $ZIPVL_LIBCUBLASLT) loads, and its cublasLtGetVersion(). Never throws ZV3006/7. */
export function cublasLtInfo(): { available: boolean; version: number | null; error: string | null } {
  const lib = process.env["ZIPVL_LIBCUBLASLT"];
  return lib ? loadNativeAddon().cublasLtInfo(lib) : loadNativeAddon().cublasLtInfo();
}

export type GemmDType = "f32" | "f16" | "bf16";
const GEMM_ESIZE: Record<GemmDType, number> = { f32: 4, f16: 2, bf16: 2 };

/**
 * cuBLASLt GEMMs on row-major device tensors: y[M,N] = x[M,K] w[N,K]^T (+ bias[N]), the nn.Linear layout, with f32
 * accumulation. One descriptor, layouts and heuristic algorithm per (M, N, K, dtype, bias), cached in the addon.
 * ZV3009 when the library cannot be loaded, ZV3010 (status named) when a call fails, ZV3011 without an algorithm.
 */
export class Blas {
  private constructor(private readonly n: NativeAddon, readonly version: number, readonly path: string) {}

  /** Loads cuBLASLt (lib, else $ZIPVL_LIBCUBLASLT, else libcublasLt.so.13) for the open device. */
  static open(dev: CudaDevice, opts: { lib?: string } = {}): Blas {
    void dev; // the workspace lives in the device's primary context, so the device must be open first
    const n = loadNativeAddon();
    const lib = opts.lib ?? process.env["ZIPVL_LIBCUBLASLT"];
    const r = lib ? n.blasInit(lib) : n.blasInit();
    return new Blas(n, r.version, r.path);
  }

  gemm(dtype: GemmDType, M: number, N: number, K: number, x: DeviceBuffer, w: DeviceBuffer, y: DeviceBuffer, opts: { bias?: DeviceBuffer | null; stream?: CudaStream | null } = {}): void {
    for (const [v, what] of [[M, "M"], [N, "N"], [K, "K"]] as const) checkCount(v, what, 1);
    const e = GEMM_ESIZE[dtype];
    if (e === undefined) throw misuse(`gemm dtype must be f32, f16 or bf16, got ${String(dtype)}`);
    const need = (b: DeviceBuffer, elems: number, what: string): void => {
      if (b.released) throw misuse(`gemm ${what} was freed`);
      if (b.bytes < elems * e) throw misuse(`gemm ${what} holds ${b.bytes} bytes, needs ${elems * e} (${dtype})`);
    };
    need(x, M * K, `x [${M}, ${K}]`);
    need(w, N * K, `w [${N}, ${K}]`);
    need(y, M * N, `y [${M}, ${N}]`);
    if (opts.bias) need(opts.bias, N, `bias [${N}]`);
    this.n.blasGemm(dtype, M, N, K, x.ptr, w.ptr, opts.bias ? opts.bias.ptr : 0n, y.ptr, streamOf(opts.stream));
  }

  /** Cached GEMM plans (one per distinct shape/dtype/bias). */
  plans(): number {
    return this.n.blasPlans();
  }
}
