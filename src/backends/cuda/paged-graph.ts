// CUDA graphs for the serving engine's batched decode step. A step's launches depend only on the batch bucket (1, 2,
// 4, ... up to the largest batch; rows past the batch repeat row 0 and append nowhere) and the split count of the
// paged attention, so one graph per (bucket, splits) replays every step of that shape: the token ids and positions
// go to two fixed device buffers, the page tables and append rows to the attention's step buffer (beginStep), each
// one small host-to-device copy queued before the launch, and the logits come back from the graph's own output.
// A graph is made on the first step of its shape: that step runs eagerly in the bucket's private buffer pool (it
// loads kernels, caches the rope table and sizes the pool), then the same step is captured with the pool frozen,
// so the captured work allocates nothing, writes and reads nothing from the host and never synchronizes. If a
// capture fails, the runner says so in one line and decodes eagerly from then on (the warm-up's logits stand).
// Every step ends with greedy sampling on the device (zv_model argmax): the ids land in the token buffer, where the
// next step's embed reads them, and in one of four host-read slots (the slot index is a device int the host sets
// before each launch), so `greedy` can enqueue step n + 1 before it reads step n's tokens (an event per slot, read
// on a second stream while the next step runs).
import type { CudaOpsHandle } from "../../model/cuda-ops.ts";
import { LlavaError } from "../../model/errors.ts";
import type { DTensor, ModelOps } from "../../model/ops.ts";
import type { CudaEvent, CudaGraph, CudaStream } from "../../runtime/native.ts";
import { argmaxRows } from "../../model/sampling.ts";
import { serveFail } from "../../serve/errors.ts";
import { eagerStep, type DecodeRow, type GreedySteps, type StepModel, type StepRunner, type StepTicket } from "../../serve/step.ts";
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
  // Greedy ids read back by the host: SLOTS slots of maxBatch (and one more that logits steps write), the slot of
  // the next launch in `slot`.
  const SLOTS = 4;
  const toks = dev.alloc(4 * (SLOTS + 1) * o.maxBatch);
  const slot = dev.alloc(4);
  const events: CudaEvent[] = [];
  let copyStream: CudaStream | null = null;
  let launches = 0;
  // Which rows' greedy ids the token buffer holds (bucket and sequences of the last step run), null: none.
  let idsOf: string | null = null;
  const pending = new Array<GreedyTicket | null>(SLOTS).fill(null);
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
  // The step: embed the ids on the device, the model, greedy ids of every row (logits stay the step's output).
  const body = (rows: number, seqs: readonly string[], positions: Int32Array): DTensor => {
    const y = model(view, h.embedFrom(table, ids, rows), positions, seqs);
    h.kernels.argmax(h.bufferOf(y), ids, rows, V, { base: toks, slot, stride: o.maxBatch });
    return y;
  };
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

  /** Queues one step of `batch` (tokens from the host, or from the previous step's ids on the device) through its
   *  graph, or runs the warm-up of a new shape (`warm` sees its logits) and captures it. Returns the graph's logits
   *  after a replay, null after a warm-up. */
  const enqueue = (batch: readonly DecodeRow[], fromDevice: boolean, warm?: (y: DTensor) => void): DTensor | null => {
    const B = batch.length;
    const sig = `${bucketOf(B, o.maxBatch)}:${batch.map((r) => r.seq).join("\u0000")}`;
    if (fromDevice && idsOf !== sig) serveFail("ZV7040", ["a decode step from device token ids that a step of other rows left"]);
    idsOf = null;
    if (!fromDevice) for (const r of batch) if (!(Number.isInteger(r.token) && r.token >= 0 && r.token < V)) throw new LlavaError("ZV6109", [`token id ${r.token} is outside the vocabulary [0, ${V})`]);
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
    if (!fromDevice) ids.write(idv, 0, h.stream);
    pos.write(pv, 0, h.stream);
    const g = graphs.get(key);
    if (g) {
      last = g.graph;
      g.graph.launch(h.stream);
      stats.replays++;
      idsOf = sig;
      return g.out;
    }
    let pool = pools.get(rows);
    if (!pool) pools.set(rows, (pool = new BufferPool(dev)));
    const y = h.withPool(pool, () => body(rows, padded, pv));
    idsOf = sig;
    try {
      warm?.(y);
    } finally {
      h.free(y); // back to the pool before the capture takes its buffers
    }
    stats.warmups++;
    capture(key, pool, rows, padded, pv);
    return null;
  };

  type GreedyTicket = StepTicket & { slot: number; tokens?: Int32Array };
  const greedy: GreedySteps = {
    get deviceIds() {
      return off === null;
    },
    launch(batch, fromDevice) {
      const B = batch.length;
      const seqs = batch.map((r) => r.seq);
      if (off !== null || B > o.maxBatch) {
        if (fromDevice) serveFail("ZV7040", ["a decode step from device token ids while graphs are off"]);
        stats.eager++;
        idsOf = null;
        return { seqs, slot: -1, tokens: Int32Array.from(argmaxRows(eagerStep(h, attn, model, table, batch), B)) } satisfies GreedyTicket;
      }
      const k = launches % SLOTS;
      if (pending[k]) {
        // A ticket never collected (its caller failed): drop it once its step is done.
        events[k]!.synchronize();
        pending[k] = null;
      }
      slot.write(Int32Array.of(k), 0, h.stream);
      enqueue(batch, fromDevice);
      launches++;
      (events[k] ??= dev.createEvent()).record(h.stream);
      const t: GreedyTicket = { seqs, slot: k };
      pending[k] = t;
      return t;
    },
    collect(ticket) {
      const t = ticket as GreedyTicket;
      if (t.tokens) return t.tokens;
      if (pending[t.slot] !== t) serveFail("ZV7040", ["a decode step collected twice or after its slot was reused"]);
      pending[t.slot] = null;
      events[t.slot]!.synchronize();
      copyStream ??= dev.createStream({ nonBlocking: true });
      // On a second stream: the step is done (its event), the next one may be running on the ops' stream.
      return toks.read(new Int32Array(t.seqs.length), 4 * t.slot * o.maxBatch, copyStream);
    },
  };

  return {
    get mode() {
      return off === null ? "graph" : "eager";
    },
    stats,
    greedy,
    get shapes() {
      return [...graphs.keys()];
    },
    run(batch: readonly DecodeRow[]): Float32Array {
      const B = batch.length;
      if (off !== null || B > o.maxBatch) {
        stats.eager++;
        idsOf = null;
        return eagerStep(h, attn, model, table, batch);
      }
      let lg: Float32Array | undefined;
      slot.write(Int32Array.of(SLOTS), 0, h.stream);
      const out = enqueue(batch, false, (y) => (lg = logitsOf(y, B)));
      return out ? logitsOf(out, B) : lg!;
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
      toks.free();
      slot.free();
      for (const e of events) e.destroy();
      copyStream?.destroy();
    },
  };
}
