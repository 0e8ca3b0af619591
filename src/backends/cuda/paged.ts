// The paged-KV serving kernels on the GPU: rendering of templates/cuda/paged.cu.hbs, page memory in device buffers
// (the CUDA PageStorage of src/serve/pool.ts), and the batched paged decode attention launcher (split + combine,
// one launch pair for a whole ragged batch). Page tables travel as i32 (CSR: indptr, page ids, lengths).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import Handlebars from "handlebars";
import { bf16BitsToFloat, f16BitsToFloat, floatToBf16Bits, floatToF16Bits } from "../../io/dtype.ts";
import { packArgs, type ArgField, type CudaDevice, type CudaFunction, type CudaStream, type DeviceBuffer } from "../../runtime/native.ts";
import { knobs } from "../../knobs.ts";
import { serveFail } from "../../serve/errors.ts";
import { checkGeometry, groupsPerLayer, headsPerPage, type PageStorage, type PageTables, type PoolGeometry } from "../../serve/pool.ts";
import { compileKernel, type Arch, type NvrtcFn } from "./compile.ts";
import { C_TYPE, TEMPLATE_DIR, type CudaDType, type KernelSource } from "./render.ts";
import { ESIZE } from "./model-pool.ts";

/** Field order of ZvPagedDecodeArgs / ZvPagedAppendArgs in zv_paged.cuh (8 bytes each). */
export const PAGED_ARG_LAYOUTS = {
  ZvPagedDecodeArgs: ["q", "k_pages", "v_pages", "o", "part_o", "part_ml", "page_indptr", "page_ids", "lengths", "batch", "Hq", "Hkv", "d", "page_tokens", "heads_per_page", "groups", "splits", "q_stride_b", "q_stride_h", "o_stride_b", "o_stride_h", "scale", "counters", "fresh"],
  ZvPagedAppendArgs: ["k", "v", "k_pages", "v_pages", "rows", "Hkv", "t", "d", "src_stride"],
} as const;

type Layout = keyof typeof PAGED_ARG_LAYOUTS;
export function packPaged<S extends Layout>(s: S, values: Record<(typeof PAGED_ARG_LAYOUTS)[S][number], ArgField>): ArrayBuffer {
  return packArgs(PAGED_ARG_LAYOUTS[s].map((f) => (values as Record<string, ArgField>)[f]!));
}

const i64 = (v: number): { i64: number } => ({ i64: v });

let tpl: Handlebars.TemplateDelegate | undefined;
export function pagedKernelName(dtype: CudaDType, headDim: number): string {
  return `zv_paged_${dtype}_d${headDim}`;
}

/** Source of the paged kernels for one dtype and head dim (entries _split, _split_g1, _split_g2, _combine, _append). */
export function renderPaged(dtype: CudaDType, headDim: number, config: { warps?: number } = {}): KernelSource {
  if (!Number.isInteger(headDim) || headDim < 1 || (headDim * ESIZE[dtype]) % 16 !== 0) {
    serveFail("ZV7005", [`head dim ${headDim} is not a multiple of 16 bytes of ${dtype}`]);
  }
  tpl ??= Handlebars.compile(readFileSync(join(TEMPLATE_DIR, "paged.cu.hbs"), "utf8"), { noEscape: true, strict: false });
  const name = pagedKernelName(dtype, headDim);
  // `stage` only labels the source for the shared compile cache; the paged kernels are decode kernels.
  return { stage: "decode", name, source: tpl({ kernelName: name, dtype: C_TYPE[dtype], headDim, config }), dtype, headDim, config };
}

/** Split count of a batch: whole waves of CTAs (`slots` = CTAs the SMs hold at once), k of them with k = the
 *  longest cache over one wave's worth of `tokens`-token slices (knobs.pagedSplitTokens, 256), at most `waves`
 *  (knobs.pagedWaves, 4); caches shorter than one such wave take `short` waves (knobs.pagedShortWaves, 1); no
 *  slice shorter than 64 tokens. A last wave only partly filled runs its few CTAs alone at
 *  the end (measured on the H100: 1.2 waves 7% slower a step than 0.6 or 2.4); long caches want short slices. */
