// A decode step's page tables and append rows on the device (packStepTables' layout), kept between steps. The
// first step of a batch packs every layer's tables with `slack` free entries after each page list and uploads the
// lot; the next steps of the same batch (same sequences, same bucket) only rewrite, in a host mirror, the lengths,
// the append rows and the ids of pages added since, then upload the fixed part (a few KiB) and the new ids in spans
// (one copy per run of changes closer than SPAN_GAP words).
// Repacking every step cost the host 0.5 ms at 2.9k tokens and 1 ms at 32k (40 layers, one sequence), a step's GPU
// time being 10-20 ms. A list that outgrows its slack, a change of batch or of the pool's sequences (its epoch)
// repacks.
import type { CudaStream, DeviceBuffer } from "../../runtime/native.ts";
import { serveFail } from "../../serve/errors.ts";
import type { PagedKvPool } from "../../serve/pool.ts";
import { packStepTables, stepHeaderWords, type StepOffsets } from "./paged.ts";

/** Free entries after each page list: 8 pages (128 tokens at 16-token pages) between repacks. */
export const STEP_SLACK_PAGES = 8;
/** Changed page-id words further apart than this (32 KiB) go up as separate copies. */
export const SPAN_GAP = 8192;

export interface StepLayout {
  readonly offsets: readonly StepOffsets[];
  /** Longest cache of the step (sizes the paged split count). */
  readonly maxLen: number;
}

interface Resident {
  readonly epoch: number;
  readonly seqs: readonly string[];
  readonly bucket: number;
  readonly offsets: StepOffsets[];
  readonly starts: Int32Array[];
  /** Page ids on the device per layer per list (B * G). */
  readonly known: Int32Array[];
}

export class StepTables {
  readonly buffer: DeviceBuffer;
  private mirror: Int32Array = new Int32Array(0);
  private res: Resident | null = null;
  /** Steps that repacked everything / updated in place, and page-id copies of the updates (tests, benchmarks). */
  readonly stats = { packs: 0, updates: 0, spans: 0 };

  constructor(
    alloc: (bytes: number) => DeviceBuffer,
    private readonly pool: PagedKvPool,
    private readonly layers: number,
    private readonly kvHeads: number,
    private readonly groups: number,
    maxBatch: number,
    private readonly slack = STEP_SLACK_PAGES,
  ) {
    const lists = layers * maxBatch * groups;
    this.buffer = alloc(4 * (stepHeaderWords(layers, maxBatch, groups, kvHeads) + pool.geometry.numPages + lists * slack));
  }

  /** The tables of a step of `seqs` padded to `bucket` rows whose append rows were just reserved (`rows[l]`,
   *  [Hkv, B]), queued on `stream`. */
  begin(seqs: readonly string[], bucket: number, rows: readonly Int32Array[], stream: CudaStream | null): StepLayout {
    const r = this.res;
    const same = r !== null && r.epoch === this.pool.epoch && r.bucket === bucket && r.seqs.length === seqs.length && r.seqs.every((s, i) => s === seqs[i]);
    const maxLen = same ? this.update(r, rows, stream) : -1;
    return maxLen >= 0 ? { offsets: r!.offsets, maxLen } : this.pack(seqs, bucket, rows, stream);
  }

  private pack(seqs: readonly string[], bucket: number, rows: readonly Int32Array[], stream: CudaStream | null): StepLayout {
    this.res = null;
    const tables = Array.from({ length: this.layers }, (_, l) => this.pool.tables(seqs, l));
    const { blob, offsets, starts } = packStepTables(tables, rows, bucket, this.kvHeads, this.slack);
    if (blob.byteLength > this.buffer.bytes) serveFail("ZV7005", [`a decode step's tables of ${blob.byteLength} bytes exceed the ${this.buffer.bytes}-byte step buffer`]);
    this.buffer.write(blob, 0, stream);
    this.mirror = blob;
    const known = tables.map((t) => Int32Array.from({ length: t.batch * t.groups }, (_, e) => t.indptr[e + 1]! - t.indptr[e]!));
    this.res = { epoch: this.pool.epoch, seqs: [...seqs], bucket, offsets, starts, known };
    this.stats.packs++;
    return { offsets, maxLen: Math.max(0, ...tables.map((t) => Math.max(0, ...t.lengths))) };
  }

  /** In place: the new lengths, rows and page ids; -1 when a list outgrew its slack (then the caller repacks). */
  private update(r: Resident, rows: readonly Int32Array[], stream: CudaStream | null): number {
    const m = this.mirror;
    const G = this.groups, B = r.seqs.length, P = this.pool.geometry.pageTokens;
    const head = r.offsets[0]!.pages;
    // New page ids land at scattered words (one per list that crossed a page); they go up in spans, a span split
    // where two changed words lie more than SPAN_GAP words apart (one copy's fixed cost outweighs that many bytes;
    // a single span from the first to the last change was ~200 KiB a step at 2.9k ZipVL, per-head lists).
    const spans: [number, number][] = [];
    let maxLen = 0;
    for (let l = 0; l < this.layers; l++) {
      const o = r.offsets[l]!, st = r.starts[l]!, kn = r.known[l]!;
      for (let b = 0; b < B; b++) {
        const lens = this.pool.lengths(r.seqs[b]!, l);
        for (let g = 0; g < G; g++) {
          const e = b * G + g, len = lens[g]!;
          m[o.lengths + e] = len;
          if (len > maxLen) maxLen = len;
          const cnt = Math.ceil(len / P);
          if (cnt <= kn[e]!) continue;
          const cap = (e + 1 < B * G ? st[e + 1]! : m[o.indptr + r.bucket * G]!) - st[e]!;
          if (cnt > cap) return -1;
          const ids = this.pool.pageIds(r.seqs[b]!, l, g);
          for (let j = kn[e]!; j < cnt; j++) m[head + st[e]! + j] = ids[j]!;
          const lo = head + st[e]! + kn[e]!, hi = head + st[e]! + cnt, tail = spans[spans.length - 1];
          if (tail && lo >= tail[0] && lo - tail[1] <= SPAN_GAP) tail[1] = Math.max(tail[1], hi);
          else spans.push([lo, hi]);
          kn[e] = cnt;
        }
      }
      const rr = rows[l]!;
      for (let kv = 0; kv < this.kvHeads; kv++) for (let b = 0; b < r.bucket; b++) m[o.rows + kv * r.bucket + b] = b < B ? rr[kv * B + b]! : -1;
    }
    this.buffer.write(m.subarray(0, head), 0, stream);
    for (const [lo, hi] of spans) this.buffer.write(m.subarray(lo, hi), 4 * lo, stream);
    this.stats.spans += spans.length;
    this.stats.updates++;
    return maxLen;
  }

  free(): void {
    this.buffer.free();
  }
}
