// The op table: one row per op, read by the verifier, the printer/parser and the interpreter's dispatcher.
// (tinygrad keeps its spec as a table too.) Stage ops come from the front end; fused ops from the passes.
import { type Dim, type ElemType, type Type, tensor, tuple } from "./ir.ts";
import { ACCUMULATE, ACTIVATIONS, NORMALIZERS, POOLS } from "../dsl/spec.ts";

export type ExprEnv = "score" | "mask" | "knob" | "keep" | "decode";
export type AttrSpec =
  | { readonly kind: "expr"; readonly env: ExprEnv; readonly type: "num" | "bool" }
  | { readonly kind: "enum"; readonly values: readonly string[] }
  | { readonly kind: "string" }
  | { readonly kind: "int" }
  | { readonly kind: "bool" }
  | { readonly kind: "ints" };

/** Names every expression of an environment may use, besides the program's parameters (all numbers). */
export const ENV_NAMES: Record<ExprEnv, readonly string[]> = {
  score: ["s", "q_pos", "k_pos", "n", "d", "layer"],
  mask: ["q_pos", "k_pos", "n", "d", "layer"],
  knob: ["n", "d", "layer"],
  keep: ["pos", "n", "d", "layer"],
  decode: ["s", "n", "d", "layer"],
};
export const BUILTIN_NAMES = new Set(Object.values(ENV_NAMES).flat());

const expr = (env: ExprEnv, type: "num" | "bool" = "num"): AttrSpec => ({ kind: "expr", env, type });
const oneOf = (values: readonly string[]): AttrSpec => ({ kind: "enum", values });
const MODES = ["tau", "ratio", "budget", "all"] as const;
const RULES = ["recent", "random", "recent_random", "list", "all"] as const;

type ArgTypes = readonly Type[];
export interface OpSpec {
  readonly args: readonly [min: number, max: number];
  readonly attrs: Readonly<Record<string, AttrSpec>>;
  /** Result type from argument types and attributes; returns a string to report a mismatch. */
  readonly result: (args: ArgTypes, attrs: Readonly<Record<string, unknown>>) => Type | string;
}

const SCORE_ATTRS = { scale: expr("knob"), modifier: expr("score"), mask: expr("mask", "bool"), activation: oneOf(ACTIVATIONS), causal: { kind: "bool" } } as const;
const SELECT_ATTRS = {
  mode: oneOf(MODES), amount: expr("knob"), keep_first: expr("knob"), keep_last: expr("knob"),
  keep_if: expr("keep", "bool"), from_layer: expr("knob"),
};
const ATTN_ATTRS = { scale: expr("knob"), modifier: expr("score"), mask: expr("mask", "bool") };

const t = (a: ArgTypes, i: number): Type | undefined => a[i];
function shapeOf(ty: Type | undefined): readonly Dim[] | undefined {
  return ty?.t === "tensor" ? ty.shape : undefined;
}
function is(ty: Type | undefined, dtype: ElemType, rank: number): boolean {
  return ty?.t === "tensor" && ty.dtype === dtype && ty.shape.length === rank;
}
const setShape = (acc: unknown): readonly Dim[] => (acc === "kv_head" ? ["Hkv", "n"] : ["n"]);
const QKV = (a: ArgTypes): string | undefined =>
  is(t(a, 0), "T", 3) && is(t(a, 1), "T", 3) ? undefined : "q and k must be T[H,n,d] tensors";

