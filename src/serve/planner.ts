// Memory planning for serving: how the device memory left after the weights splits into the prefill activation
// reserve (one layer at a time) and the paged KV pool, how many sequences and tokens fit at the expected kept
// ratio, and which requests can never be served (rejected with a coded error BEFORE any work).
//
// Prefill runs layer by layer: a layer's dense Q/K/V exist only while that layer runs, and only its kept K/V
// (ZipVL's selection) outlive it, written into the pool. The peak of a prompt of n tokens is therefore the pool
// plus ONE layer's activations, which are O(n) per layer for ZipVL (token-sparse attention never builds an n x n
// matrix; the probe scores are |P| x n):
//   hidden states h, x, h1, attention output rows    4 * n * H
//   q, o [Hq, n, d]; k, v [Hkv, n, d]                (2 Hq + 2 Hkv) * n * d
//   MLP gate, up, silu(gate) * up                    3 * n * I
// elements of the compute dtype, plus f32 selection buffers (scores, normalized scores, order: 4 words per token)
// and the kept K/V of the current layer before it moves to the pool (at most 2 Hkv n d).
// That hand formula is only the fallback: on cuda the engine measures the real peak (the ops' device high-water
// mark over the real prefill code path at a few small n, src/serve/engine.ts calibratePrefill) and the planner
// reserves the fitted bytes(n) = a + b n (+ c n^2 if the measurements were superlinear) with a 10% margin. The
// real peak holds more than the formula: head-major copies, RoPE outputs, the pipeline's full-size o/K/V, and the
// buffer pool's size classes and cached free buffers of the previous layer.
import { serveFail } from "./errors.ts";
import type { PageLayout } from "./pool.ts";

export interface ModelShape {
  readonly layers: number;
  readonly hidden: number;
  readonly intermediate: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly vocab: number;
  readonly maxPositions: number;
}

export interface PlanOptions {
  /** Bytes the process may still use (device: free memory after the weights were loaded). */
  readonly freeBytes: number;
  /** Bytes of one element of activations and cached K/V (f32 4, bf16/f16 2). */
  readonly elemBytes: number;
  readonly pageTokens: number;
  readonly layout: PageLayout;
  /** Expected mean kept ratio of a ZipVL prompt (the paper: 0.367 on LLaVA-Next-13B); 1 for dense serving. */
  readonly keptRatio: number;
  /** Whether prompts are pruned at all (dense serving keeps every token in every layer). */
  readonly sparse: boolean;
  /** Longest prompt to reserve prefill activations for (default: what a quarter of the memory allows). */
  readonly maxPromptTokens?: number;
  readonly maxBatch: number;
  /** Fraction of freeBytes left untouched (allocator slack, workspaces); default 0.05. */
  readonly headroom?: number;
  /** The measured prefill peak (engine.ts calibratePrefill); absent: the hand formula. */
  readonly prefill?: PrefillFit;
}

/** Peak device bytes of a prefill of n tokens, fitted from measurements: a + b n + c n^2 (before the margin). */
export interface PrefillFit {
  readonly a: number;
  readonly b: number;
  readonly c: number;
  /** The (n, bytes) measurements the fit came from. */
  readonly points: readonly (readonly [number, number])[];
  /** One line on where the numbers come from (the report lines of the plan). */
  readonly source: string;
}

/** Margin on a calibrated prefill peak within the measured lengths. */
export const PREFILL_MARGIN = 1.1;
/** Extra margin per doubling of n past the longest measured length, at most PREFILL_EXTRAPOLATION_CAP in all: on the
 *  H100 a ZipVL prefill of 131072 tokens peaked at 31.9 GiB, 17% over the line fitted through 1024..16384 tokens
 *  (three doublings out), which this margin (+15% there, 25% in all) covers. */
export const PREFILL_MARGIN_PER_DOUBLING = 0.05;
export const PREFILL_EXTRAPOLATION_CAP = 1.3;

/** The margin a calibrated prefill of n tokens is reserved with. */
export function prefillMargin(n: number, fit: PrefillFit): number {
  const longest = Math.max(1, ...fit.points.map((p) => p[0]));
  const doublings = n > longest ? Math.log2(n / longest) : 0;
  return Math.min(PREFILL_EXTRAPOLATION_CAP, PREFILL_MARGIN + PREFILL_MARGIN_PER_DOUBLING * doublings);
}

