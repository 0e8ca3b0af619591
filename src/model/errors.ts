// Coded errors of the model runtime (ZV61xx): the LLaVA forward, generation, the `run`/`demo`/`parity` commands.
// Codes are stable: tests and users match on them, never on message text. Messages are templates ({0}, {1}...
// filled in order) kept in one table, like src/runtime/errors.ts, so they can be folded into
// src/diagnostics/codes.ts later without touching call sites.
export const MODEL_CODES = {
  ZV6101: "missing tensor '{0}' in the checkpoint {1}",
  ZV6102: "tensor '{0}' has shape [{1}], expected [{2}]",
  ZV6103: "{0} is not supported: {1}",
  ZV6104: "backend '{0}' is not available: {1}",
  ZV6105: "the prompt and the image do not fit together: {0}",
  ZV6106: "invalid generation option: {0}",
  ZV6107: "invalid policy: {0}",
  ZV6108: "invalid parity reference {0}: {1}",
  ZV6109: "invalid model input: {0}",
} as const;

export type ModelErrorCode = keyof typeof MODEL_CODES;

export function formatModelMessage(code: ModelErrorCode, args: readonly (string | number)[]): string {
  return MODEL_CODES[code].replace(/\{(\d+)\}/g, (_, i: string) => String(args[Number(i)] ?? ""));
}

export class LlavaError extends Error {
  readonly code: ModelErrorCode;

  constructor(code: ModelErrorCode, args: readonly (string | number)[], options?: { cause?: unknown }) {
    super(`${code}: ${formatModelMessage(code, args)}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "LlavaError";
    this.code = code;
  }
}

export function modelFail(code: ModelErrorCode, args: readonly (string | number)[]): never {
  throw new LlavaError(code, args);
}