export function pagedSplits(slots: number, Hkv: number, batch: number, maxLen: number, waves = knobs.pagedWaves, tokens = knobs.pagedSplitTokens, short = knobs.pagedShortWaves): number {
  const rows = Hkv * batch;
  const perWave = slots / rows;
  const kf = Math.floor(maxLen / (tokens * Math.max(1, perWave)));
  const k = Math.min(waves, kf >= 1 ? kf : short);
  const fill = Math.floor((k * slots) / rows);
  return Math.max(1, Math.min(fill, Math.ceil(maxLen / 64)));
}

export interface PagedKernels {
  /** Any group size; splitG1 / splitG2: the same for Hq / Hkv = 1 / 2 (fewer registers). */
  readonly split: CudaFunction;
  readonly splitG1: CudaFunction;
  readonly splitG2: CudaFunction;
  readonly combine: CudaFunction;
  readonly append: CudaFunction;
  readonly dtype: CudaDType;
  readonly headDim: number;
  readonly warps: number;
}

const loaded = new WeakMap<CudaDevice, Map<string, PagedKernels>>();

/** Compiles (or takes from the kernel cache) and loads the paged kernels once per device, dtype and head dim. */
export function loadPagedKernels(dev: CudaDevice, arch: Arch, dtype: CudaDType, headDim: number, nvrtc?: { version: string; compile: NvrtcFn }): PagedKernels {
  let perDev = loaded.get(dev);
  if (!perDev) loaded.set(dev, (perDev = new Map()));
  const k = renderPaged(dtype, headDim);
  const hit = perDev.get(k.name);
  if (hit) return hit;
  const mod = dev.loadModule(compileKernel(k, arch, nvrtc).cubin);
  const fn = (s: string): CudaFunction => mod.getFunction(`${k.name}_${s}`);
  const out = { split: fn("split"), splitG1: fn("split_g1"), splitG2: fn("split_g2"), combine: fn("combine"), append: fn("append"), dtype, headDim, warps: 4 };
  perDev.set(k.name, out);
  return out;
}

/** Host f32 rows to the device dtype's bytes. */
export function encodeRows(x: Float32Array, dtype: CudaDType): Uint8Array {
  if (dtype === "f32") return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  const enc = dtype === "bf16" ? floatToBf16Bits : floatToF16Bits;
  const u = Uint16Array.from(x, enc);
  return new Uint8Array(u.buffer, u.byteOffset, u.byteLength);
}
export function decodeRows(bytes: Uint8Array, dtype: CudaDType): Float32Array {
  if (dtype === "f32") return new Float32Array(bytes.slice().buffer);
  const u = new Uint16Array(bytes.slice().buffer);
  return Float32Array.from(u, dtype === "bf16" ? bf16BitsToFloat : f16BitsToFloat);
}

/** Page memory in device buffers; host writes coalesce runs of consecutive rows into one copy. */
export class CudaPageStorage implements PageStorage {
  readonly kind = "cuda";
  readonly k: DeviceBuffer;
  readonly v: DeviceBuffer;
  constructor(private readonly dev: CudaDevice, readonly geometry: PoolGeometry, readonly dtype: CudaDType) {
    checkGeometry(geometry);
    if (ESIZE[dtype] !== geometry.elemBytes) serveFail("ZV7001", [`dtype ${dtype} in a pool of ${geometry.elemBytes}-byte elements`]);
    const bytes = geometry.numPages * headsPerPage(geometry) * geometry.pageTokens * geometry.headDim * geometry.elemBytes;
    this.k = dev.alloc(bytes);
    try {
      this.v = dev.alloc(bytes);
    } catch (e) {
      this.k.free();
      throw e;
    }
  }
  writeRows(rows: Int32Array, k: Float32Array, v: Float32Array, stream?: CudaStream | null): void {
    const d = this.geometry.headDim;
    const rowBytes = d * this.geometry.elemBytes;
    const kb = encodeRows(k, this.dtype);
    const vb = encodeRows(v, this.dtype);
    for (let r = 0; r < rows.length; ) {
      let e = r + 1;
      while (e < rows.length && rows[e] === rows[e - 1]! + 1) e++;
      this.k.write(kb.subarray(r * rowBytes, e * rowBytes), rows[r]! * rowBytes, stream);
      this.v.write(vb.subarray(r * rowBytes, e * rowBytes), rows[r]! * rowBytes, stream);
      r = e;
    }
  }
  /** Device-side append: source rows [Hkv, t, d] (head stride srcStride rows) in the pool's dtype. */
  appendDevice(kernels: PagedKernels, src: { k: DeviceBuffer | bigint; v: DeviceBuffer | bigint; t: number; srcStride?: number }, rows: DeviceBuffer | bigint, stream?: CudaStream | null): void {
    const g = this.geometry;
    if (src.t === 0) return;
    const args = packPaged("ZvPagedAppendArgs", { k: src.k, v: src.v, k_pages: this.k, v_pages: this.v, rows, Hkv: i64(g.kvHeads), t: i64(src.t), d: i64(g.headDim), src_stride: i64(src.srcStride ?? src.t) });
    this.dev.launch(kernels.append, { grid: [Math.ceil(src.t / 4), g.kvHeads, 1], block: [128, 1, 1], stream: stream ?? null, pdl: knobs.pdl !== "off" }, args);
  }
  dispose(): void {
    this.k.free();
    this.v.free();
  }
}

