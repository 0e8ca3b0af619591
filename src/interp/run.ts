// The float64 reference interpreter: runs any function of any program (before or after any pass) on host
// tensors. It is the executable spec every backend is tested against.
import type { Expr } from "../expr/ast.ts";
import { compileExpr, evalExpr } from "../expr/check.ts";
import { fold, substitute } from "../expr/simplify.ts";
import { fail } from "../diagnostics/diagnostic.ts";
import { roundTo, type DType } from "../io/dtype.ts";
import { makeTensor, type Tensor } from "../io/tensor.ts";
import { getFunc, type Node, type Program } from "../ir/ir.ts";
import { checkKnob, SELECT_RULE, type KnobRule } from "../frontend/knobs.ts";
import { bindDecode, bindPrefill, type Binding } from "./bind.ts";
import * as K from "./kernels.ts";
import { probeRows } from "./probes.ts";

type Val = Tensor | readonly Val[];

export interface RunOptions {
  readonly params?: Readonly<Record<string, number>>;
  readonly layer?: number;
}

const f64 = (shape: readonly number[], data: Float64Array): Tensor => makeTensor("f64", shape, data);
const i32 = (shape: readonly number[], data: Int32Array): Tensor => makeTensor("i32", shape, data);

export function interpret(p: Program, fname: "prefill" | "decode", inputs: ReadonlyMap<string, Tensor>, opts: RunOptions = {}): Map<string, Tensor> {
  const f = getFunc(p, fname);
  const b: Binding = fname === "prefill" ? bindPrefill(p, inputs, opts.params ?? {}, opts.layer ?? 0) : bindDecode(p, inputs, opts.params ?? {}, opts.layer ?? 0);
  const vals = new Map<number, Val>();
  const dtype = (inputs.get("q")?.dtype ?? "f32") as DType;
  for (const nd of f.body) vals.set(nd.id, evalNode(nd, vals, inputs, b));
  const out = new Map<string, Tensor>();
  for (const o of f.outputs) {
    const v = vals.get(o.id) as Tensor;
    const decl = f.body.find((x) => x.id === o.id)!.type;
    const elem = decl.t === "tensor" ? decl.dtype : "f32";
    out.set(o.name, elem === "i32" ? v : roundTensor(v, elem === "T" ? dtype : "f32"));
  }
  return out;
}

function roundTensor(t: Tensor, dtype: DType): Tensor {
  return makeTensor(dtype, t.shape, (t.data as Float64Array).map((x) => roundTo(dtype, x)));
}

/** Evaluates a knob with the bound environment and checks its range (the same codes as the front end). */
export function knobValue(e: Expr, env: Readonly<Record<string, number>>, rule: KnobRule, what: string): number {
  const v = evalExpr(e, env) as number;
  const bad = checkKnob(rule, what, v);
  if (bad) fail(bad[0], bad[1]);
  return v;
}

/** The probe rows a probe_rows node's rule draws for a prompt of n tokens (every backend computes them here). */
export function ruleProbes(nd: Node, env: Readonly<Record<string, number>>, n: number): Int32Array {
  const k = (key: string): number => knobValue(nd.attrs[key] as Expr, env, "nonneg_int", key);
  return probeRows({ rule: nd.attrs.rule as "all", recent: k("recent"), random: k("random"), seed: k("seed"), list: (nd.attrs.list as number[] | undefined) ?? [] }, n);
}

/** Specializes a score expression to the bound parameters and compiles it. */
export function scoreFn(e: Expr, env: Readonly<Record<string, number>>): K.ScoreFn {
  const f = compileExpr(fold(substitute(e, env)), ["s", "q_pos", "k_pos"]);
  return (s, qp, kp) => f(s, qp, kp) as number;
}
export function maskFn(e: Expr, env: Readonly<Record<string, number>>): K.MaskFn {
  const f = compileExpr(fold(substitute(e, env)), ["q_pos", "k_pos"]);
  return (qp, kp) => f(qp, kp) as boolean;
}

