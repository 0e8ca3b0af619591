// The paged KV pool: fixed-size pages of K and V rows, a free list, and per-sequence per-layer page tables with
// ragged lengths (ZipVL keeps a different number of tokens in every layer; a per-KV-head policy even per head).
//
// Geometry. A page holds `pageTokens` tokens of `headsPerPage` KV heads, K and V: layout "per-layer" puts all Hkv
// heads of a token in one page (one length per layer), "per-head" gives every (layer, KV head) its own pages and
// its own length. Storage is one array of rows for K and one for V; row r starts at element r * headDim and
//   r = (page * headsPerPage + headSlot) * pageTokens + offset,   headSlot = kv (per-layer) or 0 (per-head).
// The storage (host Float32Array here, device memory in src/backends/cuda/paged.ts) only moves rows; this class
// owns all bookkeeping, so accounting is exact and identical on every backend.
import { serveFail } from "./errors.ts";

export type PageLayout = "per-layer" | "per-head";

export interface PoolGeometry {
  readonly layers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly pageTokens: number;
  readonly layout: PageLayout;
  readonly numPages: number;
  /** Bytes of one stored element (f32 4, f16/bf16 2). */
  readonly elemBytes: number;
}

/** Moves rows in and out of page memory (row indices as in the header). */
export interface PageStorage {
  readonly kind: "host" | "cuda";
  /** k and v rows [rows.length, headDim] (f32 on the host side) to the given row indices. */
  writeRows(rows: Int32Array, k: Float32Array, v: Float32Array): void;
  dispose(): void;
}

/** One (batch entry, group) table in CSR form, what the paged kernels read (uploaded as i32). */
export interface PageTables {
  readonly batch: number;
  /** groups per sequence: 1 (per-layer) or Hkv (per-head). */
  readonly groups: number;
  readonly indptr: Int32Array; // [batch * groups + 1]
  readonly pages: Int32Array; // [indptr[last]]
  readonly lengths: Int32Array; // [batch * groups]
}

interface SeqState {
  /** pages[layer][group] and lengths[layer][group]. */
  readonly pages: number[][][];
  readonly lengths: number[][];
  reserved: number;
}

export function headsPerPage(g: PoolGeometry): number {
  return g.layout === "per-layer" ? g.kvHeads : 1;
}
export function groupsPerLayer(g: PoolGeometry): number {
  return g.layout === "per-layer" ? 1 : g.kvHeads;
}
/** Bytes of one page (K and V). */
export function pageBytes(g: PoolGeometry): number {
  return 2 * headsPerPage(g) * g.pageTokens * g.headDim * g.elemBytes;
}

export function checkGeometry(g: PoolGeometry): void {
  for (const key of ["layers", "kvHeads", "headDim", "pageTokens", "numPages", "elemBytes"] as const) {
    const x = g[key];
    if (!Number.isSafeInteger(x) || x < 1) serveFail("ZV7001", [`${key} must be a positive integer, got ${x}`]);
  }
  if (g.layout !== "per-layer" && g.layout !== "per-head") serveFail("ZV7001", [`layout must be per-layer or per-head, got '${String(g.layout)}'`]);
  // Row indices travel as i32 to the kernels.
  const rows = g.numPages * headsPerPage(g) * g.pageTokens;
  if (rows > 2 ** 31 - 1) serveFail("ZV7001", [`${rows} rows exceed the i32 row index range; use fewer or smaller pages`]);
}

export class PagedKvPool {
  readonly geometry: PoolGeometry;
  private readonly free: number[];
  private readonly seqs = new Map<string, SeqState>();
  private reservedTotal = 0;
  private epochN = 0;

  constructor(geometry: PoolGeometry, readonly storage: PageStorage) {
    checkGeometry(geometry);
    this.geometry = geometry;
    // LIFO free list: the most recently freed (likely cached) pages are reused first.
    this.free = Array.from({ length: geometry.numPages }, (_, i) => geometry.numPages - 1 - i);
  }