/** Page tables on the device: addresses of the CSR arrays plus what the launch needs on the host. */
export interface DeviceTables {
  readonly indptr: DeviceBuffer | bigint;
  readonly pages: DeviceBuffer | bigint;
  readonly lengths: DeviceBuffer | bigint;
  readonly batch: number;
  readonly groups: number;
  /** Longest cache of the batch (picks the split count). */
  readonly maxLen: number;
  /** Rows with a cache (a bucket's padding has none; default batch): the split count is for these. */
  readonly liveRows?: number;
  /** The last `fresh` tokens of each cache may be written by the kernel just before the split (a decode step's new
   *  K/V rows: 1); the split reads every earlier token before its PDL wait. Default: every token (none early). */
  readonly fresh?: number;
}

/** Offsets (in i32 words) of one layer's arrays inside a packed step blob. */
export interface StepOffsets {
  readonly indptr: number;
  readonly pages: number;
  readonly lengths: number;
  readonly rows: number;
}

/** Words of a step blob's fixed part for `bucket` rows: per layer indptr (bucket * groups + 1), lengths and rows. */
export function stepHeaderWords(layers: number, bucket: number, groups: number, kvHeads: number): number {
  return layers * (2 * bucket * groups + 1 + kvHeads * bucket);
}

/**
 * Every layer's page tables and append rows of one decode step in one i32 array (one host-to-device copy), at
 * offsets that depend only on the row count `bucket` (>= the batch): the fixed part first, then all layers' page
 * ids in one run that every layer's indptr indexes from its start. Rows past the batch (padding up to the bucket)
 * have empty caches (length 0, indptr at row 0's list) and append nowhere (row -1), so a step captured for a bucket
 * replays for any batch in it.
 * `slack` free entries follow each list (the kernels read a list's first ceil(length / P) entries from its indptr
 * only), so later steps can add pages in place (StepTables); `starts[l][e]` is list e's start in layer l.
 */
