// Assembles a serving process: backend ops, checkpoint, memory plan, paged pool, engine, scheduler, HTTP app.
// Used by `zipvl serve` (src/cli/serve.ts) and the serving tests.
import { freemem } from "node:os";
import { basename, resolve } from "node:path";
import type { ModelOps, Policy } from "../model/ops.ts";
import { createHostAttention, type PagedAttention, type PagedAttentionOptions } from "./attention.ts";
import { calibratePrefill, LlavaEngine, loadCheckpoint } from "./engine.ts";
import { ServeError } from "./errors.ts";
import { createServeApp, type ServeApp } from "./http.ts";
import { describePlan, planMemory, type MemoryPlan, type ModelShape } from "./planner.ts";
import type { PageLayout } from "./pool.ts";
import { Scheduler } from "./scheduler.ts";
import { byteSize } from "../io/dtype.ts";

export interface ServerOptions {
  readonly model: string;
  readonly ops: ModelOps;
  /** undefined = dense serving. */
  readonly policy?: Policy;
  readonly maxBatch: number;
  readonly maxQueue: number;
  readonly timeoutMs: number;
  readonly maxBodyBytes?: number;
  readonly defaultMaxTokens?: number;
  readonly pageTokens?: number;
  readonly layout?: PageLayout;
  /** Bytes for the pool and prefill activations; default: the device's free memory (cuda) or half the host's. */
  readonly memoryBytes?: number;
  /** Longest prompt to plan the prefill reserve for. */
  readonly maxPromptTokens?: number;
  /** Expected mean kept ratio under the policy (default 0.4). */
  readonly keptRatio?: number;
  readonly log?: (line: string) => void;
  /** CUDA graphs for the decode steps on cuda (default true). */
  readonly graphs?: boolean;
  /** Prompt lengths the prefill peak is measured at (engine.ts calibratePrefill; default 1024, 4096, 16384). */
  readonly calibrationLengths?: readonly number[];
}

export interface RunningServer {
  readonly app: ServeApp;
  readonly engine: LlavaEngine;
  readonly scheduler: Scheduler<ReturnType<LlavaEngine["prepare"]>>;
  readonly plan: MemoryPlan;
  close(): Promise<void>;
}

type CudaAttentionFactory = (ops: ModelOps, o: PagedAttentionOptions) => PagedAttention;

async function attentionFor(ops: ModelOps): Promise<{ create: CudaAttentionFactory | typeof createHostAttention; freeBytes: () => number; elemBytes: number }> {
  if (ops.name === "cuda") {
    const m = await import("../backends/cuda/paged-serve.ts");
    return { create: m.createCudaAttention, freeBytes: () => m.deviceFreeBytes(ops), elemBytes: byteSize(ops.dtype) };
  }
  // Host pages are f32 whatever the compute dtype.
  return { create: createHostAttention, freeBytes: () => Math.floor(freemem() / 2), elemBytes: 4 };
}

export async function startServer(o: ServerOptions, listen?: { port: number; host?: string }): Promise<RunningServer & { port: number }> {
  const ops = o.ops;
  const ckpt = loadCheckpoint(ops, o.model);
  const t = ckpt.cfg.text;
  const shape: ModelShape = {
    layers: t.numLayers, hidden: t.hiddenSize, intermediate: t.intermediateSize, heads: t.numHeads, kvHeads: t.numKvHeads,
    headDim: t.headDim, vocab: t.vocabSize, maxPositions: t.maxPositionEmbeddings,
  };
  const a = await attentionFor(ops);
  const layout = o.layout ?? "per-layer";
  // The prefill reserve from the measured peak of the real code path (cuda), before the free memory is read.
  const prefill = calibratePrefill(ops, ckpt, o.policy, o.calibrationLengths ? { lengths: o.calibrationLengths } : {});
  const plan = planMemory(shape, {
    ...(prefill ? { prefill } : {}),
    freeBytes: o.memoryBytes ?? a.freeBytes(), elemBytes: a.elemBytes, pageTokens: o.pageTokens ?? 16, layout,
    keptRatio: o.policy ? (o.keptRatio ?? 0.4) : 1, sparse: o.policy !== undefined, maxBatch: o.maxBatch,
    ...(o.maxPromptTokens !== undefined ? { maxPromptTokens: o.maxPromptTokens } : {}),
  });
  const attn = a.create(ops, { layers: t.numLayers, heads: t.numHeads, kvHeads: t.numKvHeads, headDim: t.headDim, pageTokens: plan.options.pageTokens, layout, numPages: plan.numPages, maxBatch: o.maxBatch });
  const modelId = basename(resolve(o.model));
  const engine = new LlavaEngine(ops, ckpt, attn, plan, { modelId, ...(o.policy ? { policy: o.policy } : {}), ...(o.graphs === false ? { graphs: false } : {}), ...(o.log ? { notice: o.log } : {}) });
  const scheduler = new Scheduler(engine, { maxBatch: o.maxBatch, maxQueue: o.maxQueue });
  const app = createServeApp(engine, scheduler, {
    maxBodyBytes: o.maxBodyBytes ?? 32 << 20, timeoutMs: o.timeoutMs, defaultMaxTokens: o.defaultMaxTokens ?? 64, ...(o.log ? { log: o.log } : {}),
  });
  o.log?.(describePlan(plan));
  let port = 0;
  if (listen) {
    try {
      port = (await app.listen(listen.port, listen.host)).port;
    } catch (e) {
      engine.dispose();
      throw new ServeError("ZV7041", [`cannot listen on ${listen.host ?? "127.0.0.1"}:${listen.port}: ${(e as Error).message}`]);
    }
  }
  return {
    app, engine, scheduler, plan, port,
    async close() {
      await app.close();
      engine.dispose();
    },
  };
}
