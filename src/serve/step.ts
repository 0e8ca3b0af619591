// A batched decode step of the serving engine, split in two: the model part (StepModel: embedded rows -> logits,
// the decoder layers of src/model/text.ts over the paged attention) and a runner that feeds it. The eager runner
// here embeds on the host's ids and runs the model op by op; the CUDA runner (src/backends/cuda/paged-graph.ts)
// replays the same model part from a graph captured per batch bucket.
import type { DTensor, ModelOps } from "../model/ops.ts";
import type { PagedAttention } from "./attention.ts";

export interface DecodeRow {
  readonly seq: string;
  readonly token: number;
  readonly position: number;
}

/** The model part of a decode step over `seqs` (begun on the attention): embedded rows h [B, H] (taken over) at
 *  `positions` -> logits [B, V] (a new tensor). Runs on the given ops (the CUDA runner passes a view whose rope
 *  reads the positions from the device). */
export type StepModel = (ops: ModelOps, h: DTensor, positions: Int32Array, seqs: readonly string[]) => DTensor;

export interface StepRunner {
  /** "eager" or "graph" (after a failed capture a graph runner reports "eager"). */
  readonly mode: string;
  /** Logits of every row, row-major [B, V]. */
  run(batch: readonly DecodeRow[]): Float32Array;
  /** Optional: greedy steps sampled on the device, enqueued and collected separately (the engine keeps one step
   *  in flight while the host handles the previous one's tokens). */
  readonly greedy?: GreedySteps;
  dispose(): void;
}

/** A step enqueued by GreedySteps.launch: its rows, in order. */
export interface StepTicket {
  readonly seqs: readonly string[];
}

export interface GreedySteps {
  /** Whether a launch may take its tokens from the device now (graphs on). */
  readonly deviceIds: boolean;
  /** Enqueues a step over `batch`. fromDevice: each row's token is the greedy id the previous launch left on the
   *  device for the same row (that launch had the same sequences in the same order; batch[i].token is ignored). */
  launch(batch: readonly DecodeRow[], fromDevice: boolean): StepTicket;
  /** Waits for the step and returns its rows' greedy tokens (each ticket once). */
  collect(t: StepTicket): Int32Array;
}

export function eagerStep(ops: ModelOps, attn: PagedAttention, model: StepModel, embedTable: DTensor, batch: readonly DecodeRow[]): Float32Array {
  const seqs = batch.map((b) => b.seq);
  attn.beginStep?.(seqs);
  const h = ops.embed(embedTable, Int32Array.from(batch, (b) => b.token));
  const y = model(ops, h, Int32Array.from(batch, (b) => b.position), seqs);
  try {
    return ops.toF32(y);
  } finally {
    ops.free(y);
  }
}

export function eagerRunner(ops: ModelOps, attn: PagedAttention, model: StepModel, embedTable: DTensor): StepRunner {
  return { mode: "eager", run: (batch) => eagerStep(ops, attn, model, embedTable, batch), dispose: () => {} };
}
