// Low-level half of the CUDA runtime: loads the zipvl_native addon (native/src/addon.cc) lazily, types its exports
// and turns its raw errors into coded RuntimeErrors (ZV30xx). Only src/runtime/native.ts imports this file; the
// rest of zipvl uses the classes there. Handles are BigInt so 64-bit pointers never lose bits.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { RuntimeError, type DriverErrorInfo } from "./errors.ts";

/** Device properties reported by init(). Sizes in bytes. */
export interface DeviceInfo {
  readonly name: string;
  readonly computeCapability: readonly [number, number];
  readonly smCount: number;
  readonly totalMem: number;
  readonly maxSharedPerBlock: number;
  readonly maxSharedPerBlockOptin: number;
  readonly maxSharedPerSM: number;
  readonly maxThreadsPerBlock: number;
  readonly warpSize: number;
  readonly l2CacheBytes: number;
  /** cuDriverGetVersion, e.g. 13000 for CUDA 13.0. */
  readonly driverVersion: number;
  readonly ordinal: number;
  /** The libcuda actually loaded (ZIPVL_LIBCUDA, or libcuda.so.1). */
  readonly libcudaPath: string;
}

/** What nvrtcCompile returns: a cubin when an -arch=sm_XX option was given, else NUL-terminated PTX. */
export interface NvrtcOutput {
  readonly kind: "ptx" | "cubin";
  readonly image: Uint8Array;
  readonly log: string;
}

export interface MockLaunchRecord {
  readonly grid: readonly [number, number, number];
  readonly block: readonly [number, number, number];
  readonly sharedBytes: number;
  readonly argsBytes: number;
  readonly launches: number;
  /** Of them, launched through cuLaunchKernelEx with programmatic stream serialization. */
  readonly pdlLaunches: number;
}

type Handle = bigint;
type Bytes = ArrayBuffer | ArrayBufferView;
type Dims = readonly [number, number, number];

/** The addon's exports, one-to-one (see InitModule in native/src/addon.cc). Stream 0n is the legacy NULL stream. */
export interface NativeAddon {
  readonly abiVersion: number;
  /** "cuda.h" or "cuda_min.h": which header the addon was compiled against. */
  readonly cudaHeader: string;
  init(ordinal: number, libcudaPath?: string): DeviceInfo;
  memGetInfo(): { free: number; total: number };
  memAlloc(bytes: number | bigint): Handle;
  memFree(ptr: Handle): void;
  htod(dst: Handle, src: Bytes, stream?: Handle): void;
  dtoh(dst: Bytes, src: Handle, stream?: Handle): void;
  memsetD32(ptr: Handle, value: number, count: number | bigint, stream?: Handle): void;
  memsetD8(ptr: Handle, value: number, count: number | bigint, stream?: Handle): void;
  streamCreate(nonBlocking?: boolean): Handle;
  streamSynchronize(stream: Handle): void;
  streamDestroy(stream: Handle): void;
  moduleLoad(image: Bytes): Handle;
  moduleUnload(module: Handle): void;
  getFunction(module: Handle, name: string): Handle;
  setMaxDynamicShared(fn: Handle, bytes: number): void;
  /** cuOccupancyMaxActiveBlocksPerMultiprocessor: CTAs of `threads` threads and `smem` dynamic shared bytes per SM. */
  maxActiveBlocks(fn: Handle, threads: number, smem: number): number;
  launch(fn: Handle, grid: Dims, block: Dims, sharedBytes: number, stream: Handle, args?: Bytes, pdl?: boolean): void;
  eventCreate(): Handle;
  eventRecord(event: Handle, stream: Handle): void;
  eventSynchronize(event: Handle): void;
  eventElapsed(start: Handle, end: Handle): number;
  eventDestroy(event: Handle): void;
  beginCapture(stream: Handle, mode?: number): void;
  endCapture(stream: Handle): Handle;
  graphInstantiate(graph: Handle): Handle;
  graphLaunch(exec: Handle, stream: Handle): void;
  graphExecDestroy(exec: Handle): void;
  graphDestroy(graph: Handle): void;
  synchronize(): void;
  mockLastLaunch(): MockLaunchRecord | null;
  nvrtcCompile(source: string, name: string, options: readonly string[], headers: Record<string, string>, libPath?: string): NvrtcOutput;
  nvrtcVersion(libPath?: string): [number, number];
  cublasLtInfo(libPath?: string): { available: boolean; version: number | null; error: string | null };
  /** Loads cuBLASLt, creates its handle and a workspace (needs init()). */
  blasInit(libPath?: string): { version: number; path: string; workspaceBytes: number };
  /** Y[M,N] = X[M,K] W[N,K]^T (+ bias[N]), row-major device pointers; bias 0n = none. */
  blasGemm(dtype: string, M: number, N: number, K: number, x: Handle, w: Handle, bias: Handle, y: Handle, stream: Handle): void;
  blasPlans(): number;
}

const EXPECTED_ABI = 1;

/** Where the addon is looked for: $ZIPVL_NATIVE_ADDON, else native/build/Release next to this source tree. */
export function nativeAddonPath(): string {
  const override = process.env["ZIPVL_NATIVE_ADDON"];
  if (override) return override;
  return fileURLToPath(new URL("../../native/build/Release/zipvl_native.node", import.meta.url));
}

