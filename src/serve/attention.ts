// Decode attention of the serving engine over the paged pool, behind one small interface on backend tensors: the
// host version here (HostPageStorage + the f64 paged reference; the cpu and webgpu backends) and the device one in
// src/backends/cuda/paged-serve.ts (page memory on the GPU, append and attention kernels on the ops' stream).
import type { DTensor, KvSink, ModelOps } from "../model/ops.ts";
import { serveFail } from "./errors.ts";
import type { StepModel, StepRunner } from "./step.ts";
import { pagedDecodeReference } from "./paged-ref.ts";
import { createHostPool, groupsPerLayer, type PagedKvPool, type PageLayout } from "./pool.ts";

export interface PagedAttention {
  readonly pool: PagedKvPool;
  /** Optional: called once before a decode step's layers (the CUDA version reserves every layer's rows and uploads
   *  all page tables in one copy). appendStep/attend of that step follow for every layer in order. */
  beginStep?(seqs: readonly string[]): string | void;
  /** Optional: decode steps run by the backend (the CUDA version replays one captured graph per batch bucket). */
  stepRunner?(model: StepModel, embedTable: DTensor, notice?: (line: string) => void): StepRunner;
  /** Prefill: one layer's kept K/V [Hkv, t, d] (RoPE applied) of one sequence. */
  appendCache(seq: string, layer: number, k: DTensor, v: DTensor): void;
  /** Decode: row b of k/v [Hkv, B, d] is the new token of seqs[b]. */
  appendStep(layer: number, seqs: readonly string[], k: DTensor, v: DTensor): void;
  /** Optional, decode: the rows this step's new K/V of `layer` go to, for a q/k/v projection that writes them itself
   *  (then appendStep is skipped for the layer). Undefined when the step was not begun for these sequences. */
  stepSink?(layer: number, seqs: readonly string[]): KvSink | undefined;
  /** q [Hq, B, d] -> o [Hq, B, d] (a new handle), each sequence over its own pages. */
  attend(layer: number, seqs: readonly string[], q: DTensor, scale: number): DTensor;
  dispose(): void;
}

export interface PagedAttentionOptions {
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly pageTokens: number;
  readonly layout: PageLayout;
  readonly numPages: number;
  /** Largest decode batch (sizes the device workspaces); default 256. */
  readonly maxBatch?: number;
}

/** [A, B, d] -> [B, A, d]. */
export function swap01(x: Float32Array, A: number, B: number, d: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let a = 0; a < A; a++) for (let b = 0; b < B; b++) out.set(x.subarray((a * B + b) * d, (a * B + b + 1) * d), (b * A + a) * d);
  return out;
}

export function checkStep(k: DTensor, kvHeads: number, B: number, d: number): void {
  const s = k.shape;
  if (s.length !== 3 || s[0] !== kvHeads || s[1] !== B || s[2] !== d) serveFail("ZV7004", [`decode K/V of shape [${s.join(", ")}], expected [${kvHeads}, ${B}, ${d}]`]);
}

export function createHostAttention(ops: ModelOps, o: PagedAttentionOptions): PagedAttention {
  const pool = createHostPool({ layers: o.layers, kvHeads: o.kvHeads, headDim: o.headDim, pageTokens: o.pageTokens, layout: o.layout, numPages: o.numPages });
  const d = o.headDim;
  return {
    pool,
    appendCache(seq, layer, k, v) {
      pool.append(seq, layer, ops.toF32(k), ops.toF32(v), k.shape[1]!);
    },
    appendStep(layer, seqs, k, v) {
      const B = seqs.length;
      checkStep(k, o.kvHeads, B, d);
      // [Hkv, B, d] -> per sequence [Hkv, 1, d]: all rows first (one allocation), then one write per sequence.
      const kb = swap01(ops.toF32(k), o.kvHeads, B, d);
      const vb = swap01(ops.toF32(v), o.kvHeads, B, d);
      const G = groupsPerLayer(pool.geometry);
      // Reserve every sequence's rows first so a refusal (ZV7002) leaves no sequence half-appended.
      const need = seqs.reduce((a, s) => a + pool.growthPages(s, layer, new Array<number>(G).fill(1)), 0);
      if (need > pool.freePages) serveFail("ZV7002", [`a decode step of ${B} sequences needs ${need} page(s), ${pool.freePages} free`]);
      seqs.forEach((s, b) => pool.append(s, layer, kb.subarray(b * o.kvHeads * d, (b + 1) * o.kvHeads * d), vb.subarray(b * o.kvHeads * d, (b + 1) * o.kvHeads * d), 1));
    },
    attend(layer, seqs, q, scale) {
      const B = seqs.length;
      const qb = swap01(ops.toF32(q), o.heads, B, d);
      const out = pagedDecodeReference({ geometry: pool.geometry, k: pool.storage.k, v: pool.storage.v, tables: pool.tables(seqs, layer), q: qb, Hq: o.heads, scale });
      return ops.fromF32([o.heads, B, d], swap01(Float32Array.from(out), B, o.heads, d));
    },
    dispose: () => pool.dispose(),
  };
}
