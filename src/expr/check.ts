// Type checking and evaluation of expressions. Two types only: num and bool; no implicit conversions.
import { type Expr, type ExprType, FUNCTIONS } from "./ast.ts";
import { fail, suggest } from "../diagnostics/diagnostic.ts";
import type { LocateFn } from "./parser.ts";
import { renderExpr, type Rendering } from "./print.ts";

export type Env = ReadonlyMap<string, ExprType>;

const ARITH = new Set(["+", "-", "*", "/", "%"]);
const CMP = new Set(["<", "<=", ">", ">=", "==", "!="]);

/** Returns the expression's type; `where` names the knob for messages ("mask of scores()"). */
export function typeOf(e: Expr, env: Env, where: string, locate: LocateFn = () => undefined): ExprType {
  const t = (x: Expr): ExprType => typeOf(x, env, where, locate);
  const want = (x: Expr, ty: ExprType, what: string): void => {
    const got = t(x);
    if (got !== ty) fail("ZV1103", [`${what} needs a ${ty === "num" ? "number" : "boolean"}, got a ${got === "num" ? "number" : "boolean"} (in ${where})`], locate(x.pos));
  };
  switch (e.k) {
    case "num":
      return "num";
    case "bool":
      return "bool";
    case "var": {
      const ty = env.get(e.name);
      if (!ty) fail("ZV1102", [e.name, where, suggest(e.name, [...env.keys()]) || `; known names: ${[...env.keys()].join(", ")}`], locate(e.pos));
      return ty;
    }
    case "un":
      want(e.a, e.op === "!" ? "bool" : "num", `'${e.op}'`);
      return e.op === "!" ? "bool" : "num";
    case "bin":
      if (ARITH.has(e.op) || CMP.has(e.op)) {
        if (e.op === "==" || e.op === "!=") {
          const ta = t(e.a);
          want(e.b, ta, `'${e.op}'`);
          return "bool";
        }
        want(e.a, "num", `'${e.op}'`);
        want(e.b, "num", `'${e.op}'`);
        return ARITH.has(e.op) ? "num" : "bool";
      }
      want(e.a, "bool", `'${e.op}'`);
      want(e.b, "bool", `'${e.op}'`);
      return "bool";
    case "call": {
      const f = FUNCTIONS[e.fn];
      if (!f || f[0] !== e.args.length) {
        const known = Object.entries(FUNCTIONS).map(([n, [a]]) => `${n}/${a}`).join(", ");
        fail("ZV1104", [e.fn, f ? `takes ${f[0]}, got ${e.args.length}` : `known: ${known}`], locate(e.pos));
      }
      for (const a of e.args) want(a, "num", `argument of ${e.fn}()`);
      return "num";
    }
    case "cond": {
      want(e.c, "bool", "the condition of '?:'");
      const ta = t(e.a);
      want(e.b, ta, "both branches of '?:'");
      return ta;
    }
  }
}

export type Value = number | boolean;

/** Evaluates in float64. Unbound names are a programming error here (the checker ran first). */
export function evalExpr(e: Expr, env: Readonly<Record<string, number>>): Value {
  switch (e.k) {
    case "num":
    case "bool":
      return e.v;
    case "var": {
      const v = env[e.name];
      if (v === undefined) throw new Error(`internal: unbound '${e.name}'`);
      return v;
    }
    case "un": {
      const a = evalExpr(e.a, env);
      return e.op === "!" ? !a : -(a as number);
    }
    case "bin": {
      if (e.op === "&&") return (evalExpr(e.a, env) as boolean) && (evalExpr(e.b, env) as boolean);
      if (e.op === "||") return (evalExpr(e.a, env) as boolean) || (evalExpr(e.b, env) as boolean);
      const a = evalExpr(e.a, env) as number;
      const b = evalExpr(e.b, env) as number;
      switch (e.op) {
        case "+": return a + b;
        case "-": return a - b;
        case "*": return a * b;
        case "/": return a / b;
        case "%": return a % b;
        case "<": return a < b;
        case "<=": return a <= b;
        case ">": return a > b;
        case ">=": return a >= b;
        case "==": return a === b;
        case "!=": return a !== b;
      }
    }
    // eslint-disable-next-line no-fallthrough
    case "call":
      return FUNCTIONS[e.fn]![1](...e.args.map((a) => evalExpr(a, env) as number));
    case "cond":
      return evalExpr(e.c, env) ? evalExpr(e.a, env) : evalExpr(e.b, env);
  }
}

/** Compiles an expression to a JS function once, for the interpreter's inner loops (same f64 semantics). */
export function compileExpr(e: Expr, names: readonly string[]): (...vals: number[]) => Value {
  const body = renderExpr(e, JS_RENDERING(names));
  return new Function(...names.map((n) => `v_${n}`), `"use strict"; return (${body});`) as (...vals: number[]) => Value;
}

const JS_RENDERING = (names: readonly string[]): Rendering => ({
  num: (v) => (Number.isFinite(v) ? String(v) : v > 0 ? "Infinity" : v < 0 ? "-Infinity" : "NaN"),
  bool: (v) => String(v),
  var: (n) => {
    if (!names.includes(n)) throw new Error(`internal: unbound '${n}'`);
    return `v_${n}`;
  },
  call: (fn, args) => `Math.${fn}(${args.join(", ")})`,
  cond: (c, a, b) => `(${c} ? ${a} : ${b})`,
});