function evalNode(nd: Node, vals: ReadonlyMap<number, Val>, inputs: ReadonlyMap<string, Tensor>, b: Binding): Val {
  const arg = (i: number): Tensor => vals.get(nd.args[i]!) as Tensor;
  const a = nd.attrs;
  const ex = (key: string): Expr => a[key] as Expr;
  const knob = (key: string, rule: KnobRule = "any"): number => knobValue(ex(key), b.env, rule, key);
  const heads: K.Heads = b;
  const fl = (t: Tensor): Float64Array => t.data as Float64Array;
  const it = (t: Tensor): Int32Array => t.data as Int32Array;
  switch (nd.op) {
    case "input": {
      const t = inputs.get(a.name as string);
      if (!t) return i32([0], new Int32Array(0)); // an absent optional input
      return t.dtype === "i32" ? t : f64(t.shape, Float64Array.from(t.data));
    }
    case "probe_rows": {
      const explicit = nd.args.length > 1 ? arg(1) : undefined;
      if (explicit && inputs.has("probes")) return explicit;
      const rows = ruleProbes(nd, b.env, b.n);
      return i32([rows.length], rows);
    }
    case "probe_attn": {
      const probes = it(arg(2));
      const A = K.probeAttention(fl(arg(0)), fl(arg(1)), probes, heads, knob("scale", "scale"), scoreFn(ex("modifier"), b.env), maskFn(ex("mask"), b.env), a.activation as string);
      return f64([b.Hq, probes.length, b.n], A);
    }
    case "col_mass": {
      const per = a.accumulate === "kv_head";
      const m = arg(0).shape[1]!;
      return f64(per ? [b.Hkv, b.n] : [b.n], K.columnMass(fl(arg(0)), heads, m, per));
    }
    case "norm_divisor":
      return f64([b.n], K.normDivisor(a.normalizer as string, it(arg(1)), b.n, maskFn(ex("mask"), b.env)));
    case "normalize":
      return f64(arg(0).shape, K.normalizeScores(fl(arg(0)), fl(arg(1)), b.n));
    case "pool":
      return f64(arg(0).shape, K.poolScores(fl(arg(0)), b.n, a.kind as string, knob("size", "pool_size")));
    case "kept_count": {
      const mode = a.mode as string;
      const c = K.keptCount(fl(arg(0)), b.n, mode, knob("amount", SELECT_RULE[mode]));
      return i32([c.length], c);
    }
    case "keep_mask":
      return i32([b.n], keepMask(nd, b));
    case "layer_gate": {
      const c = it(arg(0));
      return b.layer < knob("from_layer", "nonneg_int") ? i32([c.length], c.map(() => b.n)) : arg(0);
    }
    case "select_topk": {
      const s = arg(0);
      const r = K.selectTopk(fl(s), b.n, it(arg(1)), it(arg(2)));
      return [i32([r.count.length, b.n], r.order), i32([r.count.length], r.count)];
    }
    case "get":
      return (vals.get(nd.args[0]!) as readonly Val[])[a.index as number]!;
    case "take_selected":
      return takeSelected(it(arg(0)), it(arg(1)), b.n);
    case "sparse_attn":
      return f64([b.Hq, b.n, b.d], sparse(nd, arg, b, 0));
    case "compact_kv": {
      const r = K.compactRows(fl(arg(0)), heads, it(arg(1)), it(arg(2)));
      return f64([b.Hkv, r.c, b.d], r.data);
    }
    case "decode_attn": {
      const c = arg(1).shape[1]!;
      const mod = compileExpr(fold(substitute(ex("modifier"), b.env)), ["s"]);
      const o = K.decodeAttention(fl(arg(0)), fl(arg(1)), fl(arg(2)), b.Hq, b.Hkv, c, b.d, knob("scale", "scale"), (s) => mod(s) as number);
      return f64([b.Hq, 1, b.d], o);
    }
    // Fused ops: the same semantics, evaluated the way the kernels do (no materialized probability matrix,
    // online softmax over key tiles), so the interpreter also checks that fusion preserves results.
    case "probe_score": {
      const probes = it(arg(2));
      const per = a.accumulate === "kv_head";
      const mask = maskFn(ex("mask"), b.env);
      const mass = streamingColumnMass(fl(arg(0)), fl(arg(1)), probes, heads, knob("scale", "scale"), scoreFn(ex("modifier"), b.env), mask, a.activation as string, per);
      return [f64(per ? [b.Hkv, b.n] : [b.n], mass), f64([b.n], K.normDivisor(a.normalizer as string, probes, b.n, mask))];
    }
    case "select": {
      const mass = arg(0);
      const mode = a.mode as string;
      const pooled = K.poolScores(K.normalizeScores(fl(mass), fl(arg(1)), b.n), b.n, a.pool as string, knob("pool_size", "pool_size"));
      let counts = K.keptCount(fl(mass), b.n, mode, knob("amount", SELECT_RULE[mode]));
      if (b.layer < knob("from_layer", "nonneg_int")) counts = counts.map(() => b.n);
      const r = K.selectTopk(pooled, b.n, counts, keepMask(nd, b));
      return [f64(mass.shape, pooled), i32([r.count.length, b.n], r.order), i32([r.count.length], r.count)];
    }
    case "sparse_attn_compact": {
      const o = f64([b.Hq, b.n, b.d], sparse(nd, arg, b, 64));
      const kc = K.compactRows(fl(arg(1)), heads, it(arg(3)), it(arg(4)));
      const vc = K.compactRows(fl(arg(2)), heads, it(arg(3)), it(arg(4)));
      return [o, f64([b.Hkv, kc.c, b.d], kc.data), f64([b.Hkv, vc.c, b.d], vc.data)];
    }
    default:
      throw new Error(`internal: the interpreter has no rule for op '${nd.op}'`);
  }
}

