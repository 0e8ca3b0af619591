// The serving engine's paged attention on the GPU (src/serve/attention.ts's interface over the cuda ModelOps):
// page memory in device buffers, K/V appended by the append kernel straight from the model's device tensors (or, in
// a begun step whose q/k/v projection is one fused launch, written by that launch: stepSink), and
// one split + combine launch pair per layer for the whole batch, reading q and writing o in the model's head-major
// [Hq, B, d] layout. Everything is queued on the ops' stream; only the small i32 page tables cross from the host.
import type { CudaOpsHandle } from "../../model/cuda-ops.ts";
import type { DTensor, ModelOps } from "../../model/ops.ts";
import type { DeviceBuffer } from "../../runtime/native.ts";
import { checkStep, type PagedAttention, type PagedAttentionOptions } from "../../serve/attention.ts";
import { serveFail } from "../../serve/errors.ts";
import { groupsPerLayer, PagedKvPool } from "../../serve/pool.ts";
import type { StepModel, StepRunner } from "../../serve/step.ts";
import { CudaPagedDecode, CudaPageStorage, loadPagedKernels, type StepOffsets } from "./paged.ts";
import { createGraphRunner } from "./paged-graph.ts";
import { StepTables } from "./step-tables.ts";
import type { CudaDType } from "./render.ts";
import type { GemvSink } from "./gemv.ts";
import { knobs } from "../../knobs.ts";
import { ESIZE } from "./model-pool.ts";

function handle(ops: ModelOps): CudaOpsHandle {
  const h = ops as Partial<CudaOpsHandle>;
  if (ops.name !== "cuda" || !h.ctx || !h.bufferOf || !h.adopt || !h.empty || !h.stream) serveFail("ZV7040", ["the cuda paged attention needs the cuda ModelOps (src/model/cuda-ops.ts)"]);
  return ops as CudaOpsHandle;
}

export function deviceFreeBytes(ops: ModelOps): number {
  return handle(ops).ctx.dev.memInfo().free;
}

/** The cuda paged attention: beginStep takes the bucket (rows padded up to it) and returns the key of what the
 *  step's launches bake in (bucket and split count); stepRunner gives decode steps replayed from CUDA graphs. */
export interface CudaPagedAttention extends PagedAttention {
  beginStep(seqs: readonly string[], bucket?: number): string;
  /** Makes the last finished step current again (same rows and tables, nothing reserved or uploaded): its
   *  launches are queued once more, e.g. into a graph capture after the eager warm-up. */
  rearm(): void;
  stepRunner(model: StepModel, embedTable: DTensor, notice?: (line: string) => void): StepRunner;
}