export const OPS: Readonly<Record<string, OpSpec>> = {
  input: { args: [0, 0], attrs: { name: { kind: "string" }, optional: { kind: "bool" } }, result: () => "input types are declared, not inferred" },
  probe_rows: {
    args: [1, 2],
    attrs: { rule: oneOf(RULES), recent: expr("knob"), random: expr("knob"), seed: expr("knob"), list: { kind: "ints" } },
    result: (a) => (is(t(a, 0), "T", 3) ? tensor("i32", ["m"]) : "probe_rows needs q"),
  },
  probe_attn: { args: [3, 3], attrs: SCORE_ATTRS, result: (a) => QKV(a) ?? tensor("f32", ["Hq", "m", "n"]) },
  col_mass: {
    args: [1, 1], attrs: { accumulate: oneOf(ACCUMULATE) },
    result: (a, at) => (is(t(a, 0), "f32", 3) ? tensor("f32", setShape(at.accumulate)) : "col_mass needs probe probabilities f32[Hq,m,n]"),
  },
  norm_divisor: {
    args: [2, 2], attrs: { normalizer: oneOf(NORMALIZERS), mask: expr("mask", "bool") },
    result: (a) => (is(t(a, 1), "i32", 1) ? tensor("f32", ["n"]) : "norm_divisor needs (q, probes)"),
  },
  normalize: { args: [2, 2], attrs: {}, result: (a) => t(a, 0) ?? "normalize needs (mass, divisor)" },
  pool: { args: [1, 1], attrs: { kind: oneOf(POOLS), size: expr("knob") }, result: (a) => t(a, 0) ?? "pool needs scores" },
  kept_count: {
    args: [1, 1], attrs: { mode: oneOf(MODES), amount: expr("knob") },
    result: (a) => (shapeOf(t(a, 0)) ? tensor("i32", ["S"]) : "kept_count needs column mass"),
  },
  keep_mask: {
    args: [1, 1], attrs: { keep_first: expr("knob"), keep_last: expr("knob"), keep_if: expr("keep", "bool") },
    result: () => tensor("i32", ["n"]),
  },
  layer_gate: { args: [2, 2], attrs: { from_layer: expr("knob") }, result: (a) => t(a, 0) ?? "layer_gate needs a count" },
  select_topk: {
    args: [3, 3], attrs: {},
    result: (a) => (is(t(a, 1), "i32", 1) ? tuple(tensor("i32", ["S", "n"]), tensor("i32", ["S"])) : "select_topk needs (scores, count, keep)"),
  },
  get: {
    args: [1, 1], attrs: { index: { kind: "int" } },
    result: (a, at) => {
      const x = t(a, 0);
      const item = x?.t === "tuple" ? x.items[at.index as number] : undefined;
      return item ?? "get needs a tuple and an index in range";
    },
  },
  take_selected: {
    args: [2, 2], attrs: {},
    result: (a) => (is(t(a, 0), "i32", 2) ? tensor("i32", ["c"]) : "take_selected needs (order, count)"),
  },
  sparse_attn: {
    args: [5, 5], attrs: { ...ATTN_ATTRS, causal: { kind: "bool" } },
    result: (a) => QKV(a) ?? (is(t(a, 3), "i32", 2) ? tensor("T", ["Hq", "n", "d"]) : "sparse_attn needs (q, k, v, order, count)"),
  },
  compact_kv: {
    args: [3, 3], attrs: {},
    result: (a) => (is(t(a, 0), "T", 3) ? tensor("T", ["Hkv", "c", "d"]) : "compact_kv needs (k or v, order, count)"),
  },
  decode_attn: {
    args: [3, 3], attrs: { scale: expr("knob"), modifier: expr("decode") },
    result: (a) => QKV(a) ?? tensor("T", ["Hq", 1, "d"]),
  },
  // Fused ops (made by passes; each becomes one kernel launch on the GPU backends).
  probe_score: {
    args: [3, 3],
    attrs: { ...SCORE_ATTRS, accumulate: oneOf(ACCUMULATE), normalizer: oneOf(NORMALIZERS) },
    result: (a, at) => QKV(a) ?? tuple(tensor("f32", setShape(at.accumulate)), tensor("f32", ["n"])),
  },
  select: {
    args: [3, 3], attrs: { ...SELECT_ATTRS, pool: oneOf(POOLS), pool_size: expr("knob") },
    result: (a) => {
      const s = shapeOf(t(a, 0));
      return s ? tuple(tensor("f32", s), tensor("i32", ["S", "n"]), tensor("i32", ["S"])) : "select needs column mass";
    },
  },
  sparse_attn_compact: {
    args: [5, 5], attrs: { ...ATTN_ATTRS, causal: { kind: "bool" } },
    result: (a) => QKV(a) ?? tuple(tensor("T", ["Hq", "n", "d"]), tensor("T", ["Hkv", "c", "d"]), tensor("T", ["Hkv", "c", "d"])),
  },
};

/** Ops that the passes produce and the launch planner maps to kernels. */
export const KERNEL_OPS = ["probe_score", "select", "sparse_attn_compact", "decode_attn"] as const;
