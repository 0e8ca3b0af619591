// zipvl's one IR: a program is named parameters plus functions (prefill, decode); a function is a list of
// immutable SSA nodes. Every node is created through `node()`, which freezes it; passes build new lists.
import type { Expr } from "../expr/ast.ts";

export type Dim = number | string; // symbolic dims: Hq, Hkv, n, d, m, S, c
export type ElemType = "T" | "f32" | "i32"; // T: the dtype of the q/k/v inputs (f32, f16 or bf16)

export type Type =
  | { readonly t: "tensor"; readonly dtype: ElemType; readonly shape: readonly Dim[] }
  | { readonly t: "tuple"; readonly items: readonly Type[] };

export type Attr = number | string | boolean | Expr | readonly number[];

export interface Node {
  readonly id: number;
  readonly op: string;
  readonly args: readonly number[];
  readonly attrs: Readonly<Record<string, Attr>>;
  readonly type: Type;
}

export interface Output {
  readonly name: string;
  readonly id: number;
}

export interface Func {
  readonly name: string;
  readonly body: readonly Node[];
  readonly outputs: readonly Output[];
}

export interface Param {
  readonly name: string;
  readonly value: number;
}

export interface Program {
  readonly name: string;
  readonly params: readonly Param[];
  readonly funcs: readonly Func[];
}

export const tensor = (dtype: ElemType, shape: readonly Dim[]): Type => Object.freeze({ t: "tensor", dtype, shape: Object.freeze([...shape]) });
export const tuple = (...items: Type[]): Type => Object.freeze({ t: "tuple", items: Object.freeze(items) });

export function node(id: number, op: string, args: readonly number[], attrs: Record<string, Attr>, type: Type): Node {
  return Object.freeze({ id, op, args: Object.freeze([...args]), attrs: Object.freeze({ ...attrs }), type });
}

export function func(name: string, body: readonly Node[], outputs: readonly Output[]): Func {
  return Object.freeze({ name, body: Object.freeze([...body]), outputs: Object.freeze(outputs.map((o) => Object.freeze({ ...o }))) });
}

export function program(name: string, params: readonly Param[], funcs: readonly Func[]): Program {
  return Object.freeze({ name, params: Object.freeze(params.map((p) => Object.freeze({ ...p }))), funcs: Object.freeze([...funcs]) });
}

export const isExpr = (a: Attr): a is Expr => typeof a === "object" && a !== null && !Array.isArray(a) && "k" in a;

export function getFunc(p: Program, name: string): Func {
  const f = p.funcs.find((x) => x.name === name);
  if (!f) throw new Error(`internal: program ${p.name} has no function ${name}`);
  return f;
}

/** Builds a function body with fresh ids; used by the front end and by passes. */
export class Builder {
  private readonly nodes: Node[] = [];
  private nextId: number;
  constructor(startId = 0) {
    this.nextId = startId;
  }
  add(op: string, args: readonly number[], attrs: Record<string, Attr>, type: Type): number {
    const id = this.nextId++;
    this.nodes.push(node(id, op, args, attrs, type));
    return id;
  }
  push(n: Node): void {
    this.nodes.push(n);
    this.nextId = Math.max(this.nextId, n.id + 1);
  }
  get body(): readonly Node[] {
    return this.nodes;
  }
}
