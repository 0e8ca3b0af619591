// Coded errors of the native CUDA runtime (ZV30xx). Codes are stable: tests and users match on them, never on
// message text. Messages are templates ({0}, {1}... filled in order) kept in one table so the lead can fold them
// into src/diagnostics/codes.ts later without touching call sites.
export const RUNTIME_CODES = {
  ZV3001: "the zipvl native addon is not available ({0}); build it with `node native/build.mjs` (needs python3, make, g++)",
  ZV3002: "no usable CUDA driver: {0}",
  ZV3003: "no CUDA device: {0}",
  ZV3004: "out of device memory: {0}",
  ZV3005: "CUDA driver error: {0}",
  ZV3006: "NVRTC (the CUDA run-time compiler) is not available: {0}",
  ZV3007: "NVRTC failed to compile '{0}': {1}",
  ZV3008: "invalid use of the CUDA runtime: {0}",
  ZV3009: "cuBLASLt is not available: {0}. Install the CUDA toolkit's libcublasLt.so.13, or set ZIPVL_LIBCUBLASLT",
  ZV3010: "cuBLASLt failed: {0}",
  ZV3011: "cuBLASLt has no algorithm for this GEMM: {0}",
} as const;

export type RuntimeErrorCode = keyof typeof RUNTIME_CODES;

/** Details the addon attaches to driver errors (see native/src/driver.cc). */
export interface DriverErrorInfo {
  /** CUresult / nvrtcResult number; absent for loader errors. */
  readonly cuResult?: number;
  /** e.g. CUDA_ERROR_OUT_OF_MEMORY, LIBCUDA_NOT_FOUND, NVRTC_ERROR_COMPILATION. */
  readonly cuName?: string;
  /** The driver entry point that failed, e.g. cuMemAlloc_v2. */
  readonly cuCall?: string;
  /** NVRTC compile log (ZV3007). */
  readonly log?: string;
}

export function formatRuntimeMessage(code: RuntimeErrorCode, args: readonly (string | number)[]): string {
  return RUNTIME_CODES[code].replace(/\{(\d+)\}/g, (_, i: string) => String(args[Number(i)] ?? ""));
}

export class RuntimeError extends Error {
  readonly code: RuntimeErrorCode;
  readonly driver: DriverErrorInfo;

  constructor(code: RuntimeErrorCode, args: readonly (string | number)[], options?: { cause?: unknown; driver?: DriverErrorInfo }) {
    super(`${code}: ${formatRuntimeMessage(code, args)}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "RuntimeError";
    this.code = code;
    this.driver = options?.driver ?? {};
  }
}
