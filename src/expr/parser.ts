// The expression language grammar (chevrotain). Score modifiers, masks, keep rules and numeric knobs are written in
// it: `s * scale`, `q_pos >= k_pos && q_pos - k_pos < window`, `tanh(s / cap) * cap`, `pos < sinks`.
import { createToken, EmbeddedActionsParser, Lexer, type IToken } from "chevrotain";
import type { BinOp, Expr } from "./ast.ts";
import { fail, type Location } from "../diagnostics/diagnostic.ts";

const WS = createToken({ name: "WS", pattern: /\s+/, group: Lexer.SKIPPED });
const Num = createToken({ name: "Num", pattern: /(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?/ });
const True = createToken({ name: "True", pattern: /true\b/ });
const False = createToken({ name: "False", pattern: /false\b/ });
const Ident = createToken({ name: "Ident", pattern: /[A-Za-z_][A-Za-z0-9_]*/ });
const CmpOp = createToken({ name: "CmpOp", pattern: /<=|>=|==|!=|<|>/ });
const AndOp = createToken({ name: "AndOp", pattern: /&&/ });
const OrOp = createToken({ name: "OrOp", pattern: /\|\|/ });
const AddOp = createToken({ name: "AddOp", pattern: /[+-]/ });
const MulOp = createToken({ name: "MulOp", pattern: /[*/%]/ });
const Not = createToken({ name: "Not", pattern: /!/ });
const LParen = createToken({ name: "LParen", pattern: /\(/ });
const RParen = createToken({ name: "RParen", pattern: /\)/ });
const Comma = createToken({ name: "Comma", pattern: /,/ });
const Question = createToken({ name: "Question", pattern: /\?/ });
const Colon = createToken({ name: "Colon", pattern: /:/ });

const tokens = [WS, Num, True, False, Ident, CmpOp, AndOp, OrOp, AddOp, MulOp, Not, LParen, RParen, Comma, Question, Colon];
const lexer = new Lexer(tokens, { positionTracking: "onlyOffset" });

class ExprParser extends EmbeddedActionsParser {
  constructor() {
    super(tokens, { maxLookahead: 2 });
    this.performSelfAnalysis();
  }

  expr = this.RULE("expr", (): Expr => {
    const c = this.SUBRULE(this.orExpr);
    const rest = this.OPTION(() => {
      this.CONSUME(Question);
      const a = this.SUBRULE(this.expr);
      this.CONSUME(Colon);
      const b = this.SUBRULE2(this.expr);
      return [a, b] as const;
    });
    return this.ACTION(() => (rest ? { k: "cond", c, a: rest[0], b: rest[1], pos: c.pos } : c));
  });

  private orExpr = this.RULE("orExpr", (): Expr => this.leftAssoc(OrOp, () => this.SUBRULE(this.and), () => this.SUBRULE2(this.and)));
  private and = this.RULE("and", (): Expr => this.leftAssoc(AndOp, () => this.SUBRULE(this.cmp), () => this.SUBRULE2(this.cmp)));

  private cmp = this.RULE("cmp", (): Expr => {
    const a = this.SUBRULE(this.add);
    const rest = this.OPTION(() => [this.CONSUME(CmpOp), this.SUBRULE2(this.add)] as const);
    return this.ACTION(() => (rest ? { k: "bin", op: rest[0].image as BinOp, a, b: rest[1], pos: rest[0].startOffset } : a));
  });

  private add = this.RULE("add", (): Expr => this.leftAssoc(AddOp, () => this.SUBRULE(this.mul), () => this.SUBRULE2(this.mul)));
  private mul = this.RULE("mul", (): Expr => this.leftAssoc(MulOp, () => this.SUBRULE(this.unary), () => this.SUBRULE2(this.unary)));

  private unary = this.RULE("unary", (): Expr =>
    this.OR([
      {
        ALT: () => {
          const t = this.OR2([{ ALT: () => this.CONSUME(AddOp) }, { ALT: () => this.CONSUME(Not) }]);
          const a = this.SUBRULE(this.unary);
          return this.ACTION(() => (t.image === "+" ? a : ({ k: "un", op: t.image === "!" ? "!" : "-", a, pos: t.startOffset } as Expr)));
        },
      },
      { ALT: () => this.SUBRULE(this.primary) },
    ]),
  );

  private primary = this.RULE("primary", (): Expr =>
    this.OR([
      { ALT: () => this.numberLit(this.CONSUME(Num)) },
      { ALT: () => ({ k: "bool", v: true, pos: this.CONSUME(True).startOffset }) as Expr },
      { ALT: () => ({ k: "bool", v: false, pos: this.CONSUME(False).startOffset }) as Expr },
      {
        ALT: () => {
          const id = this.CONSUME(Ident);
          const args = this.OPTION(() => {
            this.CONSUME(LParen);
            const list: Expr[] = [];
            this.MANY_SEP({ SEP: Comma, DEF: () => list.push(this.SUBRULE(this.expr)) });
            this.CONSUME(RParen);
            return list;
          });
          return this.ACTION(() => (args ? { k: "call", fn: id.image, args, pos: id.startOffset } : { k: "var", name: id.image, pos: id.startOffset }) as Expr);
        },
      },
      {
        ALT: () => {
          this.CONSUME2(LParen);
          const e = this.SUBRULE2(this.expr);
          this.CONSUME2(RParen);
          return e;
        },
      },
    ]),
  );

  private numberLit(t: IToken): Expr {
    return this.ACTION(() => ({ k: "num", v: Number(t.image), pos: t.startOffset }) as Expr);
  }

  private leftAssoc(op: typeof AddOp, first: () => Expr, next: () => Expr): Expr {
    let acc = first();
    this.MANY(() => {
      const t = this.CONSUME(op);
      const b = next();
      acc = this.ACTION(() => ({ k: "bin", op: t.image as BinOp, a: acc, b, pos: t.startOffset }) as Expr);
    });
    return acc;
  }
}

const parser = new ExprParser();

/** Maps an offset inside the expression text to a location in the program file (or undefined). */
export type LocateFn = (offset: number) => Location | undefined;

export function parseExpr(text: string, locate: LocateFn = () => undefined): Expr {
  const lexed = lexer.tokenize(text);
  const lexErr = lexed.errors[0];
  if (lexErr) fail("ZV1101", [`unexpected character '${text.charAt(lexErr.offset)}' in \`${text}\``], locate(lexErr.offset));
  parser.input = lexed.tokens;
  const e = parser.expr();
  const perr = parser.errors[0];
  if (perr) {
    const off = Number.isFinite(perr.token.startOffset) ? perr.token.startOffset : text.length;
    const what = perr.token.image ? `unexpected '${perr.token.image}'` : "unexpected end of expression";
    fail("ZV1101", [`${what} in \`${text}\``], locate(off));
  }
  return e;
}
