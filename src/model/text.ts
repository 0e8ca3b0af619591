// The LLaMA decoder of LLaVA: embeddings, per-layer attention with RoPE on ORIGINAL positions (GQA), SiLU MLP,
// final RMSNorm and lm_head. Prefill runs each layer dense (ops.attention, full cache) or through a policy program
// (ops.sparsePrefill: the o rows of unselected tokens are zero, so those tokens only keep their residual, and the
// cache holds only the selected tokens). Decode appends to each layer's cache and attends to all of it. Caches are
// the backend's capacity caches with `reserve` rows past the prompt (the new tokens), so decode appends in place.
import type { TextConfig } from "./config.ts";
import { reservedKvCache, type KvCache, type KvCacheFactory } from "./kv-cache.ts";
import { linearAdd, normGatedUp, normProject } from "./fused.ts";
import type { DTensor, KvSink, ModelOps, Policy, Projection } from "./ops.ts";
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

/** h + o_proj(o), then h + mlp(norm(h)); frees o (head-major [Hq, n, d]). The fused forms (src/model/fused.ts) let a
 *  backend fold the norm, the residual adds and silu * up into the projections for decode's few rows. */
function finishLayer(ops: ModelOps, cfg: TextConfig, w: Weights, l: number, h: DTensor, o: DTensor): DTensor {
  let h1: DTensor;
  try {
    h1 = linearAdd(ops, o, w.get(L(l, "self_attn.o_proj.weight")), w.maybe(L(l, "self_attn.o_proj.bias")), h);
  } finally {
    ops.free(o);
  }
  try {
    const norm = { w: w.get(L(l, "post_attention_layernorm.weight")), eps: cfg.rmsNormEps };
    const m = normGatedUp(ops, h1, norm, { w: w.get(L(l, "mlp.gate_proj.weight")), bias: w.maybe(L(l, "mlp.gate_proj.bias")) }, { w: w.get(L(l, "mlp.up_proj.weight")), bias: w.maybe(L(l, "mlp.up_proj.bias")) });
    try {
      return linearAdd(ops, m, w.get(L(l, "mlp.down_proj.weight")), w.maybe(L(l, "mlp.down_proj.bias")), h1);
    } finally {
      ops.free(m);
    }
  } finally {
    ops.free(h1);
  }
}

/** Attention of layer l: gets q, k, v (RoPE applied, head-major) and returns o [Hq, n, d]. It owns k and v (frees
 *  them or hands them to a cache); the layer frees q. `sink(l)`, where given, names the cache rows the q/k/v
 *  projection may write k and v to directly; `appended` then says whether it did. */
export type LayerAttention = ((l: number, q: DTensor, k: DTensor, v: DTensor, appended?: boolean) => DTensor) & { sink?: (l: number) => KvSink | undefined };

/** One decoder layer on h [n, H] at `positions`: norm, q/k/v with RoPE, `attend`, o_proj and the MLP (both with their
 *  residual). Returns the new hidden states; h stays the caller's. */
export function decoderLayer(ops: ModelOps, cfg: TextConfig, w: Weights, l: number, h: DTensor, positions: Int32Array, seqLen: number, attend: LayerAttention): DTensor {
  const { invFreq, scale } = ropeFreqs(cfg, seqLen);
  const proj = (name: string, heads: number, rope: boolean): Projection => ({ w: w.get(L(l, `self_attn.${name}_proj.weight`)), bias: w.maybe(L(l, `self_attn.${name}_proj.bias`)), heads, rope });
  const norm = { w: w.get(L(l, "input_layernorm.weight")), eps: cfg.rmsNormEps };
  const sink = attend.sink?.(l);
  const [q, k, v] = normProject(ops, h, norm, [proj("q", cfg.numHeads, true), proj("k", cfg.numKvHeads, true), proj("v", cfg.numKvHeads, false)], { positions, invFreq, scale }, sink) as [DTensor, DTensor, DTensor];
  let o: DTensor;
  try {
    o = attend(l, q, k, v, sink?.written === true);
  } finally {
    ops.free(q);
  }
  return finishLayer(ops, cfg, w, l, h, o);
}

/** Every decoder layer over h (taken over and freed unless `keep`); returns the last layer's output (not normed).
 *  `onHidden(l, h)` sees the input of layer l. */