export interface MemoryPlan {
  readonly shape: ModelShape;
  readonly options: PlanOptions;
  readonly pageBytes: number;
  readonly numPages: number;
  readonly poolBytes: number;
  readonly activationBytes: number;
  readonly maxPromptTokens: number;
  /** K+V bytes of one token in all layers. */
  readonly kvBytesPerToken: number;
}

export function kvBytesPerToken(s: ModelShape, elemBytes: number): number {
  return 2 * s.layers * s.kvHeads * s.headDim * elemBytes;
}

/** Bytes to reserve for a prefill of n tokens: the calibrated fit with its margin, else the hand formula. */
export function prefillBytes(s: ModelShape, n: number, elemBytes: number, fit?: PrefillFit): number {
  if (!fit) return prefillActivationBytes(s, n, elemBytes);
  return Math.ceil(prefillMargin(n, fit) * Math.max(0, fit.a + fit.b * n + fit.c * n * n));
}

/** Peak activation bytes of one prefill layer over n tokens (the hand formula: the fallback without calibration). */
export function prefillActivationBytes(s: ModelShape, n: number, elemBytes: number): number {
  const perToken = (4 * s.hidden + (2 * s.heads + 4 * s.kvHeads) * s.headDim + 3 * s.intermediate) * elemBytes + 16;
  // The logits of the last position and the embedding table row lookups are negligible; the vocab-sized logits of
  // one row per sequence are counted per batch entry.
  return n * perToken + 4 * s.vocab;
}

export function planMemory(shape: ModelShape, o: PlanOptions): MemoryPlan {
  for (const [k, v] of Object.entries({ freeBytes: o.freeBytes, elemBytes: o.elemBytes, pageTokens: o.pageTokens, maxBatch: o.maxBatch })) {
    if (!Number.isFinite(v) || v <= 0) serveFail("ZV7010", [`${k} must be positive, got ${v}`]);
  }
  if (!(o.keptRatio > 0 && o.keptRatio <= 1)) serveFail("ZV7010", [`the expected kept ratio must be in (0, 1], got ${o.keptRatio}`]);
  const usable = Math.floor(o.freeBytes * (1 - (o.headroom ?? 0.05)));
  const heads = o.layout === "per-layer" ? shape.kvHeads : 1;
  const pageBytes = 2 * heads * o.pageTokens * shape.headDim * o.elemBytes;
  const prefill = (n: number): number => prefillBytes(shape, n, o.elemBytes, o.prefill);
  // Decode activations of a full batch are tiny next to a prefill; the logits rows are not. A prefill runs between
  // decode steps whose buffers (and captured steps' private pools) stay held, so the two add up.
  const decodeBytes = o.maxBatch * (4 * shape.vocab + 8 * (shape.hidden + shape.intermediate) * o.elemBytes);
  const maxPrompt = o.maxPromptTokens ?? longestWithin(Math.floor(usable / 4), shape.maxPositions, prefill);
  const activationBytes = prefill(maxPrompt) + decodeBytes;
  const poolBytes = usable - activationBytes;
  const numPages = Math.floor(poolBytes / pageBytes);
  if (maxPrompt < 1 || numPages < 1) {
    serveFail("ZV7010", [`${fmtBytes(o.freeBytes)} free cannot hold the prefill activations of ${maxPrompt} tokens (${fmtBytes(activationBytes)}) and a KV page (${fmtBytes(pageBytes)})`]);
  }
  return { shape, options: o, pageBytes, numPages, poolBytes: numPages * pageBytes, activationBytes, maxPromptTokens: maxPrompt, kvBytesPerToken: kvBytesPerToken(shape, o.elemBytes) };
}

