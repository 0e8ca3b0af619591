// Constant folding and algebraic identities; used by the fold-constants pass and parameter binding.
import { type Expr, FUNCTIONS } from "./ast.ts";
import { evalExpr } from "./check.ts";

export function substitute(e: Expr, values: Readonly<Record<string, number>>): Expr {
  switch (e.k) {
    case "num":
    case "bool":
      return e;
    case "var": {
      const v = values[e.name];
      return v === undefined ? e : { k: "num", v, pos: e.pos };
    }
    case "un":
      return { ...e, a: substitute(e.a, values) };
    case "bin":
      return { ...e, a: substitute(e.a, values), b: substitute(e.b, values) };
    case "call":
      return { ...e, args: e.args.map((a) => substitute(a, values)) };
    case "cond":
      return { ...e, c: substitute(e.c, values), a: substitute(e.a, values), b: substitute(e.b, values) };
  }
}

const isConst = (e: Expr): boolean => e.k === "num" || e.k === "bool";
const isNum = (e: Expr, v: number): boolean => e.k === "num" && e.v === v;

export function fold(e: Expr): Expr {
  switch (e.k) {
    case "num":
    case "bool":
    case "var":
      return e;
    case "un": {
      const a = fold(e.a);
      const r = { ...e, a };
      return isConst(a) ? lit(evalExpr(r, {}), e.pos) : r;
    }
    case "bin": {
      const a = fold(e.a);
      const b = fold(e.b);
      const r = { ...e, a, b };
      if (isConst(a) && isConst(b)) return lit(evalExpr(r, {}), e.pos);
      // Identities that hold in IEEE arithmetic for every finite and infinite operand we meet (x*1, x+0, x/1).
      if (e.op === "*" && isNum(b, 1)) return a;
      if (e.op === "*" && isNum(a, 1)) return b;
      if ((e.op === "+" || e.op === "-") && isNum(b, 0)) return a;
      if (e.op === "+" && isNum(a, 0)) return b;
      if (e.op === "/" && isNum(b, 1)) return a;
      if (e.op === "&&" && a.k === "bool") return a.v ? b : a;
      if (e.op === "&&" && b.k === "bool") return b.v ? a : b;
      if (e.op === "||" && a.k === "bool") return a.v ? a : b;
      if (e.op === "||" && b.k === "bool") return b.v ? b : a;
      return r;
    }
    case "call": {
      const args = e.args.map(fold);
      const r = { ...e, args };
      return args.every(isConst) && FUNCTIONS[e.fn] ? lit(evalExpr(r, {}), e.pos) : r;
    }
    case "cond": {
      const c = fold(e.c);
      if (c.k === "bool") return fold(c.v ? e.a : e.b);
      return { ...e, c, a: fold(e.a), b: fold(e.b) };
    }
  }
}

function lit(v: number | boolean, pos: number): Expr {
  return typeof v === "boolean" ? { k: "bool", v, pos } : { k: "num", v, pos };
}
