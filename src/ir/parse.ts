// Parser for the IR text form (see print.ts). Line oriented; expressions inside backticks go through the
// expression language's parser. Errors are ZV1301 with line:col inside the text.
import { parseExpr } from "../expr/parser.ts";
import { fail, ZipvlError } from "../diagnostics/diagnostic.ts";
import { type Attr, type Dim, type Func, type Node, type Output, type Param, type Program, type Type, func, node, program, tensor, tuple } from "./ir.ts";

class Cursor {
  pos = 0;
  constructor(readonly s: string, readonly line: number) {}
  ws(): void {
    while (this.s[this.pos] === " " || this.s[this.pos] === "\t") this.pos++;
  }
  error(msg: string): never {
    return fail("ZV1301", [`line ${this.line}, col ${this.pos + 1}`, msg]);
  }
  eat(tok: string): void {
    this.ws();
    if (!this.s.startsWith(tok, this.pos)) this.error(`expected '${tok}'`);
    this.pos += tok.length;
  }
  tryEat(tok: string): boolean {
    this.ws();
    if (!this.s.startsWith(tok, this.pos)) return false;
    this.pos += tok.length;
    return true;
  }
  match(re: RegExp, what: string): string {
    this.ws();
    const m = re.exec(this.s.slice(this.pos));
    if (!m || m.index !== 0) this.error(`expected ${what}`);
    this.pos += m[0].length;
    return m[0];
  }
  done(): boolean {
    this.ws();
    return this.pos >= this.s.length;
  }
}

const IDENT = /[A-Za-z_][\w-]*/;
const NUMBER = /-?(?:\d+\.?\d*(?:e[+-]?\d+)?|Infinity)|NaN/i;

function parseType(c: Cursor): Type {
  if (c.tryEat("(")) {
    const items: Type[] = [];
    do items.push(parseType(c));
    while (c.tryEat(","));
    c.eat(")");
    return tuple(...items);
  }
  const dtype = c.match(/T|f32|i32/, "an element type (T, f32, i32)") as "T" | "f32" | "i32";
  c.eat("[");
  const shape: Dim[] = [];
  if (!c.tryEat("]")) {
    do {
      const d = c.match(/\d+|[A-Za-z_]\w*/, "a dimension");
      shape.push(/^\d+$/.test(d) ? Number(d) : d);
    } while (c.tryEat(","));
    c.eat("]");
  }
  return tensor(dtype, shape);
}

function parseAttr(c: Cursor): Attr {
  c.ws();
  const ch = c.s[c.pos];
  if (ch === "`") {
    const end = c.s.indexOf("`", c.pos + 1);
    if (end < 0) c.error("unterminated expression");
    const text = c.s.slice(c.pos + 1, end);
    const start = c.pos + 2;
    c.pos = end + 1;
    try {
      return parseExpr(text);
    } catch (e) {
      if (e instanceof ZipvlError) fail("ZV1301", [`line ${c.line}, col ${start}`, e.diagnostics[0]!.message]);
      throw e;
    }
  }
  if (ch === '"') {
    const m = c.match(/"(?:[^"\\]|\\.)*"/, "a string");
    return JSON.parse(m) as string;
  }
  if (ch === "[") {
    c.eat("[");
    const xs: number[] = [];
    if (!c.tryEat("]")) {
      do xs.push(Number(c.match(NUMBER, "a number")));
      while (c.tryEat(","));
      c.eat("]");
    }
    return xs;
  }
  if (c.tryEat("true")) return true;
  if (c.tryEat("false")) return false;
  return Number(c.match(NUMBER, "an attribute value"));
}

function parseNode(c: Cursor): Node {
  c.eat("%");
  const id = Number(c.match(/\d+/, "a value id"));
  c.eat("=");
  const op = c.match(/[a-z_]+/, "an op name");
  const args: number[] = [];
  c.ws();
  if (c.s[c.pos] === "%") {
    do {
      c.eat("%");
      args.push(Number(c.match(/\d+/, "a value id")));
    } while (c.tryEat(","));
  }
  const attrs: Record<string, Attr> = {};
  while (!c.tryEat(":")) {
    const key = c.match(/[a-z_]+/, "an attribute name or ':'");
    c.eat("=");
    attrs[key] = parseAttr(c);
  }
  const type = parseType(c);
  if (!c.done()) c.error("unexpected text after the type");
  return node(id, op, args, attrs, type);
}

export function parseProgram(text: string): Program {
  const lines = text.split("\n").map((s, i) => new Cursor(s, i + 1)).filter((c) => !c.done() && !c.s.trim().startsWith("#"));
  let i = 0;
  const next = (): Cursor => lines[i++] ?? fail("ZV1301", ["end of text", "unexpected end of program"]);
  const head = next();
  head.eat("program");
  const name = head.match(IDENT, "a program name");
  const params: Param[] = [];
  const funcs: Func[] = [];
  while (i < lines.length) {
    const c = next();
    if (c.tryEat("param")) {
      const pname = c.match(IDENT, "a parameter name");
      c.eat("=");
      params.push({ name: pname, value: Number(c.match(NUMBER, "a number")) });
      continue;
    }
    c.eat("func");
    const fname = c.match(IDENT, "a function name");
    c.eat("{");
    const body: Node[] = [];
    let outputs: Output[] | undefined;
    for (;;) {
      const l = next();
      if (l.tryEat("}")) break;
      if (l.tryEat("return")) {
        outputs = [];
        if (!l.done()) {
          do {
            const oname = l.match(IDENT, "an output name");
            l.eat("=");
            l.eat("%");
            outputs.push({ name: oname, id: Number(l.match(/\d+/, "a value id")) });
          } while (l.tryEat(","));
        }
        continue;
      }
      body.push(parseNode(l));
    }
    if (!outputs) fail("ZV1301", [`function ${fname}`, "missing return"]);
    funcs.push(func(fname, body, outputs));
  }
  return program(name, params, funcs);
}
