// Per-layer K/V caches behind a small interface, so a paged pool (issue 7, serving) can replace the simple one.
// Caches hold RoPE-applied keys in head-major [Hkv, len, d], the layout decodeAttention reads.
import type { DTensor, ModelOps } from "./ops.ts";

export interface KvCache {
  /** Tokens held (pruned prompt tokens plus generated ones); never a position. */
  readonly len: number;
  readonly k: DTensor; // [Hkv, len, d]
  readonly v: DTensor;
  /** Appends t new tokens, k/v [Hkv, t, d]; the cache takes ownership of nothing (the caller frees its inputs). */
  append(k: DTensor, v: DTensor): void;
  free(): void;
}

/** A cache that regrows by concatenation; starts from the (possibly pruned) prefill K/V, taking ownership of them. */
export function concatKvCache(ops: ModelOps, k: DTensor, v: DTensor): KvCache {
  const heads = k.shape[0]!;
  let kc = k;
  let vc = v;
  const grow = (cache: DTensor, x: DTensor): DTensor => {
    const a = ops.fromHeads(cache);
    const b = ops.fromHeads(x);
    const cat = ops.concatRows([a, b]);
    const out = ops.toHeads(cat, heads);
    for (const t of [a, b, cat, cache]) ops.free(t);
    return out;
  };
  return {
    get len() {
      return kc.shape[1]!;
    },
    get k() {
      return kc;
    },
    get v() {
      return vc;
    },
    append(kNew, vNew) {
      kc = grow(kc, kNew);
      vc = grow(vc, vNew);
    },
    free() {
      ops.free(kc);
      ops.free(vc);
    },
  };
}
