// Rewriting helpers shared by the passes: replace a group of nodes by new ones, renumber uses, restore SSA order.
import { type Func, type Node, type Program, func, node, program } from "../ir/ir.ts";

export type FuncPass = (f: Func, p: Program) => Func;

export function mapFuncs(p: Program, pass: FuncPass): Program {
  return program(p.name, p.params, p.funcs.map((f) => pass(f, p)));
}

export function users(f: Func, id: number): Node[] {
  return f.body.filter((n) => n.args.includes(id));
}

export const maxId = (f: Func): number => f.body.reduce((m, n) => Math.max(m, n.id), -1);

/** Removes `dead` nodes, adds `added`, renames uses by `rename`, then orders the body so every use follows its def. */
export function replaceNodes(f: Func, dead: ReadonlySet<number>, added: readonly Node[], rename: ReadonlyMap<number, number>): Func {
  const r = (id: number): number => rename.get(id) ?? id;
  const kept = f.body.filter((n) => !dead.has(n.id)).map((n) => (n.args.some((a) => rename.has(a)) ? node(n.id, n.op, n.args.map(r), { ...n.attrs }, n.type) : n));
  const outputs = f.outputs.map((o) => ({ name: o.name, id: r(o.id) }));
  return func(f.name, toposort([...kept, ...added]), outputs);
}

/** Stable topological order (Kahn, preferring the original order). */
export function toposort(nodes: readonly Node[]): Node[] {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const done = new Set<number>();
  const out: Node[] = [];
  const visit = (n: Node, stack: Set<number>): void => {
    if (done.has(n.id)) return;
    if (stack.has(n.id)) throw new Error(`internal: cycle at %${n.id}`);
    stack.add(n.id);
    for (const a of n.args) {
      const dep = byId.get(a);
      if (dep) visit(dep, stack);
    }
    stack.delete(n.id);
    done.add(n.id);
    out.push(n);
  };
  for (const n of nodes) visit(n, new Set());
  return out;
}