export function packStepTables(tables: readonly PageTables[], rows: readonly Int32Array[], bucket: number, kvHeads: number, slack = 0): { blob: Int32Array; offsets: StepOffsets[]; starts: Int32Array[] } {
  const L = tables.length;
  const G = L ? tables[0]!.groups : 1;
  const B = L ? tables[0]!.batch : 0;
  if (B > bucket || B < 1) serveFail("ZV7005", [`a step of ${B} sequences in a bucket of ${bucket}`]);
  const per = 2 * bucket * G + 1 + kvHeads * bucket;
  const head = L * per;
  const blob = new Int32Array(head + tables.reduce((a, t) => a + t.pages.length, 0) + L * B * G * slack);
  const offsets: StepOffsets[] = [];
  const starts: Int32Array[] = [];
  let pAt = 0;
  tables.forEach((t, l) => {
    const o = { indptr: l * per, lengths: l * per + bucket * G + 1, rows: l * per + 2 * bucket * G + 1, pages: head };
    const st = new Int32Array(B * G);
    for (let e = 0; e < B * G; e++) {
      st[e] = pAt;
      blob.set(t.pages.subarray(t.indptr[e]!, t.indptr[e + 1]!), head + pAt);
      pAt += t.indptr[e + 1]! - t.indptr[e]! + slack;
    }
    // Rows past the batch (the bucket's padding) get empty caches: they read nothing and append nowhere, so a
    // padded step costs the real rows' K/V only (their outputs are zero and dropped).
    for (let e = 0; e < bucket * G; e++) {
      blob[o.indptr + e] = st[e < B * G ? e : e % G]!;
      blob[o.lengths + e] = e < B * G ? t.lengths[e]! : 0;
    }
    blob[o.indptr + bucket * G] = pAt;
    const r = rows[l]!;
    for (let kv = 0; kv < kvHeads; kv++) for (let b = 0; b < bucket; b++) blob[o.rows + kv * bucket + b] = b < B ? r[kv * B + b]! : -1;
    offsets.push(o);
    starts.push(st);
  });
  return { blob, offsets, starts };
}

/** A batched paged decode: buffers sized for `maxBatch` sequences and `maxPages` table entries, reused per step. */
export class CudaPagedDecode {
  private readonly indptr: DeviceBuffer;
  private readonly ids: DeviceBuffer;
  private readonly lengths: DeviceBuffer;
  private readonly partO: DeviceBuffer;
  private readonly partMl: DeviceBuffer;
  /** Arrival counts of the last-CTA merge, [maxBatch * Hkv], zero between launches (null: knobs.pagedMerge off). */
  private readonly counters: DeviceBuffer | null;
  private readonly maxSplits: number;
  private readonly split: CudaFunction;
  /** CTAs of the split entry all SMs hold at once. */
  readonly slots: number;
  /** (row, head, split) partials the workspace holds. */
  readonly partRows: number;

  constructor(
    private readonly dev: CudaDevice,
    private readonly storage: CudaPageStorage,
    private readonly kernels: PagedKernels,
    readonly Hq: number,
    readonly maxBatch: number,
  ) {
    const g = storage.geometry;
    if (kernels.headDim !== g.headDim || kernels.dtype !== storage.dtype) serveFail("ZV7005", [`kernels for ${kernels.dtype} d${kernels.headDim}, pool of ${storage.dtype} d${g.headDim}`]);
    if (Hq % g.kvHeads !== 0) serveFail("ZV7005", [`query heads ${Hq} must be a multiple of KV heads ${g.kvHeads}`]);
    const G = groupsPerLayer(g);
    // CTAs the SMs hold at once of the split entry this launch takes (occupancy: registers, shared memory).
    const gq = Hq / g.kvHeads;
    this.split = gq === 1 ? kernels.splitG1 : gq === 2 ? kernels.splitG2 : kernels.split;
    this.slots = Math.max(1, this.split.maxActiveBlocks(32 * kernels.warps)) * dev.info.smCount;
    this.maxSplits = Math.max(1, Math.floor((knobs.pagedWaves * this.slots) / g.kvHeads));
    this.indptr = dev.alloc(4 * (maxBatch * G + 1));
    this.ids = dev.alloc(4 * Math.max(1, g.numPages));
    this.lengths = dev.alloc(4 * maxBatch * G);
    // Partials of (row, head, split): rows * splits <= maxBatch + maxSplits for a live batch (splits <= maxSplits /
    // rows); splitsFor caps a padded bucket to the same room.
    this.partRows = Hq * (maxBatch + this.maxSplits);
    this.partO = dev.alloc(4 * this.partRows * g.headDim);
    this.partMl = dev.alloc(8 * this.partRows);
    this.counters = knobs.pagedMerge === "off" ? null : dev.alloc(4 * maxBatch * g.kvHeads);
    this.counters?.write(new Uint32Array(maxBatch * g.kvHeads));
  }

