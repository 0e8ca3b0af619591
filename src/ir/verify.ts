// The verifier: SSA order, the op table's arity/attribute/type rules, expression typing in each op's environment.
import { typeOf } from "../expr/check.ts";
import type { ExprType } from "../expr/ast.ts";
import { fail, ZipvlError } from "../diagnostics/diagnostic.ts";
import { type Program, type Type, isExpr } from "./ir.ts";
import { ENV_NAMES, OPS } from "./ops.ts";
import { printType } from "./print.ts";

const OPTIONAL_ATTRS = new Set(["causal", "optional", "list"]);

export function sameType(a: Type, b: Type): boolean {
  return printType(a) === printType(b);
}

export function verifyProgram(p: Program): Program {
  const bad = (msg: string): never => fail("ZV1302", [`${p.name}: ${msg}`]);
  const names = new Set<string>();
  for (const prm of p.params) {
    if (names.has(prm.name)) bad(`parameter '${prm.name}' declared twice`);
    if (!Number.isFinite(prm.value)) bad(`parameter '${prm.name}' is not finite`);
    names.add(prm.name);
  }
  const paramEnv = p.params.map((x) => [x.name, "num"] as const);
  const fnames = new Set<string>();
  for (const f of p.funcs) {
    if (fnames.has(f.name)) bad(`function '${f.name}' defined twice`);
    fnames.add(f.name);
    const types = new Map<number, Type>();
    for (const n of f.body) {
      const at = `${f.name} %${n.id} (${n.op})`;
      if (types.has(n.id)) bad(`${at}: value defined twice`);
      const spec = OPS[n.op];
      if (!spec) bad(`${at}: unknown op; ops are ${Object.keys(OPS).join(", ")}`);
      const [min, max] = spec!.args;
      if (n.args.length < min || n.args.length > max) bad(`${at}: takes ${min}..${max} arguments, got ${n.args.length}`);
      const argTypes = n.args.map((a) => types.get(a) ?? bad(`${at}: %${a} is used before it is defined`));
      for (const key of Object.keys(n.attrs)) if (!spec!.attrs[key]) bad(`${at}: unknown attribute '${key}'`);
      for (const [key, as] of Object.entries(spec!.attrs)) {
        const v = n.attrs[key];
        if (v === undefined) {
          if (!OPTIONAL_ATTRS.has(key)) bad(`${at}: missing attribute '${key}'`);
          continue;
        }
        const ok =
          as.kind === "expr" ? isExpr(v)
          : as.kind === "enum" ? typeof v === "string" && as.values.includes(v)
          : as.kind === "string" ? typeof v === "string"
          : as.kind === "int" ? Number.isInteger(v)
          : as.kind === "bool" ? typeof v === "boolean"
          : Array.isArray(v) && v.every(Number.isInteger);
        if (!ok) bad(`${at}: attribute '${key}' must be ${as.kind === "enum" ? `one of ${as.values.join(", ")}` : `a ${as.kind}`}`);
        if (as.kind === "expr" && isExpr(v)) {
          const env = new Map<string, ExprType>([...ENV_NAMES[as.env].map((x) => [x, "num"] as const), ...paramEnv]);
          try {
            const ty = typeOf(v, env, `${at} ${key}`);
            if (ty !== as.type) bad(`${at}: attribute '${key}' must be a ${as.type === "num" ? "number" : "boolean"} expression`);
          } catch (e) {
            if (e instanceof ZipvlError) bad(`${at}: ${e.diagnostics[0]!.message}`);
            throw e;
          }
        }
      }
      if (n.op !== "input") {
        const want = spec!.result(argTypes, n.attrs);
        if (typeof want === "string") bad(`${at}: ${want}`);
        if (!sameType(want as Type, n.type)) bad(`${at}: type ${printType(n.type)} should be ${printType(want as Type)}`);
      }
      types.set(n.id, n.type);
    }
    const outs = new Set<string>();
    for (const o of f.outputs) {
      if (outs.has(o.name)) bad(`${f.name}: output '${o.name}' returned twice`);
      outs.add(o.name);
      const ty = types.get(o.id);
      if (!ty) bad(`${f.name}: output '${o.name}' refers to undefined %${o.id}`);
      if (ty!.t === "tuple") bad(`${f.name}: output '${o.name}' is a tuple; use get`);
    }
  }
  return p;
}