let cached: NativeAddon | undefined;

/** Loads the addon once (ZV3001 if it is not built or cannot be loaded), with every call wrapped by toRuntimeError. */
export function loadNativeAddon(): NativeAddon {
  if (cached) return cached;
  const path = nativeAddonPath();
  let raw: NativeAddon;
  try {
    raw = createRequire(import.meta.url)(path) as NativeAddon;
  } catch (e) {
    const why = e instanceof Error ? e.message.split("\n")[0] ?? e.message : String(e);
    throw new RuntimeError("ZV3001", [`${path}: ${why}`], { cause: e });
  }
  if (raw.abiVersion !== EXPECTED_ABI) {
    throw new RuntimeError("ZV3001", [`${path} has ABI ${String(raw.abiVersion)}, expected ${EXPECTED_ABI}; rebuild it`]);
  }
  cached = wrapAll(raw);
  return cached;
}

/** True when the addon loads; never throws. */
export function nativeAddonAvailable(): boolean {
  try {
    loadNativeAddon();
    return true;
  } catch {
    return false;
  }
}

// Wraps each exported function so raw addon errors come out as RuntimeErrors; non-functions pass through.
function wrapAll(raw: NativeAddon): NativeAddon {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (typeof value !== "function") {
      out[key] = value;
      continue;
    }
    const fn = value as (...a: unknown[]) => unknown;
    out[key] = (...args: unknown[]) => {
      try {
        return fn(...args);
      } catch (e) {
        throw toRuntimeError(e, key, args);
      }
    };
  }
  return Object.freeze(out) as unknown as NativeAddon;
}

function driverInfo(e: Record<string, unknown>): DriverErrorInfo {
  const info: { cuResult?: number; cuName?: string; cuCall?: string; log?: string } = {};
  if (typeof e["cuResult"] === "number") info.cuResult = e["cuResult"];
  if (typeof e["cuName"] === "string") info.cuName = e["cuName"];
  if (typeof e["cuCall"] === "string") info.cuCall = e["cuCall"];
  if (typeof e["nvrtcLog"] === "string") info.log = e["nvrtcLog"];
  return info;
}

/** Maps an addon error (message + cuName/cuResult/cuCall) to its ZV30xx code. Exported for tests. */
export function toRuntimeError(e: unknown, op: string, args: readonly unknown[] = []): RuntimeError {
  if (e instanceof RuntimeError) return e;
  if (!(e instanceof Error)) return new RuntimeError("ZV3005", [`${op}: ${String(e)}`], { cause: e });
  const d = driverInfo(e as unknown as Record<string, unknown>);
  const name = d.cuName ?? "";
  const opts = { cause: e, driver: d };
  switch (name) {
    case "LIBCUDA_NOT_FOUND":
      return new RuntimeError("ZV3002", [`${e.message}. Install the NVIDIA driver, or set ZIPVL_LIBCUDA to libcuda.so.1's path`], opts);
    case "LIBCUDA_SYMBOL_MISSING":
    case "CUDA_ERROR_INSUFFICIENT_DRIVER":
    case "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE":
      return new RuntimeError("ZV3002", [e.message], opts);
    case "CUDA_ERROR_NO_DEVICE":
    case "CUDA_ERROR_INVALID_DEVICE":
      return new RuntimeError("ZV3003", [e.message], opts);
    case "CUDA_ERROR_OUT_OF_MEMORY": {
      const what = op === "memAlloc" ? ` (requested ${formatBytes(args[0])})` : "";
      return new RuntimeError("ZV3004", [`${e.message}${what}`], opts);
    }
    case "LIBNVRTC_NOT_FOUND":
      return new RuntimeError("ZV3006", [`${e.message}. Install the CUDA toolkit's NVRTC, or set ZIPVL_LIBNVRTC`], opts);
    case "LIBCUBLASLT_NOT_FOUND":
      return new RuntimeError("ZV3009", [e.message], opts);
    case "CUBLASLT_NO_ALGO":
      return new RuntimeError("ZV3011", [e.message], opts);
    case "ZIPVL_BAD_ARGUMENT":
    case "ZIPVL_ARGS_SIZE_MISMATCH":
    case "ZIPVL_NOT_INITIALIZED":
      return new RuntimeError("ZV3008", [e.message], opts);
  }
  if (name.startsWith("CUBLAS_STATUS_")) return new RuntimeError("ZV3010", [e.message], opts);
  if (name.startsWith("NVRTC_")) {
    const file = typeof args[1] === "string" ? args[1] : "<source>";
    return new RuntimeError("ZV3007", [file, d.log ? `${name}\n${d.log}` : e.message], opts);
  }
  if (d.cuName === undefined) return new RuntimeError("ZV3008", [`${op}: ${e.message}`], opts);
  return new RuntimeError("ZV3005", [e.message], opts);
}

function formatBytes(v: unknown): string {
  const n = typeof v === "bigint" ? Number(v) : typeof v === "number" ? v : NaN;
  if (!Number.isFinite(n)) return String(v);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let x = n;
  let u = 0;
  while (x >= 1024 && u < units.length - 1) {
    x /= 1024;
    u++;
  }
  return `${n} bytes = ${x.toFixed(u ? 2 : 0)} ${units[u]}`;
}
