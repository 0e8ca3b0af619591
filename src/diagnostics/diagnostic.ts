import { type Code, formatMessage } from "./codes.ts";

export interface Location {
  readonly file: string;
  readonly line: number; // 1-based
  readonly col: number; // 1-based
}

export interface Diagnostic {
  readonly code: Code;
  readonly message: string;
  readonly loc?: Location;
}

/** A user error: printed as `path:line:col - error ZVnnnn: message`, never with a stack trace. */
export class ZipvlError extends Error {
  readonly diagnostics: readonly Diagnostic[];
  constructor(diagnostics: readonly Diagnostic[]) {
    super(diagnostics.map(formatDiagnostic).join("\n"));
    this.name = "ZipvlError";
    this.diagnostics = diagnostics;
  }
  get code(): Code {
    return this.diagnostics[0]!.code;
  }
}

export function diag(code: Code, args: readonly (string | number)[] = [], loc?: Location): Diagnostic {
  return loc ? { code, message: formatMessage(code, args), loc } : { code, message: formatMessage(code, args) };
}

export function fail(code: Code, args: readonly (string | number)[] = [], loc?: Location): never {
  throw new ZipvlError([diag(code, args, loc)]);
}

export function formatDiagnostic(d: Diagnostic): string {
  const where = d.loc ? `${d.loc.file}:${d.loc.line}:${d.loc.col} - ` : "";
  return `${where}error ${d.code}: ${d.message}`;
}

/** Errors thrown by lower layers (io, runtime) carry a `code` too; this says whether to print them plainly. */
export function isUserError(e: unknown): e is Error & { code: string } {
  return e instanceof Error && typeof (e as { code?: unknown }).code === "string" && /^ZV\d{4}$/.test((e as unknown as { code: string }).code);
}

/** "did you mean" for unknown names. */
export function suggest(name: string, known: readonly string[]): string {
  let best = "";
  let bestD = Infinity;
  for (const k of known) {
    const d = editDistance(name.toLowerCase(), k.toLowerCase());
    if (d < bestD) [best, bestD] = [k, d];
  }
  return bestD <= Math.max(2, Math.floor(name.length / 3)) ? `; did you mean '${best}'?` : "";
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
