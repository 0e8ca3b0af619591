// Lowers a checked ProgramSpec to IR: parses every expression (errors located in the program file), type-checks
// it in its environment, checks knobs whose values are known now, and builds the prefill and decode functions.
import type { Expr, ExprType } from "../expr/ast.ts";
import { typeOf, evalExpr } from "../expr/check.ts";
import { freeVars } from "../expr/ast.ts";
import { parseExpr } from "../expr/parser.ts";
import { fail } from "../diagnostics/diagnostic.ts";
import type { ArgPath } from "../dsl/check-args.ts";
import type { Knob, ProgramSpec } from "../dsl/spec.ts";
import { Builder, func, program, tensor, tuple, type Attr, type Program } from "../ir/ir.ts";
import { BUILTIN_NAMES, ENV_NAMES, type ExprEnv } from "../ir/ops.ts";
import { verifyProgram } from "../ir/verify.ts";
import { checkKnob, SELECT_RULE, type KnobRule } from "./knobs.ts";
import type { LoadedProgram } from "./evaluate.ts";

export function lowerProgram(loaded: LoadedProgram): Program {
  const { spec } = loaded;
  const paramNames = Object.keys(spec.params);
  for (const name of paramNames) {
    if (BUILTIN_NAMES.has(name)) fail("ZV1206", [name, `shadows the built-in name '${name}'`], loaded.locate(spec, [1, "params", name]));
  }
  const paramValues = spec.params;

  /** Parses and type-checks one knob or expression; `obj`+`path` locate it for diagnostics. */
  const toExpr = (k: Knob, env: ExprEnv, want: ExprType, where: string, obj: object, path: ArgPath, rule: KnobRule = "any"): Expr => {
    const e = typeof k === "number" ? ({ k: "num", v: k, pos: 0 } as const) : parseExpr(k, (off) => loaded.locate(obj, path, off));
    const names = new Map<string, ExprType>([...ENV_NAMES[env].map((x) => [x, "num"] as const), ...paramNames.map((x) => [x, "num"] as const)]);
    const got = typeOf(e, names, where, (off) => loaded.locate(obj, path, off));
    if (got !== want) fail("ZV1103", [`${where} must be a ${want === "num" ? "number" : "boolean"} expression`], loaded.locate(obj, path, 0));
    // Knobs that depend only on parameters are checked now, with the parameters' declared values.
    const free = [...freeVars(e)];
    if (rule !== "any" && free.every((x) => x in paramValues)) {
      const bad = checkKnob(rule, where, evalExpr(e, paramValues) as number);
      if (bad) fail(bad[0], bad[1], loaded.locate(obj, path, 0));
    }
    return e;
  };

  const { probes: pr, scores: sc, normalize: nz, select: sl, attention: at, decode: dc } = spec;
  const b = new Builder();
  const q = b.add("input", [], { name: "q" }, tensor("T", ["Hq", "n", "d"]));
  const k = b.add("input", [], { name: "k" }, tensor("T", ["Hkv", "n", "d"]));
  const v = b.add("input", [], { name: "v" }, tensor("T", ["Hkv", "n", "d"]));
  const explicit = b.add("input", [], { name: "probes", optional: true }, tensor("i32", ["m"]));

  const zero: Expr = { k: "num", v: 0, pos: 0 };
  const probeAttrs: Record<string, Attr> = { rule: pr.rule, recent: zero, random: zero, seed: zero };
  if (pr.rule === "recent" || pr.rule === "recent_random") probeAttrs.recent = toExpr(pr.recent, "knob", "num", "recent probes", pr, [0], "nonneg_int");
  if (pr.rule === "random" || pr.rule === "recent_random") {
    const at0 = pr.rule === "random" ? 0 : 1;
    probeAttrs.random = toExpr(pr.random, "knob", "num", "random probes", pr, [at0], "nonneg_int");
    probeAttrs.seed = toExpr(pr.seed, "knob", "num", "probe seed", pr, [at0 + 1], "nonneg_int");
  }
  if (pr.rule === "list") probeAttrs.list = pr.list;
  const probes = b.add("probe_rows", [q, explicit], probeAttrs, tensor("i32", ["m"]));

  const probeMask = toExpr(sc.mask, "mask", "bool", "the mask of scores()", sc, [0, "mask"]);
  const attn = b.add(
    "probe_attn", [q, k, probes],
    {
      scale: toExpr(sc.scale, "knob", "num", "the scale of scores()", sc, [0, "scale"], "scale"),
      modifier: toExpr(sc.modifier, "score", "num", "the modifier of scores()", sc, [0, "modifier"]),
      mask: probeMask,
      activation: nz.activation,
    },
    tensor("f32", ["Hq", "m", "n"]),
  );
  const setShape = nz.accumulate === "kv_head" ? ["Hkv", "n"] : ["n"];
  const mass = b.add("col_mass", [attn], { accumulate: nz.accumulate }, tensor("f32", setShape));
  const divisor = b.add("norm_divisor", [q, probes], { normalizer: nz.normalizer, mask: probeMask }, tensor("f32", ["n"]));
  const normed = b.add("normalize", [mass, divisor], {}, tensor("f32", setShape));
  const pooled = b.add(
    "pool", [normed],
    { kind: nz.pool.kind, size: toExpr(nz.pool.size, "knob", "num", "the pool size", nz, [0, "pool", "size"], "pool_size") },
    tensor("f32", setShape),
  );
  const optAt = sl.mode === "all" ? 0 : 1;
  const count0 = b.add(
    "kept_count", [mass],
    { mode: sl.mode, amount: toExpr(sl.amount, "knob", "num", `the ${sl.mode} of select`, sl, [0], SELECT_RULE[sl.mode]) },
    tensor("i32", ["S"]),
  );
  const keep = b.add(
    "keep_mask", [q],
    {
      keep_first: toExpr(sl.keepFirst, "knob", "num", "keepFirst", sl, [optAt, "keepFirst"], "nonneg_int"),
      keep_last: toExpr(sl.keepLast, "knob", "num", "keepLast", sl, [optAt, "keepLast"], "nonneg_int"),
      keep_if: toExpr(sl.keepIf, "keep", "bool", "keepIf", sl, [optAt, "keepIf"]),
    },
    tensor("i32", ["n"]),
  );
  const count1 = b.add(
    "layer_gate", [count0, q],
    { from_layer: toExpr(sl.fromLayer, "knob", "num", "fromLayer", sl, [optAt, "fromLayer"], "nonneg_int") },
    tensor("i32", ["S"]),
  );
  const topk = b.add("select_topk", [pooled, count1, keep], {}, tuple(tensor("i32", ["S", "n"]), tensor("i32", ["S"])));
  const order = b.add("get", [topk], { index: 0 }, tensor("i32", ["S", "n"]));
  const count = b.add("get", [topk], { index: 1 }, tensor("i32", ["S"]));
  const o = b.add(
    "sparse_attn", [q, k, v, order, count],
    {
      scale: toExpr(at.scale, "knob", "num", "the scale of attention()", at, [0, "scale"], "scale"),
      modifier: toExpr(at.modifier, "score", "num", "the modifier of attention()", at, [0, "modifier"]),
      mask: toExpr(at.mask, "mask", "bool", "the mask of attention()", at, [0, "mask"]),
    },
    tensor("T", ["Hq", "n", "d"]),
  );
  const kc = b.add("compact_kv", [k, order, count], {}, tensor("T", ["Hkv", "c", "d"]));
  const vc = b.add("compact_kv", [v, order, count], {}, tensor("T", ["Hkv", "c", "d"]));
  const selected = b.add("take_selected", [order, count], {}, tensor("i32", ["c"]));
  const prefill = func("prefill", b.body, [
    { name: "scores", id: mass }, { name: "norm_scores", id: pooled }, { name: "count", id: count },
    { name: "selected", id: selected }, { name: "o", id: o }, { name: "k_cache", id: kc }, { name: "v_cache", id: vc },
  ]);

  const d = new Builder();
  const dq = d.add("input", [], { name: "q" }, tensor("T", ["Hq", 1, "d"]));
  const dk = d.add("input", [], { name: "k_cache" }, tensor("T", ["Hkv", "c", "d"]));
  const dv = d.add("input", [], { name: "v_cache" }, tensor("T", ["Hkv", "c", "d"]));
  const dout = d.add(
    "decode_attn", [dq, dk, dv],
    {
      scale: toExpr(dc.scale, "knob", "num", "the scale of decode()", dc, [0, "scale"], "scale"),
      modifier: toExpr(dc.modifier, "decode", "num", "the modifier of decode()", dc, [0, "modifier"]),
    },
    tensor("T", ["Hq", 1, "d"]),
  );
  const decode = func("decode", d.body, [{ name: "o", id: dout }]);

  const params = paramNames.map((name) => ({ name, value: paramValues[name]! }));
  return verifyProgram(program(spec.name, params, [prefill, decode]));
}
