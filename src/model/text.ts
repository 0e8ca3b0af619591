// The LLaMA decoder of LLaVA: embeddings, per-layer attention with RoPE on ORIGINAL positions (GQA), SiLU MLP,
// final RMSNorm and lm_head. Prefill runs each layer dense (ops.attention, full cache) or through a policy program
// (ops.sparsePrefill: the o rows of unselected tokens are zero, so those tokens only keep their residual, and the
// cache holds only the selected tokens). Decode appends to each layer's cache and attends to all of it. Caches are
// the backend's capacity caches with `reserve` rows past the prompt (the new tokens), so decode appends in place.
import type { TextConfig } from "./config.ts";
import { reservedKvCache, type KvCache, type KvCacheFactory } from "./kv-cache.ts";
import type { DTensor, ModelOps, Policy } from "./ops.ts";
import { ropeFreqs } from "./rope.ts";
import { TEXT, type Weights } from "./weights.ts";

export interface PrefillLayerStat {
  readonly layer: number;
  readonly kept: number;
  readonly n: number;
}

export interface PrefillOut {
  /** Hidden states after the final norm of the LAST position: [1, H]. */
  readonly last: DTensor;
  /** All positions after the final norm: [n, H] (only when asked for, e.g. parity). */
  readonly all?: DTensor;
  readonly caches: KvCache[];
  readonly stats: PrefillLayerStat[];
}

const L = (l: number, n: string): string => `${TEXT}layers.${l}.${n}`;

function projections(ops: ModelOps, cfg: TextConfig, w: Weights, l: number, x: DTensor, positions: Int32Array, seqLen: number): { q: DTensor; k: DTensor; v: DTensor } {
  const { invFreq, scale } = ropeFreqs(cfg, seqLen);
  const proj = (name: string, heads: number, rope: boolean): DTensor => {
    const y = ops.linear(x, w.get(L(l, `self_attn.${name}_proj.weight`)), w.maybe(L(l, `self_attn.${name}_proj.bias`)));
    const h = ops.toHeads(y, heads);
    ops.free(y);
    if (!rope) return h;
    const r = ops.rope(h, positions, invFreq, scale);
    ops.free(h);
    return r;
  };
  return { q: proj("q", cfg.numHeads, true), k: proj("k", cfg.numKvHeads, true), v: proj("v", cfg.numKvHeads, false) };
}

/** h + o_proj(o), then h + mlp(norm(h)); frees o. */
function finishLayer(ops: ModelOps, cfg: TextConfig, w: Weights, l: number, h: DTensor, o: DTensor): DTensor {
  const oRows = ops.fromHeads(o);
  const a = ops.linear(oRows, w.get(L(l, "self_attn.o_proj.weight")), w.maybe(L(l, "self_attn.o_proj.bias")));
  const h1 = ops.add(h, a);
  const x = ops.rmsNorm(h1, w.get(L(l, "post_attention_layernorm.weight")), cfg.rmsNormEps);
  const gate = ops.linear(x, w.get(L(l, "mlp.gate_proj.weight")), w.maybe(L(l, "mlp.gate_proj.bias")));
  const up = ops.linear(x, w.get(L(l, "mlp.up_proj.weight")), w.maybe(L(l, "mlp.up_proj.bias")));
  const m = ops.siluMul(gate, up);
  const down = ops.linear(m, w.get(L(l, "mlp.down_proj.weight")), w.maybe(L(l, "mlp.down_proj.bias")));
  const h2 = ops.add(h1, down);
  for (const t of [o, oRows, a, h1, x, gate, up, m, down]) ops.free(t);
  return h2;
}

/** Prefill of n embedded tokens [n, H] at positions 0..n-1. `policy` undefined = dense. Takes ownership of `embeds`. */
/** `onHidden(i, h)`: transformers' hidden_states order: 0 = embeddings, i = after layer i - 1, the last one (i =
 *  layers) after the final norm. `h` is freed after the call returns. */
export type HiddenHook = (index: number, h: DTensor) => void;

export interface PrefillOptions {
  keepAll?: boolean;
  onHidden?: HiddenHook;
  /** Cache rows reserved past each layer's kept prompt rows (the tokens decode will append; default 0: the first
   *  append regrows the cache). */
  reserve?: number;
  /** Builds each layer's cache from its prefill k/v (taking ownership); default the reserved capacity cache. */
  kvCache?: KvCacheFactory;
}

export function prefill(ops: ModelOps, cfg: TextConfig, w: Weights, embeds: DTensor, policy: Policy | undefined, opts: PrefillOptions = {}): PrefillOut {
  const n = embeds.shape[0]!;
  const makeCache = opts.kvCache ?? ((k: DTensor, v: DTensor) => reservedKvCache(ops, k, v, opts.reserve ?? 0));
  const positions = Int32Array.from({ length: n }, (_, i) => i);
  let h = embeds;
  const caches: KvCache[] = [];
  const stats: PrefillLayerStat[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    opts.onHidden?.(l, h);
    const x = ops.rmsNorm(h, w.get(L(l, "input_layernorm.weight")), cfg.rmsNormEps);
    const { q, k, v } = projections(ops, cfg, w, l, x, positions, n);
    ops.free(x);
    let o: DTensor;
    // (With attention_bias, o_proj's bias still reaches unselected tokens: ZipVL zeroes their attention output.)
    if (policy) {
      const r = ops.sparsePrefill(policy, l, q, k, v);
      o = r.o;
      caches.push(makeCache(r.kCache, r.vCache));
      stats.push({ layer: l, kept: r.count, n });
      ops.free(k);
      ops.free(v);
    } else {
      o = ops.attention(q, k, v, true);
      caches.push(makeCache(k, v));
      stats.push({ layer: l, kept: n, n });
    }
    ops.free(q);
    const next = finishLayer(ops, cfg, w, l, h, o);
    ops.free(h);
    h = next;
  }
  const normed = ops.rmsNorm(h, w.get(`${TEXT}norm.weight`), cfg.rmsNormEps);
  ops.free(h);
  opts.onHidden?.(cfg.numLayers, normed);
  const last = ops.sliceRows(normed, n - 1, n);
  if (opts.keepAll) return { last, all: normed, caches, stats };
  ops.free(normed);
  return { last, caches, stats };
}

/** One decode step of token embeddings [1, H] at ORIGINAL position `pos` (prompt length + step), appending to caches. */
export function decodeStep(ops: ModelOps, cfg: TextConfig, w: Weights, embed: DTensor, pos: number, caches: readonly KvCache[]): DTensor {
  const positions = Int32Array.of(pos);
  let h = embed;
  for (let l = 0; l < cfg.numLayers; l++) {
    const x = ops.rmsNorm(h, w.get(L(l, "input_layernorm.weight")), cfg.rmsNormEps);
    const { q, k, v } = projections(ops, cfg, w, l, x, positions, pos + 1);
    const cache = caches[l]!;
    cache.append(k, v);
    const o = cache.attend(q);
    for (const t of [x, q, k, v]) ops.free(t);
    const next = finishLayer(ops, cfg, w, l, h, o);
    if (h !== embed) ops.free(h);
    h = next;
  }
  const normed = ops.rmsNorm(h, w.get(`${TEXT}norm.weight`), cfg.rmsNormEps);
  ops.free(h);
  return normed;
}

export function logits(ops: ModelOps, w: Weights, normed: DTensor): Float32Array {
  const y = ops.linear(normed, w.get("lm_head.weight"));
  const out = ops.toF32(y);
  ops.free(y);
  return out;
}
