// Coded errors of Hugging Face checkpoint reading/writing (ZV60xx): config.json, weights, tokenizer, images.
// Codes are stable: tests and users match on them, never on message text. Messages are templates ({0}, {1}...)
// kept in one table (like src/runtime/errors.ts) so they can be folded into src/diagnostics/codes.ts later.
export const MODEL_CODES = {
  ZV6001: "{0}: cannot read ({1})",
  ZV6002: "{0}: invalid JSON ({1})",
  ZV6003: "{0}: unsupported model_type '{1}' (supported: {2})",
  ZV6004: "{0}: invalid config value {1}: {2}",
  ZV6005: "{0}: unsupported feature: {1}",
  ZV6006: "{0}: no weights found (expected model.safetensors or model.safetensors.index.json)",
  ZV6007: "{0}: invalid weight index: {1}",
  ZV6008: "weight '{0}' not found in {1}",
  ZV6009: "weight '{0}': expected shape [{1}] but the checkpoint has [{2}]",
  ZV6010: "weight '{0}': unsupported dtype {1} (supported: f32, f16, bf16)",
  ZV6011: "{0}: invalid tokenizer: {1}",
  ZV6012: "{0}: invalid chat template or messages: {1}",
  ZV6013: "{0}: unsupported image format (PNG and JPEG are supported)",
  ZV6014: "{0}: corrupt image: {1}",
  ZV6015: "{0}: invalid preprocessor config: {1}",
  ZV6016: "{0}: cannot write checkpoint: {1}",
} as const;

export type ModelErrorCode = keyof typeof MODEL_CODES;

export function formatModelMessage(code: ModelErrorCode, args: readonly (string | number)[]): string {
  return MODEL_CODES[code].replace(/\{(\d+)\}/g, (_, i: string) => String(args[Number(i)] ?? ""));
}

export class ModelError extends Error {
  readonly code: ModelErrorCode;

  constructor(code: ModelErrorCode, args: readonly (string | number)[], options?: { cause?: unknown }) {
    super(`${code}: ${formatModelMessage(code, args)}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ModelError";
    this.code = code;
  }
}
