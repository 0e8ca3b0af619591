// The expression language's AST: tiny, serializable, switched over exhaustively (TypeGPU's tinyest in spirit).
// `pos` is the character offset inside the source string, so diagnostics point into the DSL file.
export type BinOp = "+" | "-" | "*" | "/" | "%" | "<" | "<=" | ">" | ">=" | "==" | "!=" | "&&" | "||";
export type UnOp = "-" | "!";

export type Expr =
  | { readonly k: "num"; readonly v: number; readonly pos: number }
  | { readonly k: "bool"; readonly v: boolean; readonly pos: number }
  | { readonly k: "var"; readonly name: string; readonly pos: number }
  | { readonly k: "un"; readonly op: UnOp; readonly a: Expr; readonly pos: number }
  | { readonly k: "bin"; readonly op: BinOp; readonly a: Expr; readonly b: Expr; readonly pos: number }
  | { readonly k: "call"; readonly fn: string; readonly args: readonly Expr[]; readonly pos: number }
  | { readonly k: "cond"; readonly c: Expr; readonly a: Expr; readonly b: Expr; readonly pos: number };

export type ExprType = "num" | "bool";

/** Built-in functions: name -> [arity, implementation]. The backends render the same names (see render.ts). */
export const FUNCTIONS: Readonly<Record<string, readonly [number, (...x: number[]) => number]>> = {
  exp: [1, Math.exp],
  log: [1, Math.log],
  sqrt: [1, Math.sqrt],
  tanh: [1, Math.tanh],
  abs: [1, Math.abs],
  floor: [1, Math.floor],
  ceil: [1, Math.ceil],
  min: [2, Math.min],
  max: [2, Math.max],
  pow: [2, Math.pow],
};

export const num = (v: number, pos = 0): Expr => ({ k: "num", v, pos });
export const vr = (name: string, pos = 0): Expr => ({ k: "var", name, pos });
export const bin = (op: BinOp, a: Expr, b: Expr, pos = 0): Expr => ({ k: "bin", op, a, b, pos });

/** Names referenced by an expression. */
export function freeVars(e: Expr, out = new Set<string>()): Set<string> {
  switch (e.k) {
    case "num":
    case "bool":
      return out;
    case "var":
      out.add(e.name);
      return out;
    case "un":
      return freeVars(e.a, out);
    case "bin":
      freeVars(e.a, out);
      return freeVars(e.b, out);
    case "call":
      for (const a of e.args) freeVars(a, out);
      return out;
    case "cond":
      freeVars(e.c, out);
      freeVars(e.a, out);
      return freeVars(e.b, out);
  }
}

/** Structural equality ignoring positions. */
export function sameExpr(x: Expr, y: Expr): boolean {
  return printExprKey(x) === printExprKey(y);
}
const printExprKey = (e: Expr): string => JSON.stringify(e, (k, v: unknown) => (k === "pos" ? undefined : v));
