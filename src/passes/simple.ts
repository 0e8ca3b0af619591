// Small passes: constant folding of every expression attribute, causal detection, dead-code elimination.
import type { Expr } from "../expr/ast.ts";
import { fold } from "../expr/simplify.ts";
import { type Attr, type Func, func, isExpr, node } from "../ir/ir.ts";
import { type FuncPass } from "./rewrite.ts";

export const foldConstants: FuncPass = (f) =>
  func(f.name, f.body.map((n) => node(n.id, n.op, n.args, Object.fromEntries(Object.entries(n.attrs).map(([k, v]) => [k, isExpr(v) ? fold(v) : v])) as Record<string, Attr>, n.type)), f.outputs);

/** True when the mask can only hold for k_pos <= q_pos, so kernels may skip keys past the query (tiles, loops). */
export function impliesCausal(e: Expr): boolean {
  if (e.k !== "bin") return false;
  if (e.op === "&&") return impliesCausal(e.a) || impliesCausal(e.b);
  const isVar = (x: Expr, name: string): boolean => x.k === "var" && x.name === name;
  if ((e.op === ">=" || e.op === ">") && isVar(e.a, "q_pos") && isVar(e.b, "k_pos")) return true;
  if ((e.op === "<=" || e.op === "<") && isVar(e.a, "k_pos") && isVar(e.b, "q_pos")) return true;
  return false;
}

const CAUSAL_OPS = new Set(["probe_attn", "sparse_attn", "probe_score", "sparse_attn_compact"]);
export const detectCausal: FuncPass = (f) =>
  func(f.name, f.body.map((n) => (CAUSAL_OPS.has(n.op) && isExpr(n.attrs.mask!) ? node(n.id, n.op, n.args, { ...n.attrs, causal: impliesCausal(n.attrs.mask as Expr) }, n.type) : n)), f.outputs);

export const eliminateDeadCode: FuncPass = (f): Func => {
  const live = new Set(f.outputs.map((o) => o.id));
  for (const n of [...f.body].reverse()) if (live.has(n.id) || n.op === "input") for (const a of n.args) live.add(a);
  return func(f.name, f.body.filter((n) => live.has(n.id) || n.op === "input"), f.outputs);
};
