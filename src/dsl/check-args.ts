// Argument checking shared by every DSL builder. A failed check throws DslArgError with the path of the
// offending argument (argument index, then option names), which the front end turns into a file location.
import type { Code } from "../diagnostics/codes.ts";
import { suggest } from "../diagnostics/diagnostic.ts";
import type { Knob } from "./spec.ts";

export type ArgPath = readonly (number | string)[];

export class DslArgError extends Error {
  constructor(
    readonly code: Code,
    readonly args: readonly (string | number)[],
    readonly path: ArgPath,
  ) {
    super(`${code} ${args.join(" ")}`);
  }
}

const describe = (v: unknown): string =>
  v === undefined ? "nothing" : Array.isArray(v) ? "an array" : v === null ? "null" : typeof v === "object" ? "an object" : `${typeof v} ${JSON.stringify(v)}`;

export function arity(fn: string, args: readonly unknown[], min: number, max: number): void {
  if (args.length < min || args.length > max) throw new DslArgError("ZV1005", [fn, min === max ? String(min) : `${min} to ${max}`, args.length], []);
}

export function knob(fn: string, v: unknown, path: ArgPath): Knob {
  if (typeof v === "number" || typeof v === "string") return v;
  throw new DslArgError("ZV1006", [fn, "a number or an expression string", describe(v)], path);
}

export function str(fn: string, v: unknown, path: ArgPath): string {
  if (typeof v === "string") return v;
  throw new DslArgError("ZV1006", [fn, "an expression string", describe(v)], path);
}

export function oneOf<T extends string>(fn: string, what: string, v: unknown, allowed: readonly T[], path: ArgPath): T {
  if (typeof v !== "string") throw new DslArgError("ZV1006", [fn, `one of ${allowed.join(", ")}`, describe(v)], path);
  if (!(allowed as readonly string[]).includes(v)) throw new DslArgError("ZV1204", [v, what, allowed.join(", ")], path);
  return v as T;
}

/** Checks an options object against its known keys; returns it typed as a record. */
export function options(fn: string, v: unknown, known: readonly string[], path: ArgPath): Record<string, unknown> {
  if (v === undefined) return {};
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new DslArgError("ZV1006", [fn, "an options object", describe(v)], path);
  for (const key of Object.keys(v)) {
    if (!known.includes(key)) throw new DslArgError("ZV1007", [key, `${fn}()`, suggest(key, known) || `; options are ${known.join(", ")}`], [...path, key]);
  }
  return v as Record<string, unknown>;
}

export function intList(fn: string, v: unknown, path: ArgPath): readonly number[] {
  if (!Array.isArray(v)) throw new DslArgError("ZV1006", [fn, "an array of positions", describe(v)], path);
  v.forEach((x: unknown, i) => {
    if (typeof x !== "number") throw new DslArgError("ZV1006", [fn, "an integer position", describe(x)], [...path, i]);
    if (!Number.isInteger(x) || x < 0) throw new DslArgError("ZV1209", [x, "positions are non-negative integers"], [...path, i]);
  });
  const sorted = [...(v as number[])].sort((a, b) => a - b);
  for (let i = 1; i < sorted.length; i++) if (sorted[i] === sorted[i - 1]) throw new DslArgError("ZV1209", [sorted[i]!, "listed twice"], path);
  return sorted;
}
