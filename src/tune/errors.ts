// Coded errors of `zipvl tune` and `zipvl bench` (ZV80xx). Codes are stable: tests and users match on them, never
// on message text. Messages are templates ({0}, {1}... filled in order) kept in one table.
export const TUNE_CODES = {
  ZV8001: "{0}: {1}", // a bad option value of tune/bench (names the option)
  ZV8002: "{0} needs a GPU: {1} (use --dry-run to list buckets and candidates without one)",
  ZV8003: "tuning record {0} is not valid: {1}",
  ZV8004: "bench results {0} are not valid: {1}",
  ZV8005: "the PyTorch peers ({0}) failed: {1}",
  ZV8006: "the fallback config of {0} failed, so no candidate of this bucket can be verified: {1}",
  ZV8007: "unknown shape bucket field '{0}' in --shapes (known: {1})",
} as const;

export type TuneErrorCode = keyof typeof TUNE_CODES;

export class TuneError extends Error {
  readonly code: TuneErrorCode;
  constructor(code: TuneErrorCode, args: readonly (string | number)[], options?: { cause?: unknown }) {
    super(`${code}: ${TUNE_CODES[code].replace(/\{(\d+)\}/g, (_, i: string) => String(args[Number(i)] ?? ""))}`, options);
    this.name = "TuneError";
    this.code = code;
  }
}

export const tuneFail = (code: TuneErrorCode, args: readonly (string | number)[]): never => {
  throw new TuneError(code, args);
};
