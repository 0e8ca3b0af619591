// The IR's text form. `parseProgram(printProgram(p))` rebuilds `p` exactly (positions inside expressions aside).
import { printExpr } from "../expr/print.ts";
import { type Attr, type Func, type Node, type Program, type Type, isExpr } from "./ir.ts";

export function printType(ty: Type): string {
  return ty.t === "tuple" ? `(${ty.items.map(printType).join(", ")})` : `${ty.dtype}[${ty.shape.join(",")}]`;
}

export function printAttr(a: Attr): string {
  if (typeof a === "string") return JSON.stringify(a);
  if (typeof a === "number") return fmtNum(a);
  if (typeof a === "boolean") return String(a);
  if (Array.isArray(a)) return `[${a.map(fmtNum).join(",")}]`;
  if (isExpr(a)) return `\`${printExpr(a)}\``;
  throw new Error("internal: unknown attribute kind");
}

const fmtNum = (x: number): string => (Object.is(x, -0) ? "-0" : String(x));

export function printNode(n: Node): string {
  const args = n.args.map((a) => `%${a}`).join(", ");
  const attrs = Object.keys(n.attrs)
    .sort()
    .map((k) => `${k}=${printAttr(n.attrs[k]!)}`)
    .join(" ");
  return `%${n.id} = ${n.op}${args ? ` ${args}` : ""}${attrs ? ` ${attrs}` : ""} : ${printType(n.type)}`;
}

export function printFunc(f: Func): string {
  const body = f.body.map((n) => `  ${printNode(n)}`);
  const ret = `  return ${f.outputs.map((o) => `${o.name}=%${o.id}`).join(", ")}`;
  return [`func ${f.name} {`, ...body, ret, "}"].join("\n");
}

export function printProgram(p: Program): string {
  const params = p.params.map((x) => `param ${x.name} = ${fmtNum(x.value)}`);
  return [`program ${p.name}`, ...params, ...p.funcs.map(printFunc)].join("\n") + "\n";
}
