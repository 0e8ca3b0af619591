// The expression language: print/parse round trip, typing, folding and evaluation agree.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import type { BinOp, Expr } from "../src/expr/ast.ts";
import { compileExpr, evalExpr, typeOf } from "../src/expr/check.ts";
import { parseExpr } from "../src/expr/parser.ts";
import { printExpr } from "../src/expr/print.ts";
import { fold } from "../src/expr/simplify.ts";

const NUM_OPS: BinOp[] = ["+", "-", "*", "/"];
const CMP_OPS: BinOp[] = ["<", "<=", ">", ">=", "==", "!="];
const { num, bool } = fc.letrec<{ num: Expr; bool: Expr }>((tie) => ({
  num: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.integer({ min: 0, max: 9 }).map((v) => ({ k: "num", v, pos: 0 }) as Expr),
    fc.constantFrom("s", "q_pos", "k_pos").map((name) => ({ k: "var", name, pos: 0 }) as Expr),
    fc.tuple(fc.constantFrom(...NUM_OPS), tie("num"), tie("num")).map(([op, a, b]) => ({ k: "bin", op, a, b, pos: 0 }) as Expr),
    tie("num").map((a) => ({ k: "un", op: "-", a, pos: 0 }) as Expr),
    fc.tuple(fc.constantFrom("tanh", "abs"), tie("num")).map(([fn, a]) => ({ k: "call", fn, args: [a], pos: 0 }) as Expr),
    fc.tuple(tie("bool"), tie("num"), tie("num")).map(([c, a, b]) => ({ k: "cond", c, a, b, pos: 0 }) as Expr),
  ),
  bool: fc.oneof(
    { depthSize: "small" },
    fc.boolean().map((v) => ({ k: "bool", v, pos: 0 }) as Expr),
    fc.tuple(fc.constantFrom(...CMP_OPS), tie("num"), tie("num")).map(([op, a, b]) => ({ k: "bin", op, a, b, pos: 0 }) as Expr),
    fc.tuple(fc.constantFrom<BinOp>("&&", "||"), tie("bool"), tie("bool")).map(([op, a, b]) => ({ k: "bin", op, a, b, pos: 0 }) as Expr),
    tie("bool").map((a) => ({ k: "un", op: "!", a, pos: 0 }) as Expr),
  ),
}));

const env = new Map([["s", "num"], ["q_pos", "num"], ["k_pos", "num"]] as const);
const vals = fc.record({ s: fc.double({ min: -10, max: 10, noNaN: true }), q_pos: fc.nat(50), k_pos: fc.nat(50) });
const same = (a: unknown, b: unknown): boolean => Object.is(a, b) || (typeof a === "number" && typeof b === "number" && Math.abs(a - b) <= 1e-12 * Math.max(1, Math.abs(a)));

describe("expression language", () => {
  it("print -> parse -> print is the identity, and meaning is preserved", () => {
    fc.assert(
      fc.property(fc.oneof(num, bool), vals, (e, v) => {
        const text = printExpr(e);
        const back = parseExpr(text);
        expect(printExpr(back)).toBe(text);
        expect(same(evalExpr(back, v), evalExpr(e, v))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
  it("folding and compiling to JS agree with the tree walker", () => {
    fc.assert(
      fc.property(fc.oneof(num, bool), vals, (e, v) => {
        const want = evalExpr(e, v);
        expect(same(evalExpr(fold(e), v), want)).toBe(true);
        expect(same(compileExpr(e, ["s", "q_pos", "k_pos"])(v.s, v.q_pos, v.k_pos), want)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
  it("types what it generates", () => {
    fc.assert(fc.property(num, (e) => typeOf(e, env, "test") === "num"), { numRuns: 100 });
    fc.assert(fc.property(bool, (e) => typeOf(e, env, "test") === "bool"), { numRuns: 100 });
  });
  it("parses the documented examples", () => {
    expect(printExpr(parseExpr("q_pos >= k_pos && q_pos - k_pos < window"))).toBe("q_pos >= k_pos && q_pos - k_pos < window");
    expect(printExpr(parseExpr("tanh(s / cap) * cap"))).toBe("tanh(s / cap) * cap");
    expect(printExpr(parseExpr("a - (b - c)"))).toBe("a - (b - c)");
    expect(printExpr(parseExpr("(a < b) == (c < d)"))).toBe("(a < b) == (c < d)");
    expect(evalExpr(parseExpr("1 < 2 ? 3 : 4"), {})).toBe(3);
  });
});