  get pageBytes(): number {
    return pageBytes(this.geometry);
  }
  get freePages(): number {
    return this.free.length;
  }
  get usedPages(): number {
    return this.geometry.numPages - this.free.length;
  }
  /** Free pages not promised to a live sequence's future decode tokens. */
  get availablePages(): number {
    return this.free.length - this.reservedTotal;
  }
  get usedBytes(): number {
    return this.usedPages * this.pageBytes;
  }
  get freeBytes(): number {
    return this.freePages * this.pageBytes;
  }
  get sequences(): readonly string[] {
    return [...this.seqs.keys()];
  }
  has(id: string): boolean {
    return this.seqs.has(id);
  }

  /** Pages a group of `tokens` tokens occupies. */
  pagesFor(tokens: number): number {
    return Math.ceil(tokens / this.geometry.pageTokens);
  }

  /** Changes when a sequence is added or released (cached page tables of a batch must be rebuilt). */
  get epoch(): number {
    return this.epochN;
  }

  addSequence(id: string): void {
    if (this.seqs.has(id)) serveFail("ZV7004", [`sequence ${id} already exists`]);
    this.epochN++;
    const { layers } = this.geometry;
    const G = groupsPerLayer(this.geometry);
    this.seqs.set(id, {
      pages: Array.from({ length: layers }, () => Array.from({ length: G }, () => [])),
      lengths: Array.from({ length: layers }, () => new Array<number>(G).fill(0)),
      reserved: 0,
    });
  }

  private seq(id: string): SeqState {
    return this.seqs.get(id) ?? serveFail("ZV7003", [id]);
  }

  /** Token counts of one layer, one per group. */
  lengths(id: string, layer: number): readonly number[] {
    return this.seq(id).lengths[layer] ?? serveFail("ZV7004", [`layer ${layer} of ${this.geometry.layers}`]);
  }
  /** Page ids of one group of one layer, in token order (the pool's own list: read only). */
  pageIds(id: string, layer: number, group: number): readonly number[] {
    return this.seq(id).pages[layer]?.[group] ?? serveFail("ZV7004", [`layer ${layer} group ${group}`]);
  }
  pagesOf(id: string): number {
    let n = 0;
    for (const l of this.seq(id).pages) for (const g of l) n += g.length;
    return n;
  }
  reservedOf(id: string): number {
    return this.seq(id).reserved;
  }

  /** New pages needed to grow each group of a layer by `add[group]` tokens. */
  growthPages(id: string, layer: number, add: readonly number[]): number {
    const lens = this.lengths(id, layer);
    let need = 0;
    for (let grp = 0; grp < lens.length; grp++) need += this.pagesFor(lens[grp]! + (add[grp] ?? 0)) - this.pagesFor(lens[grp]!);
    return need;
  }

  /** Sets a sequence's reservation to `pages` (future growth that admission must not hand out twice). */
  reserve(id: string, pages: number): void {
    const s = this.seq(id);
    const delta = pages - s.reserved;
    if (delta > this.availablePages) serveFail("ZV7002", [`reserving ${pages} pages for ${id} needs ${delta} more, ${this.availablePages} available`]);
    s.reserved = pages;
    this.reservedTotal += delta;
  }

