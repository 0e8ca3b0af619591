// Printing: the canonical text form (round-trips through parseExpr) and C-like renderings for backends.
import type { Expr } from "./ast.ts";

const PREC: Record<string, number> = { "||": 1, "&&": 2, "<": 3, "<=": 3, ">": 3, ">=": 3, "==": 3, "!=": 3, "+": 4, "-": 4, "*": 5, "/": 5, "%": 5 };

export interface Rendering {
  num(v: number): string;
  bool(v: boolean): string;
  var(name: string): string;
  call(fn: string, args: readonly string[]): string;
  cond(c: string, a: string, b: string): string;
  /** Parenthesize every binary operation (WGSL forbids mixing && and || without parentheses). */
  readonly parenAll?: boolean;
  /** Remainder as a function call where the language has no floating-point `%` (C: fmod). */
  readonly mod?: (a: string, b: string) => string;
  /** Division as a function of the rendered operands (C: force floating-point division of integer positions). */
  readonly div?: (a: string, b: string) => string;
}

export const CANONICAL: Rendering = {
  num: (v) => (Number.isInteger(v) || !Number.isFinite(v) ? String(v) : String(v)),
  bool: (v) => String(v),
  var: (n) => n,
  call: (fn, args) => `${fn}(${args.join(", ")})`,
  cond: (c, a, b) => `${c} ? ${a} : ${b}`,
};

/** Renders with minimal parentheses; `r` decides leaf and call syntax (tinygrad's renderer tables in spirit). */
export function renderExpr(e: Expr, r: Rendering = CANONICAL, parent = 0): string {
  switch (e.k) {
    case "num":
      return r.num(e.v);
    case "bool":
      return r.bool(e.v);
    case "var":
      return r.var(e.name);
    case "un": {
      const inner = renderExpr(e.a, r, 6);
      // `- -x` must not become `--x` (a decrement in C and JS).
      const s = `${e.op}${inner.startsWith("-") ? `(${inner})` : inner}`;
      return parent > 6 ? `(${s})` : s;
    }
    case "bin": {
      if (e.op === "%" && r.mod) return r.mod(renderExpr(e.a, r, 0), renderExpr(e.b, r, 0));
      if (e.op === "/" && r.div) return r.div(renderExpr(e.a, r, 0), renderExpr(e.b, r, 0));
      const p = PREC[e.op]!;
      // Comparisons are non-associative in the grammar, so both sides of one need a higher level.
      const rightP = p === 3 ? 4 : p + 1;
      const leftP = p === 3 ? 4 : p;
      const s = `${renderExpr(e.a, r, leftP)} ${e.op} ${renderExpr(e.b, r, rightP)}`;
      return p < parent || (r.parenAll && parent > 0) ? `(${s})` : s;
    }
    case "call":
      return r.call(e.fn, e.args.map((a) => renderExpr(a, r, 0)));
    case "cond": {
      const s = r.cond(renderExpr(e.c, r, 1), renderExpr(e.a, r, 0), renderExpr(e.b, r, 0));
      return parent > 0 ? `(${s})` : s;
    }
  }
}

export const printExpr = (e: Expr): string => renderExpr(e, CANONICAL);