/** The longest n in [0, max] whose bytes(n) (increasing) stays within `budget`. */
function longestWithin(budget: number, max: number, bytes: (n: number) => number): number {
  let lo = 0;
  let hi = max;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (bytes(mid) <= budget) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Pages a sequence of `tokens` cached tokens in every layer occupies. */
export function pagesForTokens(p: MemoryPlan, tokens: number): number {
  const groups = p.options.layout === "per-layer" ? 1 : p.shape.kvHeads;
  return p.shape.layers * groups * Math.ceil(tokens / p.options.pageTokens);
}

/** Expected pages of a request: its prompt kept at the expected ratio (dense: all of it) plus its new tokens. */
export function expectedPages(p: MemoryPlan, promptTokens: number, maxTokens: number): number {
  const kept = p.options.sparse ? Math.max(1, Math.ceil(p.options.keptRatio * promptTokens)) : promptTokens;
  return pagesForTokens(p, kept + maxTokens);
}

/**
 * Rejects a request that can never run, before any work: a prompt past the positions of the model or past the
 * prefill activation reserve, or a cache (dense, or pruned at the expected ratio) larger than the whole pool.
 */
export function checkRequest(p: MemoryPlan, promptTokens: number, maxTokens: number): void {
  const n = promptTokens;
  if (n < 1) serveFail("ZV7011", [n, "the prompt is empty"]);
  if (n + maxTokens > p.shape.maxPositions) serveFail("ZV7012", [maxTokens, `${n} prompt tokens + ${maxTokens} new exceed the model's ${p.shape.maxPositions} positions`]);
  if (n > p.maxPromptTokens) {
    serveFail("ZV7011", [n, `prefill runs layer by layer within ${fmtBytes(p.activationBytes)} of activations, enough for ${p.maxPromptTokens} tokens (${fmtBytes(prefillBytes(p.shape, n, p.options.elemBytes, p.options.prefill))} needed, ${p.options.prefill ? "measured" : "estimated"})`]);
  }
  const need = expectedPages(p, n, maxTokens);
  if (need > p.numPages) {
    const what = p.options.sparse ? `its KV cache pruned to the expected ${(100 * p.options.keptRatio).toFixed(1)}%` : "its dense KV cache";
    serveFail("ZV7011", [n, `${what} plus ${maxTokens} new tokens needs ${need} pages (${fmtBytes(need * p.pageBytes)}), the pool has ${p.numPages} (${fmtBytes(p.poolBytes)})`]);
  }
}

/** Sequences of `promptTokens` + `maxTokens` that fit in the pool at once (the planner's batch estimate). */
export function sequencesThatFit(p: MemoryPlan, promptTokens: number, maxTokens: number): number {
  return Math.min(p.options.maxBatch, Math.floor(p.numPages / expectedPages(p, promptTokens, maxTokens)));
}

export function describePlan(p: MemoryPlan): string {
  const o = p.options;
  const tokens = Math.floor(p.poolBytes / p.kvBytesPerToken);
  return [
    `KV pool ${fmtBytes(p.poolBytes)}: ${p.numPages} pages of ${o.pageTokens} tokens (${fmtBytes(p.pageBytes)}, ${o.layout}), ${tokens} cached tokens in all layers`,
    `prefill reserve ${fmtBytes(p.activationBytes)}: prompts up to ${p.maxPromptTokens} tokens, layer by layer`,
    o.prefill
      ? `prefill peak ${o.prefill.source}: ${fmtBytes(o.prefill.a)} + ${(o.prefill.b / 1024).toFixed(1)} KiB/token${o.prefill.c > 0 ? ` + ${o.prefill.c.toExponential(2)} B/token^2` : ""}, +${Math.round((prefillMargin(p.maxPromptTokens, o.prefill) - 1) * 100)}% margin at ${p.maxPromptTokens} tokens`
      : "prefill peak estimated by the hand formula (no device calibration: host memory on cpu)",
    `${o.sparse ? `ZipVL at an expected kept ratio of ${o.keptRatio}` : "dense"}: ${tokens > 0 ? Math.floor(tokens / Math.max(1, o.sparse ? o.keptRatio : 1)) : 0} prompt tokens in flight`,
  ].join("\n");
}

export function fmtBytes(b: number): string {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let x = b;
  while (Math.abs(x) >= 1024 && i < u.length - 1) (x /= 1024), i++;
  return `${x.toFixed(i ? 1 : 0)} ${u[i]}`;
}
