// Per-layer K/V caches behind a small interface, so a paged pool (issue 7, serving) can replace the simple one.
// Caches hold RoPE-applied keys head-major, the layout decode attention reads. The model's cache is the backend's
// capacity cache (ModelOps.createKvCache): storage [Hkv, capacity, d] reserved up front for the prompt's kept rows
// plus the new tokens, so a decode step writes one row per head in place and attention reads the cache once.
// concatKvCache, the cache regrown by concatenation, stays as the reference path the tests compare with.
import type { DKvCache, DTensor, ModelOps } from "./ops.ts";

export interface KvCache {
  /** Tokens held (pruned prompt tokens plus generated ones); never a position. */
  readonly len: number;
  /** Rows held before the next append regrows (concatKvCache: always len). */
  readonly capacity: number;
  /** Appends t new tokens, k/v [Hkv, t, d]; the cache takes ownership of nothing (the caller frees its inputs). */
  append(k: DTensor, v: DTensor): void;
  /** Decode attention of q [Hq, t, d] over every cached token (no mask): a new [Hq, t, d] the caller frees. */
  attend(q: DTensor): DTensor;
  /** The cached rows as new tensors [Hkv, len, d] the caller frees (tests, hand-off). */
  rows(): { k: DTensor; v: DTensor };
  free(): void;
}

export type KvCacheFactory = (k: DTensor, v: DTensor) => KvCache;

/** The backend's capacity cache holding the (possibly pruned) prefill K/V [Hkv, len, d] with room for `reserve`
 *  more rows; takes ownership of k and v (copied in, then freed). */
export function reservedKvCache(ops: ModelOps, k: DTensor, v: DTensor, reserve: number): KvCache {
  const [heads, len, d] = k.shape as [number, number, number];
  const cache = ops.createKvCache(heads, d, Math.max(1, len + Math.max(0, reserve)));
  try {
    if (len > 0) ops.appendKv(cache, k, v);
  } catch (e) {
    ops.freeKv(cache);
    throw e;
  } finally {
    ops.free(k);
    ops.free(v);
  }
  return {
    get len() {
      return cache.len;
    },
    get capacity() {
      return cache.capacity;
    },
    append: (kNew, vNew) => ops.appendKv(cache, kNew, vNew),
    attend: (q) => ops.decodeAttentionKv(q, cache),
    rows: () => ops.readKv(cache),
    free: () => ops.freeKv(cache),
  };
}

/** A cache that regrows by concatenation (every append copies the whole cache); starts from the prefill K/V,
 *  taking ownership of them. The reference the capacity cache is tested against. */
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
    get capacity() {
      return kc.shape[1]!;
    },
    append(kNew, vNew) {
      kc = grow(kc, kNew);
      vc = grow(vc, vNew);
    },
    attend: (q) => ops.decodeAttention(q, kc, vc),
    rows: () => ({ k: copyHeads(ops, kc), v: copyHeads(ops, vc) }),
    free() {
      ops.free(kc);
      ops.free(vc);
    },
  };
}

/** A new tensor with the rows of x [H, n, d]. */
function copyHeads(ops: ModelOps, x: DTensor): DTensor {
  const r = ops.fromHeads(x);
  const out = ops.toHeads(r, x.shape[0]!);
  ops.free(r);
  return out;
}

/** The capacity-cache methods of ModelOps built from a backend's tensor ops (k/v regrown by concatenation), for a
 *  backend that has no in-place append yet (webgpu). */
export function concatKvOps(ops: ModelOps, fail: (msg: string) => never): Pick<ModelOps, "createKvCache" | "appendKv" | "decodeAttentionKv" | "readKv" | "freeKv"> {
  interface Held extends DKvCache {
    len: number;
    capacity: number;
    k: DTensor | null;
    v: DTensor | null;
    freed: boolean;
  }
  const H = (c: DKvCache): Held => {
    const h = c as Held;
    if (!("freed" in h)) fail("a KV cache of another backend");
    if (h.freed) fail("a KV cache used after freeKv()");
    return h;
  };
  const cat = (a: DTensor, b: DTensor, heads: number): DTensor => {
    const ra = ops.fromHeads(a);
    const rb = ops.fromHeads(b);
    const both = ops.concatRows([ra, rb]);
    const out = ops.toHeads(both, heads);
    for (const t of [ra, rb, both]) ops.free(t);
    return out;
  };
  return {
    createKvCache(heads, d, capacity) {
      if (!(Number.isInteger(heads) && heads >= 1 && Number.isInteger(d) && d >= 1 && Number.isInteger(capacity) && capacity >= 1)) fail(`a KV cache of ${heads} heads, head dim ${d}, capacity ${capacity}`);
      const h: Held = { heads, d, len: 0, capacity, k: null, v: null, freed: false };
      return h;
    },
    appendKv(cache, k, v) {
      const c = H(cache);
      const [hk, t, dk] = k.shape as [number, number, number];
      if (k.shape.length !== 3 || hk !== c.heads || dk !== c.d || v.shape.join() !== k.shape.join()) fail(`append of k [${k.shape.join(", ")}] v [${v.shape.join(", ")}] to a cache of ${c.heads} heads, head dim ${c.d}`);
      if (t === 0) return;
      const nk = c.k ? cat(c.k, k, c.heads) : copyHeads(ops, k);
      const nv = c.v ? cat(c.v, v, c.heads) : copyHeads(ops, v);
      if (c.k) ops.free(c.k);
      if (c.v) ops.free(c.v);
      c.k = nk;
      c.v = nv;
      c.len += t;
      if (c.len > c.capacity) c.capacity = Math.max(2 * c.capacity, c.len);
    },
    decodeAttentionKv(q, cache) {
      const c = H(cache);
      if (!c.k || !c.v) return fail("decode attention over an empty KV cache");
      return ops.decodeAttention(q, c.k, c.v);
    },
    readKv(cache) {
      const c = H(cache);
      if (!c.k || !c.v) return fail("readKv of an empty KV cache");
      return { k: copyHeads(ops, c.k), v: copyHeads(ops, c.v) };
    },
    freeKv(cache) {
      const c = cache as Held;
      if (c.freed) return;
      c.freed = true;
      if (c.k) ops.free(c.k);
      if (c.v) ops.free(c.v);
      c.k = c.v = null;
    },
  };
}