/** Tokens the keep rules force into the selection (first k, last L, keepIf). */
export function keepMask(nd: Node, b: Binding): Int32Array {
  const env = b.env;
  const first = knobValue(nd.attrs.keep_first as Expr, env, "nonneg_int", "keepFirst");
  const last = knobValue(nd.attrs.keep_last as Expr, env, "nonneg_int", "keepLast");
  const keepIf = compileExpr(fold(substitute(nd.attrs.keep_if as Expr, env)), ["pos"]);
  return Int32Array.from({ length: b.n }, (_, j) => (j < first || j >= b.n - last || keepIf(j) ? 1 : 0));
}

function sparse(nd: Node, arg: (i: number) => Tensor, b: Binding, tile: number): Float64Array {
  const e = (key: string): Expr => nd.attrs[key] as Expr;
  return K.sparseAttention(
    arg(0).data as Float64Array, arg(1).data as Float64Array, arg(2).data as Float64Array, b,
    arg(3).data as Int32Array, arg(4).data as Int32Array,
    knobValue(e("scale"), b.env, "scale", "scale"), scoreFn(e("modifier"), b.env), maskFn(e("mask"), b.env), tile,
  );
}

/** selected: i32[count] for one set; i32[S, max count] padded with -1 for per-KV-head sets. */
function takeSelected(order: Int32Array, count: Int32Array, n: number): Tensor {
  if (count.length === 1) return i32([count[0]!], order.slice(0, count[0]!));
  const c = Math.max(...count);
  const out = new Int32Array(count.length * c).fill(-1);
  for (let s = 0; s < count.length; s++) out.set(order.subarray(s * n, s * n + count[s]!), s * c);
  return i32([count.length, c], out);
}

/** Column mass without the probability matrix: per probe row, an online max/sum pass, then accumulation. */
function streamingColumnMass(q: Float64Array, k: Float64Array, probes: Int32Array, h: K.Heads, scale: number, mod: K.ScoreFn, mask: K.MaskFn, act: string, perKv: boolean): Float64Array {
  const { Hq, Hkv, n, d } = h;
  const g = Hq / Hkv;
  const out = new Float64Array((perKv ? Hkv : 1) * n);
  const score = (hq: number, kv: number, p: number, j: number): number => {
    let s = 0;
    for (let x = 0; x < d; x++) s += q[(hq * n + p) * d + x]! * k[(kv * n + j) * d + x]!;
    return mod(s * scale, p, j);
  };
  for (let hq = 0; hq < Hq; hq++) {
    const kv = Math.floor(hq / g);
    const base = perKv ? kv * n : 0;
    for (const p of probes) {
      let mx = -Infinity;
      let l = 0;
      if (act === "softmax") {
        for (let j = 0; j < n; j++) {
          if (!mask(p, j)) continue;
          const s = score(hq, kv, p, j);
          const nm = Math.max(mx, s);
          l = l * Math.exp(mx - nm) + Math.exp(s - nm);
          mx = nm;
        }
      }
      for (let j = 0; j < n; j++) {
        if (!mask(p, j)) continue;
        const s = score(hq, kv, p, j);
        out[base + j]! += act === "softmax" ? Math.exp(s - mx) / l : act === "sigmoid" ? 1 / (1 + Math.exp(-s)) : s;
      }
    }
  }
  return out;
}
