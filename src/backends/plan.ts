// What every GPU backend needs to launch a fused program's prefill: the bound dimensions, the probe rows, and every
// knob evaluated on the host. Kernels never see an expression they could evaluate once; variant hooks stay in code.
import type { Expr } from "../expr/ast.ts";
import { fail } from "../diagnostics/diagnostic.ts";
import type { Tensor } from "../io/tensor.ts";
import { makeTensor } from "../io/tensor.ts";
import { getFunc, type Node, type Program } from "../ir/ir.ts";
import { SELECT_RULE, type KnobRule } from "../frontend/knobs.ts";
import { bindPrefill, type Binding } from "../interp/bind.ts";
import { knobValue, ruleProbes } from "../interp/run.ts";
import type { ExecOptions } from "./backend.ts";

export interface PrefillPlan {
  readonly b: Binding;
  readonly probes: Int32Array;
  readonly perKvHead: boolean;
  /** Selection sets: 1 per layer, Hkv per KV head. */
  readonly S: number;
  readonly probe: { readonly node: Node; readonly scale: number; readonly activation: string; readonly normalizer: string };
  readonly select: { readonly node: Node; readonly mode: string; readonly amount: number; readonly pool: string; readonly poolSize: number; readonly keepFirst: number; readonly keepLast: number };
  readonly attn: { readonly node: Node; readonly scale: number };
}

export function fusedNode(p: Program, fname: "prefill" | "decode", op: string, backend: string): Node {
  return getFunc(p, fname).body.find((n) => n.op === op) ?? fail("ZV4002", [backend, `programs whose ${fname} has no fused '${op}' (run the passes first)`]);
}

export function planPrefill(p: Program, inputs: ReadonlyMap<string, Tensor>, opts: ExecOptions, backend: string): PrefillPlan {
  const b = bindPrefill(p, inputs, opts.params ?? {}, opts.layer ?? 0);
  const knob = (nd: Node, k: string, rule: KnobRule = "any"): number => knobValue(nd.attrs[k] as Expr, b.env, rule, k);
  const pr = fusedNode(p, "prefill", "probe_rows", backend);
  const ps = fusedNode(p, "prefill", "probe_score", backend);
  const sel = fusedNode(p, "prefill", "select", backend);
  const sa = fusedNode(p, "prefill", "sparse_attn_compact", backend);
  const explicit = inputs.get("probes");
  const probes = explicit ? Int32Array.from(explicit.data) : ruleProbes(pr, b.env, b.n);
  const perKvHead = ps.attrs.accumulate === "kv_head";
  // Layers before fromLayer keep everything (FastV's dense early layers).
  const mode = b.layer < knob(sel, "from_layer", "nonneg_int") ? "all" : (sel.attrs.mode as string);
  return {
    b, probes, perKvHead, S: perKvHead ? b.Hkv : 1,
    probe: { node: ps, scale: knob(ps, "scale", "scale"), activation: ps.attrs.activation as string, normalizer: ps.attrs.normalizer as string },
    select: {
      node: sel, mode, amount: mode === "all" ? 1 : knob(sel, "amount", SELECT_RULE[mode]),
      pool: sel.attrs.pool as string, poolSize: knob(sel, "pool_size", "pool_size"),
      keepFirst: knob(sel, "keep_first", "nonneg_int"), keepLast: knob(sel, "keep_last", "nonneg_int"),
    },
    attn: { node: sa, scale: knob(sa, "scale", "scale") },
  };
}

/** Device results of one prefill, in the layout every backend returns (the cpu backend's). */
export interface RawPrefill {
  readonly scores: Float32Array; // [S, n]
  readonly normScores: Float32Array; // [S, n]
  readonly count: Int32Array; // [S]
  readonly order: Int32Array; // [S, n]
  readonly o: Tensor; // [Hq, n, d]
  /** Cache rows of kv head `kv` (all n rows; the first count[set] are meaningful). */
  readonly kFull: Tensor; // [Hkv, n, d]
  readonly vFull: Tensor;
}

export function assemblePrefill(plan: PrefillPlan, r: RawPrefill, backend: string): Map<string, Tensor> {
  const { n, d, Hkv } = plan.b;
  // Device results are checked before they become tensors: a faulty kernel gets a coded error, not a crash.
  for (const c of r.count) if (!(c >= 1 && c <= n)) fail("ZV4003", [backend, `kept count ${c} outside [1, ${n}]`]);
  const S = plan.S;
  const setShape = S === 1 ? [n] : [S, n];
  const c = Math.max(...r.count);
  const f32 = (a: Float32Array): Tensor => makeTensor("f32", setShape, Float64Array.from(a));
  const compact = (full: Tensor): Tensor => {
    const out = makeTensor(full.dtype, [Hkv, c, d]);
    for (let kv = 0; kv < Hkv; kv++) {
      const keep = r.count[S === 1 ? 0 : kv]!;
      out.data.set(full.data.subarray(kv * n * d, (kv * n + keep) * d), kv * c * d);
    }
    return out;
  };
  let selected: Tensor;
  if (S === 1) selected = makeTensor("i32", [r.count[0]!], r.order.slice(0, r.count[0]!));
  else {
    const sel = new Int32Array(S * c).fill(-1);
    for (let s = 0; s < S; s++) sel.set(r.order.subarray(s * n, s * n + r.count[s]!), s * c);
    selected = makeTensor("i32", [S, c], sel);
  }
  return new Map<string, Tensor>([
    ["scores", f32(r.scores)],
    ["norm_scores", f32(r.normScores)],
    ["count", makeTensor("i32", [S], Int32Array.from(r.count))],
    ["selected", selected],
    ["o", r.o],
    ["k_cache", compact(r.kFull)],
    ["v_cache", compact(r.vFull)],
  ]);
}
