// CUDA graphs for the serving engine's batched decode step. A step's launches depend only on the batch bucket (1, 2,
// 4, ... up to the largest batch; rows past the batch repeat row 0 and append nowhere) and the split count of the
// paged attention, so one graph per (bucket, splits) replays every step of that shape: the token ids and positions
// go to two fixed device buffers, the page tables and append rows to the attention's step buffer (beginStep), each
// one small host-to-device copy queued before the launch, and the logits come back from the graph's own output.
// A graph is made on the first step of its shape: that step runs eagerly in the bucket's private buffer pool (it
// loads kernels, caches the rope table and sizes the pool), then the same step is captured with the pool frozen,
// so the captured work allocates nothing, writes and reads nothing from the host and never synchronizes. If a
// capture fails, the runner says so in one line and decodes eagerly from then on (the warm-up's logits stand).
import type { CudaOpsHandle } from "../../model/cuda-ops.ts";
import { LlavaError } from "../../model/errors.ts";
import type { DTensor, ModelOps } from "../../model/ops.ts";
import type { CudaGraph } from "../../runtime/native.ts";
import { eagerStep, type DecodeRow, type StepModel, type StepRunner } from "../../serve/step.ts";
import { BufferPool } from "./model-pool.ts";
import type { CudaPagedAttention } from "./paged-serve.ts";

/** The bucket of a batch of B rows: the next power of two, at most maxBatch. */
export function bucketOf(B: number, maxBatch: number): number {
  let b = 1;
  while (b < B) b *= 2;
  return Math.min(b, maxBatch);
}

export interface GraphStats {
  /** Steps that ran eagerly to make a graph (one per shape). */
  warmups: number;
  captures: number;
  replays: number;
  /** Steps run eagerly because graphs are off (a failed capture) or the batch is over the largest. */
  eager: number;
}

export interface GraphRunner extends StepRunner {
  readonly stats: GraphStats;
  /** Keys (bucket/splits) of the captured graphs. */
  readonly shapes: readonly string[];
  /** Benchmarks: replays the last step's graph n times back to back with no host work between (the same step
   *  recomputed: same tokens, positions and appended rows) and returns the milliseconds per replay; the GPU's share
   *  of a step, the rest of `run` being host work (tables, token ids, the logits copy). Null without a graph. */
  replayLast(n: number): number | null;
}

export function createGraphRunner(h: CudaOpsHandle, attn: CudaPagedAttention, model: StepModel, table: DTensor, o: { maxBatch: number; notice?: (line: string) => void }): GraphRunner {
  const dev = h.ctx.dev;
  const V = table.shape[0]!;
  const ids = dev.alloc(4 * o.maxBatch);
  const pos = dev.alloc(4 * o.maxBatch);
  const pools = new Map<number, BufferPool>();
  const graphs = new Map<string, { graph: CudaGraph; out: DTensor }>();
  const stats: GraphStats = { warmups: 0, captures: 0, replays: 0, eager: 0 };
  let off: string | null = null;
  let last: CudaGraph | null = null;
  // The model part on a view of the ops whose rope (plain and fused) reads the positions from the device buffer.
  const view: ModelOps = {
    ...h,
    rope: (x, _positions, invFreq, scale) => h.ropeFrom(x, pos, invFreq, scale),
    normProject: (x, norm, projs, rope, sink) => h.normProjectAt(x, norm, projs, rope, pos, sink),
  };
  const body = (rows: number, seqs: readonly string[], positions: Int32Array): DTensor => model(view, h.embedFrom(table, ids, rows), positions, seqs);
  // Only the batch's rows come back (not the bucket's padding).
  const logitsOf = (y: DTensor, B: number): Float32Array => h.readF32(y, B * y.shape[1]!);

  const capture = (key: string, pool: BufferPool, rows: number, seqs: readonly string[], positions: Int32Array): void => {
    let out: DTensor | undefined;
    pool.frozen = true;
    try {
      attn.rearm();
      const graph = dev.captureGraph(h.stream, () => {
        out = h.withPool(pool, () => body(rows, seqs, positions));
      });
      graphs.set(key, { graph, out: out! });
      stats.captures++;
    } catch (e) {
      if (out) h.free(out);
      off = (e as Error).message.split("\n")[0]!;
      o.notice?.(`zipvl serve: CUDA graph capture of the decode step failed (${off}); decoding eagerly from now on`);
    } finally {
      pool.frozen = false;
    }
  };

  return {
    get mode() {
      return off === null ? "graph" : "eager";
    },
    stats,
    get shapes() {
      return [...graphs.keys()];
    },
    run(batch: readonly DecodeRow[]): Float32Array {
      const B = batch.length;
      if (off !== null || B > o.maxBatch) {
        stats.eager++;
        return eagerStep(h, attn, model, table, batch);
      }
      for (const r of batch) if (!(Number.isInteger(r.token) && r.token >= 0 && r.token < V)) throw new LlavaError("ZV6109", [`token id ${r.token} is outside the vocabulary [0, ${V})`]);
      const rows = bucketOf(B, o.maxBatch);
      const seqs = batch.map((r) => r.seq);
      const padded = [...seqs, ...new Array<string>(rows - B).fill(seqs[0]!)];
      const idv = new Int32Array(rows);
      const pv = new Int32Array(rows);
      for (let b = 0; b < rows; b++) {
        const r = batch[b < B ? b : 0]!;
        idv[b] = r.token;
        pv[b] = r.position;
      }
      const key = attn.beginStep(seqs, rows);
      ids.write(idv, 0, h.stream);
      pos.write(pv, 0, h.stream);
      const g = graphs.get(key);
      if (g) {
        last = g.graph;
        g.graph.launch(h.stream);
        stats.replays++;
        return logitsOf(g.out, B);
      }
      let pool = pools.get(rows);
      if (!pool) pools.set(rows, (pool = new BufferPool(dev)));
      const p = pool;
      const y = h.withPool(p, () => body(rows, padded, pv));
      let lg: Float32Array;
      try {
        lg = logitsOf(y, B);
      } finally {
        h.free(y);
      }
      stats.warmups++;
      capture(key, p, rows, padded, pv);
      return lg;
    },
    replayLast(n: number): number | null {
      if (!last || off !== null) return null;
      h.stream.synchronize();
      const t0 = performance.now();
      for (let i = 0; i < n; i++) last.launch(h.stream);
      h.stream.synchronize();
      return (performance.now() - t0) / n;
    },
    dispose(): void {
      last = null;
      h.stream.synchronize();
      for (const g of graphs.values()) {
        g.graph.destroy();
        h.free(g.out);
      }
      graphs.clear();
      for (const p of pools.values()) p.release();
      pools.clear();
      ids.free();
      pos.free();
    },
  };
}