  /**
   * Allocates the rows for `add[group]` new tokens of every group of one layer and returns their row indices
   * [Hkv, stride] (stride defaults to max add; -1 past a group's count). All-or-nothing: on ZV7002 nothing changed.
   */
  reserveRows(id: string, layer: number, add: readonly number[], stride = Math.max(0, ...add)): Int32Array {
    const s = this.seq(id);
    const g = this.geometry;
    const G = groupsPerLayer(g);
    if (add.length !== G) serveFail("ZV7004", [`${add.length} counts for ${G} group(s) of layer ${layer}`]);
    for (const a of add) if (!Number.isSafeInteger(a) || a < 0) serveFail("ZV7004", [`token count ${a} is not a non-negative integer`]);
    const t = stride;
    if (Math.max(0, ...add) > t) serveFail("ZV7004", [`counts ${add.join(",")} exceed the row stride ${t}`]);
    this.claimPages(s, id, layer, this.growthPages(id, layer, add));
    const rows = new Int32Array(g.kvHeads * t).fill(-1);
    const lens = s.lengths[layer]!;
    const pages = s.pages[layer]!;
    for (let grp = 0; grp < G; grp++) {
      const list = pages[grp]!;
      const start = lens[grp]!;
      while (list.length < this.pagesFor(start + add[grp]!)) list.push(this.free.pop()!);
      for (let i = 0; i < add[grp]!; i++) this.putRows(rows, t, i, grp, list, start + i);
      lens[grp] = start + add[grp]!;
    }
    return rows;
  }

  /** New pages one more token in every group of every layer takes (a decode step's growth). */
  stepGrowth(id: string): number {
    const s = this.seq(id);
    let need = 0;
    for (let l = 0; l < s.lengths.length; l++) need += this.oneTokenGrowth(s, l);
    return need;
  }

  /**
   * One new token in every group of one layer, what a decode step appends: reserveRows(id, layer, [1, ...], 1)
   * (same pages, rows and reservation accounting, all-or-nothing) without its allocations; the row of KV head kv
   * goes to out[kv * stride + col].
   */
  reserveOne(id: string, layer: number, out: Int32Array, col: number, stride: number): void {
    const s = this.seq(id);
    const P = this.geometry.pageTokens;
    const lens = s.lengths[layer] ?? serveFail("ZV7004", [`layer ${layer} of ${this.geometry.layers}`]);
    const pages = s.pages[layer]!;
    this.claimPages(s, id, layer, this.oneTokenGrowth(s, layer));
    for (let grp = 0; grp < lens.length; grp++) {
      const list = pages[grp]!;
      const pos = lens[grp]!;
      if (list.length * P <= pos) list.push(this.free.pop()!);
      this.putRows(out, stride, col, grp, list, pos);
      lens[grp] = pos + 1;
    }
  }

  /** New pages one more token in every group of one layer takes. */
  private oneTokenGrowth(s: SeqState, layer: number): number {
    const P = this.geometry.pageTokens;
    const lens = s.lengths[layer]!, pages = s.pages[layer]!;
    let need = 0;
    for (let grp = 0; grp < lens.length; grp++) if (pages[grp]!.length * P <= lens[grp]!) need++;
    return need;
  }

  /** Accounts `need` new pages of a sequence: its own reservation first, the rest from unreserved pages; ZV7002
   *  (nothing changed) when they are not there. */
  private claimPages(s: SeqState, id: string, layer: number, need: number): void {
    const fromReserve = Math.min(need, s.reserved);
    if (need - fromReserve > this.availablePages) {
      serveFail("ZV7002", [`sequence ${id} layer ${layer} needs ${need} page(s), ${this.availablePages + fromReserve} available (${this.free.length} free, ${this.reservedTotal} reserved)`]);
    }
    s.reserved -= fromReserve;
    this.reservedTotal -= fromReserve;
  }

  /** The rows of token `pos` of group `grp` (page list `list`) into out[kv * stride + col]: per-layer, one group whose
   *  pages give every KV head its slot; per-head, group = KV head, slot 0. */
  private putRows(out: Int32Array, stride: number, col: number, grp: number, list: readonly number[], pos: number): void {
    const g = this.geometry;
    const P = g.pageTokens;
    const page = list[Math.floor(pos / P)]!;
    if (g.layout === "per-layer") for (let h = 0; h < g.kvHeads; h++) out[h * stride + col] = (page * g.kvHeads + h) * P + (pos % P);
    else out[grp * stride + col] = page * P + (pos % P);
  }