  /** Uploads the tables (queued on `stream`), then enqueues split and combine. q and o are [batch, Hq, d] ("bhd")
   *  or head-major [Hq, batch, d] ("hbd", the model's layout). */
  enqueue(t: PageTables, q: DeviceBuffer | bigint, o: DeviceBuffer | bigint, scale: number, stream?: CudaStream | null, layout: "bhd" | "hbd" = "bhd"): void {
    this.launch(this.upload(t, stream), q, o, scale, stream, layout);
  }

  /** Queues the tables' upload into this launcher's own buffers (`launch` reads them later in stream order). */
  upload(t: PageTables, stream?: CudaStream | null): DeviceTables {
    this.indptr.write(t.indptr, 0, stream);
    if (t.pages.length) this.ids.write(t.pages, 0, stream);
    this.lengths.write(t.lengths, 0, stream);
    return { indptr: this.indptr, pages: this.ids, lengths: this.lengths, batch: t.batch, groups: t.groups, maxLen: Math.max(0, ...t.lengths) };
  }

  /** The split count of a launch of `rows` rows (a bucket: `live` of them with caches) whose longest cache holds
   *  `maxLen` tokens: sized for the live rows, capped so every row's partials fit the workspace. */
  splitsFor(live: number, maxLen: number, rows = live): number {
    const fit = Math.floor(this.partRows / (this.Hq * rows));
    return Math.max(1, Math.min(this.maxSplits, fit, pagedSplits(this.slots, this.storage.geometry.kvHeads, live, maxLen)));
  }
  /** Split and combine over tables already on the device (e.g. one upload of every layer's tables per step). The
   *  split reads the tables, page ids and every key but the last `t.fresh` of each cache before its PDL wait: those
   *  must not be written by the kernel launched just before it (a host upload or any earlier kernel is fine). */
  launch(t: DeviceTables, q: DeviceBuffer | bigint, o: DeviceBuffer | bigint, scale: number, stream?: CudaStream | null, layout: "bhd" | "hbd" = "bhd"): void {
    const g = this.storage.geometry;
    if (t.batch < 1 || t.batch > this.maxBatch) serveFail("ZV7005", [`batch ${t.batch} outside 1..${this.maxBatch}`]);
    // Fits the workspace: t.batch <= maxBatch (checked above), so splitsFor's cap is at least one split.
    const splits = this.splitsFor(t.liveRows ?? t.batch, t.maxLen, t.batch);
    const args = packPaged("ZvPagedDecodeArgs", {
      q, k_pages: this.storage.k, v_pages: this.storage.v, o, part_o: this.partO, part_ml: this.partMl, page_indptr: t.indptr, page_ids: t.pages, lengths: t.lengths,
      batch: i64(t.batch), Hq: i64(this.Hq), Hkv: i64(g.kvHeads), d: i64(g.headDim), page_tokens: i64(g.pageTokens), heads_per_page: i64(headsPerPage(g)), groups: i64(t.groups), splits: i64(splits),
      ...(layout === "bhd"
        ? { q_stride_b: i64(this.Hq), q_stride_h: i64(1), o_stride_b: i64(this.Hq), o_stride_h: i64(1) }
        : { q_stride_b: i64(1), q_stride_h: i64(t.batch), o_stride_b: i64(1), o_stride_h: i64(t.batch) }),
      scale: { f64: scale },
      counters: this.counters,
      fresh: i64(t.fresh ?? 0x7fffffff),
    });
    const s = stream ?? null;
    // Programmatic dependent launch: launch latency hides behind the previous kernel; the split does its table and
    // early key reads meanwhile (above), the combine waits for its predecessor first.
    const pdl = knobs.pdl !== "off";
    this.dev.launch(this.split, { grid: [g.kvHeads, splits, t.batch], block: [32 * this.kernels.warps, 1, 1], stream: s, pdl }, args);
    // Without the counters (knobs.pagedMerge off) the splits are merged by a second launch.
    if (!this.counters) this.dev.launch(this.kernels.combine, { grid: [this.Hq, t.batch, 1], block: [128, 1, 1], stream: s, pdl }, args);
  }

  free(): void {
    for (const b of [this.indptr, this.ids, this.lengths, this.partO, this.partMl]) b.free();
    this.counters?.free();
  }
}
