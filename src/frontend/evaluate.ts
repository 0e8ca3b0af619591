// The static front end: parses a program file with ts-morph (no type checking, no execution) and evaluates its
// `export default program(...)` call with the real DSL builders, remembering which source node produced every
// stage object, so later diagnostics can point at `path:line:col` inside the file.
import { readFileSync } from "node:fs";
import { Node, Project, SyntaxKind, VariableDeclarationKind, type SourceFile } from "ts-morph";
import * as dsl from "../dsl/index.ts";
import { DslArgError, type ArgPath } from "../dsl/check-args.ts";
import { fail, suggest, type Location } from "../diagnostics/diagnostic.ts";
import type { ProgramSpec } from "../dsl/spec.ts";

/** Where a builder's result came from: its call node, to resolve argument paths against. */
export interface Origin {
  readonly call: Node;
}

export interface LoadedProgram {
  readonly spec: ProgramSpec;
  readonly file: string;
  /** Location of an argument path of the builder call that produced `obj` (+ an offset inside a string literal). */
  locate(obj: object, path: ArgPath, offset?: number): Location | undefined;
}

const NAMESPACE: Record<string, unknown> = { __proto__: null, ...dsl }; // no inherited names (toString, constructor)

export function loadProgram(file: string, text?: string): LoadedProgram {
  let source = text;
  if (source === undefined) {
    try {
      source = readFileSync(file, "utf8");
    } catch (e) {
      fail("ZV1001", [file, (e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (e as Error).message]);
    }
  }
  // One project per program: `locate` reads these nodes after loading (lowering), so they must stay alive.
  const sf = new Project({ useInMemoryFileSystem: true, skipLoadingLibFiles: true }).createSourceFile("/program.ts", source);
  return evaluateFile(sf, file);
}

function evaluateFile(sf: SourceFile, file: string): LoadedProgram {
  const origins = new WeakMap<object, Origin>();
  const locOf = (n: Node, offset = 0): Location => {
    const { line, column } = sf.getLineAndColumnAtPos(n.getStart() + offset);
    return { file, line, col: column };
  };
  const unsupported = (n: Node, what: string): never => fail("ZV1003", [what], locOf(n));
  const evaluating = new Set<string>();

  const resolveIdent = (n: Node, name: string): unknown => {
    if (name in NAMESPACE) return NAMESPACE[name];
    if (name === "undefined") return undefined;
    const decl = sf.getVariableDeclaration(name);
    const init = decl?.getInitializer();
    const stmt = decl?.getVariableStatement();
    if (!decl || !init || stmt?.getParent() !== sf || stmt.getDeclarationKind() !== VariableDeclarationKind.Const) fail("ZV1009", [name], locOf(n));
    if (evaluating.has(name)) unsupported(n, `'${name}' refers to itself`);
    evaluating.add(name);
    try {
      return evaluate(init!);
    } finally {
      evaluating.delete(name);
    }
  };

  const calleeName = (n: Node): string => n.getText().replace(/\s+/g, "");
  const knownCallees = [
    ...Object.keys(NAMESPACE).filter((k) => typeof NAMESPACE[k] === "function"),
    ...Object.entries(NAMESPACE).flatMap(([k, v]) => (typeof v === "object" && v ? Object.keys(v).map((m) => `${k}.${m}`) : [])),
  ];

  const evaluate = (n: Node): unknown => {
    if (Node.isNumericLiteral(n)) return n.getLiteralValue();
    if (Node.isStringLiteral(n) || Node.isNoSubstitutionTemplateLiteral(n)) return n.getLiteralValue();
    if (n.getKind() === SyntaxKind.TrueKeyword) return true;
    if (n.getKind() === SyntaxKind.FalseKeyword) return false;
    if (Node.isParenthesizedExpression(n) || Node.isAsExpression(n) || Node.isSatisfiesExpression(n)) return evaluate(n.getExpression());
    if (Node.isPrefixUnaryExpression(n) && n.getOperatorToken() === SyntaxKind.MinusToken) {
      const v = evaluate(n.getOperand());
      return typeof v === "number" ? -v : unsupported(n, "unary minus on a non-number");
    }
    if (Node.isBinaryExpression(n)) {
      const a = evaluate(n.getLeft());
      const b = evaluate(n.getRight());
      const op = n.getOperatorToken().getText();
      if (typeof a === "number" && typeof b === "number") {
        if (op === "+") return a + b;
        if (op === "-") return a - b;
        if (op === "*") return a * b;
        if (op === "/") return a / b;
      }
      if (op === "+" && typeof a === "string" && typeof b === "string") return a + b;
      return unsupported(n, `the operator '${op}' here (write arithmetic on parameters inside an expression string)`);
    }
    if (Node.isArrayLiteralExpression(n)) return n.getElements().map(evaluate);
    if (Node.isObjectLiteralExpression(n)) {
      const out: Record<string, unknown> = {};
      for (const p of n.getProperties()) {
        if (Node.isPropertyAssignment(p)) out[p.getName().replace(/^["']|["']$/g, "")] = evaluate(p.getInitializerOrThrow());
        else if (Node.isShorthandPropertyAssignment(p)) out[p.getName()] = resolveIdent(p, p.getName());
        else unsupported(p, `${p.getKindName()} in an object literal`);
      }
      return out;
    }
    if (Node.isIdentifier(n)) return resolveIdent(n, n.getText());
    if (Node.isPropertyAccessExpression(n)) {
      const base = evaluate(n.getExpression());
      const key = n.getName();
      if (typeof base === "object" && base !== null && Object.hasOwn(base, key)) return (base as Record<string, unknown>)[key];
      return fail("ZV1004", [calleeName(n), suggest(calleeName(n), knownCallees)], locOf(n.getNameNode()));
    }
    if (Node.isCallExpression(n)) {
      const callee = n.getExpression();
      if (Node.isIdentifier(callee) && !(callee.getText() in NAMESPACE) && !sf.getVariableDeclaration(callee.getText())) fail("ZV1004", [callee.getText(), suggest(callee.getText(), knownCallees)], locOf(callee));
      const fn = evaluate(callee);
      if (typeof fn !== "function") fail("ZV1004", [calleeName(callee), suggest(calleeName(callee), knownCallees)], locOf(callee));
      const args = n.getArguments().map(evaluate);
      let result: unknown;
      try {
        result = (fn as (...a: unknown[]) => unknown)(...args);
      } catch (e) {
        // An unknown option points at its key, every other argument error at the offending value.
        const obj = e instanceof DslArgError && e.code === "ZV1007" ? resolvePath(n, e.path.slice(0, -1)) : undefined;
        if (e instanceof DslArgError) fail(e.code, e.args, locOf((Node.isObjectLiteralExpression(obj) && obj.getProperty(String(e.path.at(-1)))) || resolvePath(n, e.path)));
        throw e;
      }
      if (typeof result === "object" && result !== null) origins.set(result, { call: n });
      return result;
    }
    return unsupported(n, `${n.getKindName()} (programs are plain data: literals, consts and DSL calls)`);
  };

  const exp = sf.getExportAssignment((e) => !e.isExportEquals());
  if (!exp) fail("ZV1002", [file], { file, line: 1, col: 1 });
  const value = evaluate(exp!.getExpression());
  if (typeof value !== "object" || value === null || (value as { kind?: unknown }).kind !== "program") {
    fail("ZV1002", [file], locOf(exp!.getExpression()));
  }

  return {
    spec: value as ProgramSpec,
    file,
    locate(obj, path, offset) {
      const origin = origins.get(obj);
      if (!origin) return undefined;
      const target = resolvePath(origin.call, path);
      const isString = Node.isStringLiteral(target) || Node.isNoSubstitutionTemplateLiteral(target);
      return locOf(target, isString && offset !== undefined ? offset + 1 : 0);
    },
  };

  /** Follows an argument path (argument index, then property names or element indices) to the deepest node. */
  function resolvePath(call: Node, path: ArgPath): Node {
    if (!Node.isCallExpression(call)) return call;
    let cur: Node = call;
    const [first, ...rest] = path;
    if (typeof first === "number") cur = call.getArguments()[first] ?? call;
    for (const key of [...rest, undefined]) {
      while (Node.isIdentifier(cur)) {
        const init = sf.getVariableDeclaration(cur.getText())?.getInitializer();
        if (!init) break;
        cur = init;
      }
      if (key === undefined) break; // the path ends here; a const it named was followed to its value above
      if (Node.isObjectLiteralExpression(cur) && typeof key === "string") {
        const prop = cur.getProperty(key) ?? cur.getProperty(`"${key}"`);
        if (!prop) break;
        cur = Node.isPropertyAssignment(prop) ? prop.getInitializerOrThrow() : Node.isShorthandPropertyAssignment(prop) ? prop.getNameNode() : prop;
      } else if (Node.isArrayLiteralExpression(cur) && typeof key === "number") {
        cur = cur.getElements()[key] ?? cur;
      } else break;
    }
    return cur;
  }
}
