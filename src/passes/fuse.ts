// Fusion passes: each turns a chain of stage ops into one fused op, which a GPU backend maps to one kernel.
// A chain is fused only when its intermediates have no other users, so results never change (the tests run the
// interpreter before and after every pass).
import { type Func, type Node, node, tuple } from "../ir/ir.ts";
import { maxId, replaceNodes, users, type FuncPass } from "./rewrite.ts";

const only = (f: Func, id: number, op: string): Node | undefined => {
  const u = users(f, id);
  return u.length === 1 && u[0]!.op === op ? u[0] : undefined;
};

/** Replaces `group` by a tuple-producing `fused` node and one `get` per exported value. */
function fuseGroup(f: Func, group: readonly Node[], op: string, args: readonly number[], attrs: Record<string, unknown>, exports: readonly Node[]): Func {
  let next = maxId(f) + 1;
  const fusedId = next++;
  const types = exports.map((e) => e.type);
  const fused = node(fusedId, op, args, attrs as Record<string, never>, tuple(...types));
  const rename = new Map<number, number>();
  const gets = exports.map((e, index) => {
    const g = node(next++, "get", [fusedId], { index }, e.type);
    rename.set(e.id, g.id);
    return g;
  });
  return replaceNodes(f, new Set(group.map((g) => g.id)), [fused, ...gets], rename);
}

/** probe_attn -> col_mass, with norm_divisor over the same probes: one probe_score (scores, softmax, column sums). */
export const fuseProbeScoring: FuncPass = (f, p) => {
  for (const pa of f.body.filter((n) => n.op === "probe_attn")) {
    const cm = only(f, pa.id, "col_mass");
    const div = f.body.find((n) => n.op === "norm_divisor" && n.args[1] === pa.args[2]);
    if (!cm || !div) continue;
    const { causal, ...rest } = pa.attrs;
    return fuseProbeScoring(
      fuseGroup(f, [pa, cm, div], "probe_score", pa.args, { ...rest, ...(causal === undefined ? {} : { causal }), accumulate: cm.attrs.accumulate, normalizer: div.attrs.normalizer }, [cm, div]),
      undefined as never,
    );
  }
  return f;
};

/** normalize -> pool, kept_count -> layer_gate, keep_mask, select_topk: one select (one block per set). */
export const fuseSelection: FuncPass = (f, p) => {
  for (const st of f.body.filter((n) => n.op === "select_topk")) {
    const byId = (id: number | undefined): Node | undefined => f.body.find((n) => n.id === id);
    const pool = byId(st.args[0]);
    const gate = byId(st.args[1]);
    const keep = byId(st.args[2]);
    const norm = byId(pool?.args[0]);
    const kc = byId(gate?.args[0]);
    if (pool?.op !== "pool" || gate?.op !== "layer_gate" || keep?.op !== "keep_mask" || norm?.op !== "normalize" || kc?.op !== "kept_count") continue;
    if (kc.args[0] !== norm.args[0]) continue; // count and identity must come from the same column mass
    if (users(f, norm.id).length !== 1 || users(f, kc.id).length !== 1 || users(f, gate.id).length !== 1 || users(f, keep.id).length !== 1) continue;
    const gets = users(f, st.id);
    const order = gets.find((g) => g.op === "get" && g.attrs.index === 0);
    const count = gets.find((g) => g.op === "get" && g.attrs.index === 1);
    if (!order || !count || gets.length !== 2) continue;
    const attrs = {
      mode: kc.attrs.mode, amount: kc.attrs.amount, pool: pool.attrs.kind, pool_size: pool.attrs.size,
      keep_first: keep.attrs.keep_first, keep_last: keep.attrs.keep_last, keep_if: keep.attrs.keep_if, from_layer: gate.attrs.from_layer,
    };
    const q = keep.args[0]!;
    const g = fuseGroup(f, [norm, pool, kc, gate, keep, st, order, count], "select", [norm.args[0]!, norm.args[1]!, q], attrs, [pool, order, count]);
    return fuseSelection(g, p);
  }
  return f;
};

/** sparse_attn plus the compaction of k and v through the same selection: one pass writes o and both caches. */
export const fuseSparseAttention: FuncPass = (f, p) => {
  for (const sa of f.body.filter((n) => n.op === "sparse_attn")) {
    const [, k, v, order, count] = sa.args;
    const same = (n: Node, src: number | undefined): boolean => n.op === "compact_kv" && n.args[0] === src && n.args[1] === order && n.args[2] === count;
    const kc = f.body.find((n) => same(n, k));
    const vc = f.body.find((n) => same(n, v));
    if (!kc || !vc) continue;
    const g = fuseGroup(f, [sa, kc, vc], "sparse_attn_compact", sa.args, { ...sa.attrs }, [sa, kc, vc]);
    return fuseSparseAttention(g, p);
  }
  return f;
};

