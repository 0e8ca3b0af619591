// Every diagnostic zipvl can report, in one table (TypeScript's diagnosticMessages.json, smaller).
// Codes are stable: tests and users key on them. Messages are templates: {0}, {1}... are filled in order.
export const CODES = {
  // program files (DSL front end)
  ZV1001: "cannot read program file '{0}': {1}",
  ZV1002: "no `export default program(...)` found in '{0}'",
  ZV1003: "unsupported construct in a zipvl program: {0}",
  ZV1004: "unknown DSL function '{0}'{1}",
  ZV1005: "'{0}' takes {1} argument(s), got {2}",
  ZV1006: "'{0}' expects {1}, got {2}",
  ZV1007: "unknown option '{0}' in {1}{2}",
  ZV1008: "program is missing the required stage '{0}'",
  ZV1009: "unknown identifier '{0}' (only top-level consts of the program file can be referenced)",
  // expression language
  ZV1101: "expression syntax error: {0}",
  ZV1102: "unknown name '{0}' in {1}{2}",
  ZV1103: "type mismatch: {0}",
  ZV1104: "unknown function '{0}' or wrong argument count ({1})",
  // parameters and stage options
  ZV1201: "tau must be in (0, 1], got {0}",
  ZV1202: "ratio must be in (0, 1], got {0}",
  ZV1203: "{0} must be a positive integer, got {1}",
  ZV1204: "invalid value '{0}' for {1}; expected one of {2}",
  ZV1205: "pool size must be a positive odd integer, got {0}",
  ZV1206: "parameter '{0}' {1}",
  ZV1207: "unknown parameter '{0}'; the program declares: {1}",
  ZV1208: "parameter '{0}' must be a finite number, got '{1}'",
  ZV1209: "probe position {0} is invalid: {1}",
  ZV1210: "{0} must be a non-negative integer, got {1}",
  // IR
  ZV1301: "IR parse error at {0}: {1}",
  ZV1302: "IR verifier: {0}",
  ZV1303: "unknown pass '{0}'; passes are: {1}",
  // tensors and shapes
  ZV2001: "file not found: {0}",
  ZV2002: "not a safetensors file: {0}",
  ZV2003: "bad safetensors header: {0}",
  ZV2004: "unsupported dtype: {0}",
  ZV2005: "cannot write {0}",
  ZV2101: "missing input tensor '{0}' (inputs: {1})",
  ZV2102: "shape mismatch: {0}",
  ZV2103: "dtype mismatch: {0}",
  ZV2104: "query heads ({0}) must be a multiple of KV heads ({1})",
  ZV2105: "head dim {0} is not supported by {1} (supported: {2})",
  ZV2106: "explicit probes: {0}",
  // backends and runtimes (ZV30xx native CUDA, ZV31xx WebGPU)
  ZV4001: "backend '{0}' is not available: {1}",
  ZV4002: "{0} does not support {1} yet",
  ZV4003: "{0} produced invalid output: {1} (a kernel or driver fault; please report with the inputs)",
  // command line
  ZV5001: "{0}",
} as const;

export type Code = keyof typeof CODES;

export function formatMessage(code: Code, args: readonly (string | number)[]): string {
  return CODES[code].replace(/\{(\d+)\}/g, (_, i: string) => String(args[Number(i)] ?? ""));
}
