// Range rules for numeric knobs, shared by the front end (values known at compile time) and the interpreter /
// runtimes (values known only once n and the parameters are bound). One place, so both report the same code.
import type { Code } from "../diagnostics/codes.ts";

export type KnobRule = "tau" | "ratio" | "budget" | "count" | "nonneg_int" | "pool_size" | "scale" | "any";

/** Returns [code, args] when `v` breaks the rule, else undefined. */
export function checkKnob(rule: KnobRule, what: string, v: number): [Code, (string | number)[]] | undefined {
  const ok = Number.isFinite(v);
  switch (rule) {
    case "tau":
      return ok && v > 0 && v <= 1 ? undefined : ["ZV1201", [v]];
    case "ratio":
      return ok && v > 0 && v <= 1 ? undefined : ["ZV1202", [v]];
    case "budget":
    case "count":
      return ok && Number.isInteger(v) && v >= 1 ? undefined : ["ZV1203", [what, v]];
    case "nonneg_int":
      return ok && Number.isInteger(v) && v >= 0 ? undefined : ["ZV1210", [what, v]];
    case "pool_size":
      return ok && Number.isInteger(v) && v >= 1 && v % 2 === 1 ? undefined : ["ZV1205", [v]];
    case "scale":
      return ok ? undefined : ["ZV1208", [what, String(v)]];
    case "any":
      return undefined;
  }
}

export const SELECT_RULE: Record<string, KnobRule> = { tau: "tau", ratio: "ratio", budget: "budget", all: "any" };