  /**
   * Appends K/V rows [Hkv, t, d] (f32) to one layer; `counts` (per-head layout only) keeps the first counts[kv]
   * rows of each head (ragged per-head selection), otherwise all t rows.
   */
  append(id: string, layer: number, k: Float32Array, v: Float32Array, t: number, counts?: readonly number[]): void {
    const g = this.geometry;
    const d = g.headDim;
    if (k.length !== g.kvHeads * t * d || v.length !== k.length) serveFail("ZV7004", [`K/V of ${k.length}/${v.length} values for [${g.kvHeads}, ${t}, ${d}]`]);
    const G = groupsPerLayer(g);
    if (counts && G === 1 && counts.some((c) => c !== counts[0])) serveFail("ZV7004", ["ragged per-head counts need the per-head page layout"]);
    const add = counts ? (G === 1 ? [counts[0]!] : [...counts]) : new Array<number>(G).fill(t);
    for (const a of add) if (a > t) serveFail("ZV7004", [`count ${a} exceeds the ${t} rows given`]);
    const rows = this.reserveRows(id, layer, add, t);
    const idx: number[] = [];
    const src: number[] = [];
    for (let j = 0; j < rows.length; j++) if (rows[j]! >= 0) idx.push(rows[j]!), src.push(j);
    const kk = new Float32Array(idx.length * d);
    const vv = new Float32Array(idx.length * d);
    src.forEach((j, r) => {
      kk.set(k.subarray(j * d, (j + 1) * d), r * d);
      vv.set(v.subarray(j * d, (j + 1) * d), r * d);
    });
    this.storage.writeRows(Int32Array.from(idx), kk, vv);
  }

  /** Returns every page (and the reservation) of a sequence to the pool. */
  release(id: string): void {
    const s = this.seqs.get(id);
    if (!s) return;
    this.epochN++;
    for (const l of s.pages) for (const grp of l) for (const p of grp.splice(0).reverse()) this.free.push(p);
    this.reservedTotal -= s.reserved;
    this.seqs.delete(id);
  }

  /** CSR page tables of one layer for a batch of sequences (the paged kernels' input). */
  tables(ids: readonly string[], layer: number): PageTables {
    const G = groupsPerLayer(this.geometry);
    const indptr = new Int32Array(ids.length * G + 1);
    const lengths = new Int32Array(ids.length * G);
    const pages: number[] = [];
    ids.forEach((id, b) => {
      const s = this.seq(id);
      for (let grp = 0; grp < G; grp++) {
        const list = s.pages[layer]![grp]!;
        for (const p of list) pages.push(p);
        lengths[b * G + grp] = s.lengths[layer]![grp]!;
        indptr[b * G + grp + 1] = pages.length;
      }
    });
    return { batch: ids.length, groups: G, indptr, pages: Int32Array.from(pages), lengths };
  }

  dispose(): void {
    this.storage.dispose();
  }
}

/** Page memory on the host: two Float32Arrays of rows. */
export class HostPageStorage implements PageStorage {
  readonly kind = "host";
  readonly k: Float32Array;
  readonly v: Float32Array;
  constructor(readonly geometry: PoolGeometry) {
    checkGeometry(geometry);
    const n = geometry.numPages * headsPerPage(geometry) * geometry.pageTokens * geometry.headDim;
    this.k = new Float32Array(n);
    this.v = new Float32Array(n);
  }
  writeRows(rows: Int32Array, k: Float32Array, v: Float32Array): void {
    const d = this.geometry.headDim;
    for (let r = 0; r < rows.length; r++) {
      this.k.set(k.subarray(r * d, (r + 1) * d), rows[r]! * d);
      this.v.set(v.subarray(r * d, (r + 1) * d), rows[r]! * d);
    }
  }
  dispose(): void {}
}

export function createHostPool(g: Omit<PoolGeometry, "elemBytes"> & { elemBytes?: number }): PagedKvPool & { storage: HostPageStorage } {
  const geom = { ...g, elemBytes: g.elemBytes ?? 4 };
  return new PagedKvPool(geom, new HostPageStorage(geom)) as PagedKvPool & { storage: HostPageStorage };
}
