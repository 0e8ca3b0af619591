// Paged decode attention on the host: the reference for the CUDA kernel (templates/cuda/include/zv_paged.cuh) and
// the decode attention of the cpu serving engine. Same semantics as the interpreter's decodeAttention
// (SEMANTICS.md step 7: o[h] = softmax(scale * q[h] . K[h/g]) V[h/g], no mask), but the cache of every sequence is
// read through its page table, a batch of sequences with different lengths is one call, and the work is split
// like the kernel: each (sequence, KV head) cache is cut into `splits` slices whose partial (max, sum, output) are
// combined at the end. Accumulation in f64.
import { serveFail } from "./errors.ts";
import { groupsPerLayer, headsPerPage, type PageTables, type PoolGeometry } from "./pool.ts";

export interface PagedDecodeInput {
  readonly geometry: PoolGeometry;
  readonly k: Float32Array; // page rows (HostPageStorage.k)
  readonly v: Float32Array;
  readonly tables: PageTables;
  /** [batch, Hq, d] query rows (RoPE applied). */
  readonly q: Float32Array | Float64Array;
  readonly Hq: number;
  readonly scale: number;
  /** Slices per (sequence, KV head); 1 = plain softmax. */
  readonly splits?: number;
}

/** Row index of token j of group `grp` of batch entry b, KV head kv. */
export function pagedRow(g: PoolGeometry, t: PageTables, b: number, kv: number, j: number): number {
  const grp = g.layout === "per-layer" ? 0 : kv;
  const slot = g.layout === "per-layer" ? kv : 0;
  const page = t.pages[t.indptr[b * t.groups + grp]! + Math.floor(j / g.pageTokens)]!;
  return (page * headsPerPage(g) + slot) * g.pageTokens + (j % g.pageTokens);
}

export function checkPagedInput(x: PagedDecodeInput): void {
  const { geometry: g, tables: t, Hq } = x;
  if (!Number.isInteger(Hq) || Hq < 1 || Hq % g.kvHeads !== 0) serveFail("ZV7005", [`query heads ${Hq} must be a positive multiple of KV heads ${g.kvHeads}`]);
  if (t.groups !== groupsPerLayer(g)) serveFail("ZV7005", [`page tables have ${t.groups} group(s), the ${g.layout} layout has ${groupsPerLayer(g)}`]);
  if (x.q.length !== t.batch * Hq * g.headDim) serveFail("ZV7005", [`q has ${x.q.length} values, expected [${t.batch}, ${Hq}, ${g.headDim}]`]);
  for (let e = 0; e < t.batch * t.groups; e++) {
    const have = t.indptr[e + 1]! - t.indptr[e]!;
    if (Math.ceil(t.lengths[e]! / g.pageTokens) > have) serveFail("ZV7005", [`entry ${e} holds ${t.lengths[e]} tokens in ${have} page(s) of ${g.pageTokens}`]);
  }
}

export function pagedDecodeReference(x: PagedDecodeInput): Float64Array {
  checkPagedInput(x);
  const { geometry: g, tables: t, Hq, q, scale } = x;
  const d = g.headDim;
  const gq = Hq / g.kvHeads;
  const splits = Math.max(1, x.splits ?? 1);
  const o = new Float64Array(t.batch * Hq * d);
  const po = new Float64Array(splits * d);
  const pm = new Float64Array(splits);
  const pl = new Float64Array(splits);
  for (let b = 0; b < t.batch; b++) {
    for (let h = 0; h < Hq; h++) {
      const kv = Math.floor(h / gq);
      const len = t.lengths[b * t.groups + (t.groups === 1 ? 0 : kv)]!;
      const chunk = Math.ceil(len / splits);
      const qo = (b * Hq + h) * d;
      po.fill(0);
      for (let s = 0; s < splits; s++) {
        const lo = Math.min(len, s * chunk);
        const hi = Math.min(len, lo + chunk);
        let m = -Infinity;
        let l = 0;
        for (let j = lo; j < hi; j++) {
          const r = pagedRow(g, t, b, kv, j) * d;
          let dot = 0;
          for (let e = 0; e < d; e++) dot += q[qo + e]! * x.k[r + e]!;
          const sc = dot * scale;
          const nm = Math.max(m, sc);
          const corr = Math.exp(m - nm);
          const p = Math.exp(sc - nm);
          l = l * corr + p;
          for (let e = 0; e < d; e++) po[s * d + e] = po[s * d + e]! * corr + p * x.v[r + e]!;
          m = nm;
        }
        pm[s] = m;
        pl[s] = l;
      }
      // Combine: o = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s; an empty cache gives a zero row.
      let M = -Infinity;
      for (let s = 0; s < splits; s++) M = Math.max(M, pm[s]!);
      if (M === -Infinity) continue;
      let L = 0;
      for (let s = 0; s < splits; s++) L += pl[s]! * Math.exp(pm[s]! - M);
      for (let s = 0; s < splits; s++) {
        const w = Math.exp(pm[s]! - M) / L;
        if (w === 0) continue;
        for (let e = 0; e < d; e++) o[qo + e]! += w * po[s * d + e]!;
      }
    }
  }
  return o;
}