export function createCudaAttention(ops: ModelOps, o: PagedAttentionOptions): CudaPagedAttention {
  const h = handle(ops);
  const dev = h.ctx.dev;
  const dtype = ops.dtype as CudaDType;
  const esz = ESIZE[dtype];
  const geom = { layers: o.layers, kvHeads: o.kvHeads, headDim: o.headDim, pageTokens: o.pageTokens, layout: o.layout, numPages: o.numPages, elemBytes: esz };
  const storage = new CudaPageStorage(dev, geom, dtype);
  const pool = new PagedKvPool(geom, storage);
  const kernels = loadPagedKernels(dev, h.ctx.arch, dtype, o.headDim);
  const maxBatch = o.maxBatch ?? 256;
  const decode = new CudaPagedDecode(dev, storage, kernels, o.heads, maxBatch);
  let rows: DeviceBuffer = dev.alloc(4 * Math.max(64, o.kvHeads * maxBatch));
  const rowsFor = (n: number): DeviceBuffer => {
    if (rows.bytes < 4 * n) {
      h.stream.synchronize(); // the old buffer may still be read by a queued append
      rows.free();
      rows = dev.alloc(4 * n * 2);
    }
    return rows;
  };
  const G = groupsPerLayer(geom);
  // The current decode step (beginStep): every layer's rows reserved and all tables in one buffer sized once for
  // the largest batch, at offsets that depend only on the bucket (what a captured step needs), updated in place
  // while the batch stays the same (StepTables).
  type Step = { seqs: readonly string[]; live: number; offsets: readonly StepOffsets[]; maxLen: number };
  let step: Step | null = null;
  let last: Step | null = null;
  const tables = new StepTables((n) => dev.alloc(n), pool, o.layers, o.kvHeads, G, maxBatch);
  const at = (words: number): bigint => tables.buffer.at(4 * words);
  const inStep = (layer: number, seqs: readonly string[]): boolean =>
    step !== null && step.seqs.length === seqs.length && step.seqs.every((s, i) => s === seqs[i]) && layer < step.offsets.length;
  const attention: CudaPagedAttention = {
    pool,
    beginStep(seqs, bucket = seqs.length) {
      const B = seqs.length;
      if (bucket > maxBatch) serveFail("ZV7005", [`a decode step of ${bucket} rows; the attention was sized for ${maxBatch}`]);
      const need = seqs.reduce((a, s) => a + pool.stepGrowth(s), 0);
      if (need > pool.freePages) serveFail("ZV7002", [`a decode step of ${B} sequences needs ${need} page(s), ${pool.freePages} free`]);
      const rows: Int32Array[] = [];
      for (let l = 0; l < o.layers; l++) {
        const r = new Int32Array(o.kvHeads * B);
        for (let b = 0; b < B; b++) pool.reserveOne(seqs[b]!, l, r, b, B);
        rows.push(r);
      }
      const { offsets, maxLen } = tables.begin(seqs, bucket, rows, h.stream);
      // Rows past the batch repeat seqs[0]: appendStep/attend of the step are called with the padded list.
      // Splits are sized for the B rows with caches (padding rows read nothing): part of the graph's key.
      step = { seqs: [...seqs, ...new Array<string>(bucket - B).fill(seqs[0]!)], live: B, offsets, maxLen };
      return `${bucket}/${decode.splitsFor(B, maxLen, bucket)}`;
    },
    rearm() {
      if (!last) serveFail("ZV7005", ["rearm() without a finished decode step"]);
      step = last;
    },
    stepRunner(model, embedTable, notice) {
      return createGraphRunner(h, attention, model, embedTable, { maxBatch, ...(notice ? { notice } : {}) });
    },
    appendCache(seq, layer, k, v) {
      const t = k.shape[1]!;
      const r = pool.reserveRows(seq, layer, new Array<number>(G).fill(t), t);
      if (t === 0) return;
      const buf = rowsFor(r.length);
      buf.write(r, 0, h.stream);
      storage.appendDevice(kernels, { k: h.bufferOf(k), v: h.bufferOf(v), t }, buf, h.stream);
    },
    appendStep(layer, seqs, k, v) {
      const B = seqs.length;
      checkStep(k, o.kvHeads, B, o.headDim);
      if (inStep(layer, seqs)) {
        storage.appendDevice(kernels, { k: h.bufferOf(k), v: h.bufferOf(v), t: B }, at(step!.offsets[layer]!.rows), h.stream);
        return;
      }
      const need = seqs.reduce((a, s) => a + pool.growthPages(s, layer, new Array<number>(G).fill(1)), 0);
      if (need > pool.freePages) serveFail("ZV7002", [`a decode step of ${B} sequences needs ${need} page(s), ${pool.freePages} free`]);
      const all = new Int32Array(o.kvHeads * B);
      seqs.forEach((s, b) => {
        const r = pool.reserveRows(s, layer, new Array<number>(G).fill(1), 1);
        for (let kv = 0; kv < o.kvHeads; kv++) all[kv * B + b] = r[kv]!;
      });
      const buf = rowsFor(all.length);
      buf.write(all, 0, h.stream);
      storage.appendDevice(kernels, { k: h.bufferOf(k), v: h.bufferOf(v), t: B }, buf, h.stream);
    },
    stepSink(layer, seqs) {
      if (knobs.pagedSink === "off" || !inStep(layer, seqs)) return undefined;
      const target: GemvSink = { kind: "cuda-paged", rows: at(step!.offsets[layer]!.rows), k: storage.k, v: storage.v };
      return { target, written: false };
    },
    attend(layer, seqs, q: DTensor, scale) {
      const B = seqs.length;
      // From the ops' pool (no allocation inside a captured step).
      const out = h.empty([o.heads, B, o.headDim]);
      if (inStep(layer, seqs)) {
        const off = step!.offsets[layer]!;
        decode.launch({ indptr: at(off.indptr), pages: at(off.pages), lengths: at(off.lengths), batch: B, groups: G, maxLen: step!.maxLen, liveRows: step!.live, ...(knobs.pagedEarly === "on" ? { fresh: 1 } : {}) }, h.bufferOf(q), h.bufferOf(out), scale, h.stream, "hbd");
        if (layer === o.layers - 1) {
          last = step;
          step = null;
        }
      } else decode.enqueue(pool.tables(seqs, layer), h.bufferOf(q), h.bufferOf(out), scale, h.stream, "hbd");
      return out;
    },
    dispose() {
      h.stream.synchronize();
      tables.free();
      decode.free();
      rows.free();
      pool.dispose();
    },
  };
  return attention;
}
