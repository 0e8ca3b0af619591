// Coded errors of the CUDA model ops (ZV62xx). Same shape as src/model/errors.ts (ZV61xx): a stable code, a
// message template filled in order, one table.
export const CUDA_MODEL_CODES = {
  ZV6201: "cuda ops: operands do not fit: {0}",
  ZV6202: "cuda ops: {0} is not supported: {1}",
} as const;

export type CudaModelErrorCode = keyof typeof CUDA_MODEL_CODES;

export class CudaModelError extends Error {
  readonly code: CudaModelErrorCode;
  constructor(code: CudaModelErrorCode, args: readonly (string | number)[]) {
    super(`${code}: ${CUDA_MODEL_CODES[code].replace(/\{(\d+)\}/g, (_, i: string) => String(args[Number(i)] ?? ""))}`);
    this.name = "CudaModelError";
    this.code = code;
  }
}

export function cudaOpsFail(code: CudaModelErrorCode, args: readonly (string | number)[]): never {
  throw new CudaModelError(code, args);
}