export function decoderLayers(ops: ModelOps, cfg: TextConfig, w: Weights, h0: DTensor, positions: Int32Array, seqLen: number, attend: LayerAttention, opts: { keep?: boolean; onHidden?: HiddenHook } = {}): DTensor {
  let h = h0;
  try {
    for (let l = 0; l < cfg.numLayers; l++) {
      opts.onHidden?.(l, h);
      const next = decoderLayer(ops, cfg, w, l, h, positions, seqLen, attend);
      if (h !== h0 || !opts.keep) ops.free(h);
      h = next;
    }
    return h;
  } catch (e) {
    if (h !== h0 || !opts.keep) ops.free(h);
    throw e;
  }
}

/** The final RMSNorm of the text model. */
export function finalNorm(ops: ModelOps, cfg: TextConfig, w: Weights, h: DTensor): DTensor {
  return ops.rmsNorm(h, w.get(`${TEXT}norm.weight`), cfg.rmsNormEps);
}

/** lm_head(finalNorm(h)) as one projection with a norm: a backend may fuse the norm into the lm_head launch (decode's
 *  few rows on cuda); else the composition. Logits [n, V], a new tensor. */
export function normedLogits(ops: ModelOps, cfg: TextConfig, w: Weights, h: DTensor): DTensor {
  return normProject(ops, h, { w: w.get(`${TEXT}norm.weight`), eps: cfg.rmsNormEps }, [{ w: w.get("lm_head.weight"), heads: 0, rope: false }], undefined)[0]!;
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

/** Attention of one prefill layer: dense (policy undefined) or the policy's sparse prefill; `keep(l, k, v, count)`
 *  receives the layer's kept K/V (taking ownership). Shared by text prefill and the serving engine. */
export function prefillAttention(ops: ModelOps, policy: Policy | undefined, keep: (l: number, k: DTensor, v: DTensor, count: number) => void): LayerAttention {
  return (l, q, k, v) => {
    if (!policy) {
      let o: DTensor;
      try {
        o = ops.attention(q, k, v, true);
      } catch (e) {
        ops.free(k);
        ops.free(v);
        throw e;
      }
      try {
        keep(l, k, v, k.shape[1]!);
      } catch (e) {
        ops.free(o);
        throw e;
      }
      return o;
    }
    // (With attention_bias, o_proj's bias still reaches unselected tokens: ZipVL zeroes their attention output.)
    let r;
    try {
      r = ops.sparsePrefill(policy, l, q, k, v);
    } finally {
      ops.free(k);
      ops.free(v);
    }
    try {
      keep(l, r.kCache, r.vCache, r.count);
    } catch (e) {
      ops.free(r.o);
      throw e;
    }
    return r.o;
  };
}

export function prefill(ops: ModelOps, cfg: TextConfig, w: Weights, embeds: DTensor, policy: Policy | undefined, opts: PrefillOptions = {}): PrefillOut {
  const n = embeds.shape[0]!;
  const makeCache = opts.kvCache ?? ((k: DTensor, v: DTensor) => reservedKvCache(ops, k, v, opts.reserve ?? 0));
  const positions = Int32Array.from({ length: n }, (_, i) => i);
  const caches: KvCache[] = [];
  const stats: PrefillLayerStat[] = [];
  const attend = prefillAttention(ops, policy, (l, k, v, kept) => {
    caches.push(makeCache(k, v));
    stats.push({ layer: l, kept, n });
  });
  const h = decoderLayers(ops, cfg, w, embeds, positions, n, attend, opts.onHidden ? { onHidden: opts.onHidden } : {});
  const normed = finalNorm(ops, cfg, w, h);
  ops.free(h);
  opts.onHidden?.(cfg.numLayers, normed);
  const last = ops.sliceRows(normed, n - 1, n);
  if (opts.keepAll) return { last, all: normed, caches, stats };
  ops.free(normed);
  return { last, caches, stats };
}

/** One decode step of token embeddings [1, H] at ORIGINAL position `pos` (prompt length + step), appending to caches. */
export function decodeStep(ops: ModelOps, cfg: TextConfig, w: Weights, embed: DTensor, pos: number, caches: readonly KvCache[]): DTensor {
  const h = decoderLayers(ops, cfg, w, embed, Int32Array.of(pos), pos + 1, (l, q, k, v) => {
    const cache = caches[l]!;
    try {
      cache.append(k, v);
    } finally {
      ops.free(k);
      ops.free(v);
    }
    return cache.attend(q);
  }, { keep: true });
  const normed = finalNorm(ops, cfg, w, h);
  ops.free(h);
  return normed;
}

export function logits(ops: ModelOps, w: Weights, normed: DTensor): Float32Array {
  const y = ops.linear(normed, w.get("lm_head.weight"));
  const out = ops.toF32(y);
  ops.free(y);
  return out;
}
