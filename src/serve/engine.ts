// The serving engine over the LLaVA model (src/model): chat messages -> token ids (+ one image), prefill of one
// prompt into the paged pool (dense, or ZipVL: only each layer's kept K/V reach the pool), and a batched decode
// step over any set of live sequences, each at its own original position. Greedy (argmax), so an answer does not
// depend on its batch: every op is row-wise, and attention reads only the sequence's own pages.
//
// The decoder layers are src/model/text.ts's (decoderLayers, prefillAttention) with the pool in place of
// per-sequence caches: prefill hands each layer's kept K/V to the pool as soon as the layer ran (never all layers'
// caches at once), decode runs B rows at once with the pool's paged attention, through a step runner (src/serve/
// step.ts: eager, or on cuda one CUDA graph per batch bucket).
import type { OpsMemory } from "../backends/cuda/model-pool.ts";
import type { LlavaConfig, TextConfig } from "../model/config.ts";
import { loadConfig, loadImage, loadProcessorConfig, loadTokenizer, openWeights, preprocess, anyresGridShape, expandImageTokens } from "../model/hf/index.ts";
import type { ChatMessage, ChatTokenizer, ProcessorConfig } from "../model/hf/index.ts";
import type { DTensor, ModelOps, Policy } from "../model/ops.ts";
import { checkRope, ropeType } from "../model/rope.ts";
import { argmax, argmaxRows } from "../model/sampling.ts";
import { decoderLayers, finalNorm, logits, normedLogits, prefillAttention, type LayerAttention } from "../model/text.ts";
import { imageFeatures, type ImageInput } from "../model/vision.ts";
import { loadWeights, TEXT, type Weights } from "../model/weights.ts";
import type { PagedAttention } from "./attention.ts";
import { ServeError, serveFail } from "./errors.ts";
import { RuntimeError } from "../runtime/errors.ts";
import { fmtBytes, prefillBytes, type MemoryPlan, type PrefillFit } from "./planner.ts";
import type { ChatEngine } from "./http.ts";
import type { LayerStat } from "./scheduler.ts";
import { eagerRunner, type StepModel, type StepRunner } from "./step.ts";
import { DecodeAhead } from "./ahead.ts";
import { knobs } from "../knobs.ts";

/** A chat message whose image parts carry their bytes (or a path), as the HTTP layer parsed them. */
export interface ServeMessage {
  readonly role: string;
  readonly content: readonly ({ readonly type: "text"; readonly text: string } | { readonly type: "image"; readonly image: Uint8Array | string; readonly where: [number, number] })[];
}

export interface Prepared {
  readonly ids: Int32Array;
  readonly image?: ImageInput;
}

export interface EngineOptions {
  readonly policy?: Policy;
  readonly modelId: string;
  /** Decode steps through the attention's step runner (CUDA graphs on cuda; default true); false: eager. */
  readonly graphs?: boolean;
  /** Where one-line notices go (e.g. a failed graph capture); default stderr. */
  readonly notice?: (line: string) => void;
}

export interface LoadedCheckpoint {
  readonly cfg: LlavaConfig;
  readonly tok: ChatTokenizer;
  readonly proc: ProcessorConfig;
  readonly w: Weights;
  readonly weightBytes: number;
}

export function loadCheckpoint(ops: ModelOps, dir: string): LoadedCheckpoint {
  const cfg = loadConfig(dir);
  checkRope(cfg.text);
  // Dynamic NTK scaling makes the rotary frequencies depend on each sequence's length: one batched rope call
  // could not serve sequences of different lengths the way batch-1 decoding does.
  if (ropeType(cfg.text) === "dynamic") serveFail("ZV7040", [`${dir}: dynamic RoPE scaling is not supported by batched serving`]);
  const tok = loadTokenizer(dir);
  const store = openWeights(dir, { tieWordEmbeddings: cfg.text.tieWordEmbeddings });
  let weightBytes = 0;
  const counting = { has: (n: string) => store.has(n), get: (n: string) => { const h = store.get(n); weightBytes += h.bytes.length; return h; } };
  const w = loadWeights(ops, cfg, counting, dir);
  return { cfg, tok, proc: loadProcessorConfig(dir), w, weightBytes };
}

export class LlavaEngine implements ChatEngine<Prepared> {
  readonly pool;
  /** Runs the batched decode steps (eager, or replayed CUDA graphs). */
  readonly steps: StepRunner;
  /** The same steps op by op (benchmarks compare it with `steps`). */
  readonly eager: StepRunner;
  /** Greedy decode with a step in flight, where the runner samples on the device (knobs.decodeAhead). */
  readonly ahead: DecodeAhead | null;
  constructor(
    readonly ops: ModelOps,
    readonly ckpt: LoadedCheckpoint,
    readonly attn: PagedAttention,
    readonly plan: MemoryPlan,
    readonly opts: EngineOptions,
  ) {
    this.pool = attn.pool;
    const table = ckpt.w.get(`${TEXT}embed_tokens.weight`);
    const model = this.stepModel();
    const notice = opts.notice ?? ((line: string) => process.stderr.write(`${line}\n`));
    this.eager = eagerRunner(ops, attn, model, table);
    this.steps = opts.graphs !== false && attn.stepRunner ? attn.stepRunner(model, table, notice) : this.eager;
    this.ahead = this.steps.greedy && knobs.decodeAhead !== "off" ? new DecodeAhead(this.steps.greedy, (s) => this.pool.has(s)) : null;
  }

  /** The model part of a decode step: text.ts's decoder layers over the paged attention, final norm, lm_head. */
  private stepModel(): StepModel {
    const cfg = this.cfg.text;
    const w = this.ckpt.w;
    const scale = 1 / Math.sqrt(cfg.headDim);
    return (ops, h, positions, seqs) => {
      // [H, B, d] head-major: row b of k/v is seqs[b]'s new token; attention reads each sequence's own pages.
      // Without dynamic scaling the frequencies do not depend on the length (checked at load).
      // The q/k/v projection may write the new K/V rows into the pages itself (stepSink); else appendStep does.
      const attend: LayerAttention = (l, q, k, v, appended) => {
        try {
          if (!appended) this.attn.appendStep(l, seqs, k, v);
        } finally {
          ops.free(k);
          ops.free(v);
        }
        return this.attn.attend(l, seqs, q, scale);
      };
      if (this.attn.stepSink) attend.sink = (l) => this.attn.stepSink!(l, seqs);
      const last = decoderLayers(ops, cfg, w, h, positions, Math.max(...positions) + 1, attend);
      try {
        return normedLogits(ops, cfg, w, last);
      } finally {
        ops.free(last);
      }
    };
  }

  get cfg(): LlavaConfig {
    return this.ckpt.cfg;
  }
  get modelId(): string {
    return this.opts.modelId;
  }
  get eos(): readonly number[] {
    return this.cfg.eosTokenIds;
  }

  /** Token ids (and the image) of a chat, the way the HF processor builds them; bad images are ZV7022. */
  prepare(messages: readonly ServeMessage[]): Prepared {
    const images = messages.flatMap((m) => m.content.filter((c) => c.type === "image"));
    if (images.length > 1) serveFail("ZV7021", [`${images.length} images in one request; this model takes at most one`]);
    const chat: ChatMessage[] = messages.map((m) => ({ role: m.role, content: m.content.map((c) => (c.type === "image" ? { type: "image" as const } : c)) }));
    const tok = this.ckpt.tok;
    let rendered: string;
    try {
      rendered = tok.applyChatTemplate(chat, true);
    } catch (e) {
      throw new ServeError("ZV7021", [`the chat template rejected the messages: ${(e as Error).message}`]);
    }
    const withBos = tok.bosToken !== null && rendered.startsWith(tok.bosToken);
    const ids = tok.encode(rendered, { addSpecialTokens: !withBos });
    const part = images[0];
    if (!part || part.type !== "image") return { ids };
    let pre;
    try {
      pre = preprocess(loadImage(part.image), this.ckpt.proc, this.cfg);
    } catch (e) {
      throw new ServeError("ZV7022", [part.where[0], part.where[1], (e as Error).message.replace(/^ZV\d{4}: /, "")]);
    }
    const cfg = this.cfg;
    const grid = cfg.modelType === "llava_next" && cfg.imageGridPinpoints ? anyresGridShape(pre.imageSizes, cfg.imageGridPinpoints, cfg.vision.imageSize) : undefined;
    const image: ImageInput = { pixels: pre.pixelValues, shape: pre.shape, imageSize: pre.imageSizes, ...(grid ? { grid } : {}) };
    return { ids: expandImageTokens(ids, cfg.imageTokenIndex, [pre.numImageTokens]), image };
  }

  detokenize(ids: readonly number[]): string {
    return this.ckpt.tok.decode(ids, true);
  }

  /** Token embeddings with the image features at the image-token positions (as LlavaModel.embed). */
  private embed(ids: Int32Array, image?: ImageInput): DTensor {
    const ops = this.ops;
    const imgId = this.cfg.imageTokenIndex;
    const V = this.cfg.text.vocabSize;
    const slots = ids.reduce((n, id) => n + (id === imgId ? 1 : 0), 0);
    const text = ops.embed(this.ckpt.w.get(`${TEXT}embed_tokens.weight`), ids.map((id) => (id === imgId && id >= V ? 0 : id)));
    if (!image) {
      if (slots > 0) {
        ops.free(text);
        serveFail("ZV7021", [`the prompt holds ${slots} image token(s) but no image was given`]);
      }
      return text;
    }
    const feats = imageFeatures(ops, this.cfg, this.ckpt.w, image);
    const rows = feats.shape[0]!;
    if (slots !== rows) {
      for (const t of [text, feats]) ops.free(t);
      serveFail("ZV7021", [`the prompt holds ${slots} image token(s); the image gives ${rows} feature rows`]);
    }
    const table = ops.concatRows([text, feats]);
    let k = 0;
    const out = ops.embed(table, ids.map((id, i) => (id === imgId ? ids.length + k++ : i)));
    for (const t of [text, feats, table]) ops.free(t);
    return out;
  }

  /**
   * Prefill of one prompt, layer by layer (text.ts's decoder layers with the pool as the cache): a layer's dense
   * Q/K/V live only while it runs, its kept K/V go straight into the pool, and only the last row reaches the final
   * norm, so the peak is one layer's O(n) activations beside the pool (what the planner reserves). The ops' cached
   * free buffers go back to the driver first when the device lacks the reserve; a prefill that runs out of device
   * memory anyway frees what it allocated and fails alone (ZV7040), the server and other sequences go on.
   */
  prefill(seq: string, p: Prepared): { first: number; layers: LayerStat[] } {
    const ops = this.ops;
    const memory = opsMemory(ops);
    const n = p.ids.length;
    if (memory && memory.deviceFree() < prefillBytes(this.plan.shape, n, this.plan.options.elemBytes, this.plan.options.prefill)) memory.releaseCached();
    const mark = memory?.mark() ?? 0;
    const layers: LayerStat[] = [];
    try {
      const embeds = this.embed(p.ids, p.image);
      const first = runPrefill(ops, this.cfg.text, this.ckpt.w, this.opts.policy, embeds, (l, k, v, kept) => {
        try {
          this.attn.appendCache(seq, l, k, v);
        } finally {
          ops.free(k);
          ops.free(v);
        }
        layers.push({ layer: l, kept, n: embeds.shape[0]! });
      });
      return { first, layers };
    } catch (e) {
      memory?.freeSince(mark);
      if (e instanceof RuntimeError && e.code === "ZV3004") {
        throw new ServeError("ZV7040", [`the prefill of ${n} tokens ran out of device memory (${e.message}); this request failed, the others go on`], { cause: e });
      }
      throw e;
    }
  }

  /** One batched decode step: row b is batch[b]'s token at its own original position; returns the greedy tokens.
   *  Through the step runner (CUDA graphs per batch bucket on cuda, eager elsewhere). With greedy steps on the
   *  device, `ahead` (the same sequences decode again next, see src/serve/ahead.ts) keeps the next step in flight
   *  while the host handles this one's tokens. */
  decode(batch: readonly { seq: string; token: number; position: number }[], opts: { ahead?: boolean } = {}): number[] {
    if (this.ahead) return this.ahead.decode(batch, opts.ahead === true);
    return argmaxRows(this.steps.run(batch), batch.length);
  }

  dispose(): void {
    this.ahead?.flush();
    this.steps.dispose();
    this.attn.dispose();
    this.ckpt.w.free();
  }
}

/** The device memory statistics of the ops (cuda-ops.ts `memory`); undefined on the cpu ops (host memory). */
function opsMemory(ops: ModelOps): OpsMemory | undefined {
  return (ops as ModelOps & { memory?: OpsMemory }).memory;
}

/** Every decoder layer over `embeds` (taken over), `keep` receiving each layer's kept K/V, then the final norm and
 *  the logits of the last row: the greedy first token. The engine's prefill and its calibration run this. */
function runPrefill(ops: ModelOps, cfg: TextConfig, w: Weights, policy: Policy | undefined, embeds: DTensor, keep: (l: number, k: DTensor, v: DTensor, kept: number) => void): number {
  const n = embeds.shape[0]!;
  const positions = Int32Array.from({ length: n }, (_, i) => i);
  const h = decoderLayers(ops, cfg, w, embeds, positions, n, prefillAttention(ops, policy, keep));
  try {
    // rmsNorm is row-wise: the last row alone gives the same values as slicing after normalizing all n.
    const lastRow = ops.sliceRows(h, n - 1, n);
    const normed = finalNorm(ops, cfg, w, lastRow);
    ops.free(lastRow);
    const lg = logits(ops, w, normed);
    ops.free(normed);
    return argmax(lg);
  } finally {
    ops.free(h);
  }
}

export interface CalibrateOptions {
  /** Prompt lengths to measure (default 1024, 4096, 16384: long enough that a per-token growth past the size
   *  classes shows, as seen at 128k tokens on the H200; at least two). */
  readonly lengths?: readonly number[];
}

/**
 * Measures the device peak of a prefill on these ops, for the planner's prefill reserve: the real code path
 * (runPrefill: embeddings, dense or the policy's ZipVL layers, final norm, logits) over two layers, so the second
 * layer runs beside the pool's cached buffers of the first as every later layer does, at a few n (default 1024,
 * 4096, 16384); the peak is the high-water mark of live bytes (held minus the pool's cached buffers, which the
 * meter gives back to the driver under pressure) above what the ops held before. Fits a + b n through the points,
 * or a + b n + c n^2 when the per-token slope grows past what size classes explain (superlinear). b (and c) carry
 * the size classes' slack (1/16: a class at the planned n may round up more than the measured ones), the planner
 * its margin (10%, more past the measured lengths). Also counted: the paged attention's row-index buffer (its own allocation, 8 bytes a KV head a token).
 * Returns undefined where the ops report no device memory (cpu: the planner keeps its hand formula). The image
 * tower is not part of it (a constant per image, run before the layers).
 */
export function calibratePrefill(ops: ModelOps, ckpt: LoadedCheckpoint, policy: Policy | undefined, o: CalibrateOptions = {}): PrefillFit | undefined {
  const memory = opsMemory(ops);
  if (!memory) return undefined;
  const cfg = ckpt.cfg.text;
  const lengths = [...new Set((o.lengths ?? [1024, 4096, 16384]).map((n) => Math.min(n, cfg.maxPositionEmbeddings)))].sort((a, b) => a - b);
  if (lengths.length < 2 || lengths[0]! < 1) serveFail("ZV7040", [`prefill calibration needs two distinct prompt lengths >= 1, got ${lengths.join(", ")}`]);
  const sub: TextConfig = { ...cfg, numLayers: Math.min(2, cfg.numLayers) };
  const table = ckpt.w.get(`${TEXT}embed_tokens.weight`);
  const V = cfg.vocabSize;
  const measure = (n: number): readonly [number, number] => {
    ops.sync();
    memory.releaseCached();
    const base = memory.stats().heldBytes;
    memory.resetPeak();
    const mark = memory.mark();
    try {
      const embeds = ops.embed(table, Int32Array.from({ length: n }, (_, i) => (3 + i * 7919) % V));
      runPrefill(ops, sub, ckpt.w, policy, embeds, (_, k, v) => {
        ops.free(k);
        ops.free(v);
      });
      ops.sync();
    } catch (e) {
      memory.freeSince(mark);
      throw new ServeError("ZV7040", [`calibrating the ${policy ? "ZipVL" : "dense"} prefill peak at ${n} tokens: ${(e as Error).message}`], { cause: e });
    }
    // What must fit: held minus cached at its high-water mark (cached buffers go back to the driver under pressure).
    const peak = memory.stats().peakLiveBytes - base;
    memory.releaseCached();
    return [n, peak + 8 * cfg.numKvHeads * n];
  };
  const points = lengths.length > 3 ? [lengths[0]!, lengths[lengths.length >> 1]!, lengths[lengths.length - 1]!].map(measure) : lengths.map(measure);
  return { ...fitPeak(points), points, source: `measured on ${ops.name} (${policy ? "ZipVL" : "dense"}, n = ${points.map((p) => p[0]).join(", ")}: ${points.map((p) => fmtBytes(p[1])).join(", ")})` };
}

/** Size-class slack a measured slope is scaled by (model-pool.ts sizeClass: at most 1/16 over a power of two). */
const CLASS_SLACK = 17 / 16;

/** a + b n (+ c n^2) on or above every point: see calibratePrefill. */
export function fitPeak(points: readonly (readonly [number, number])[]): { a: number; b: number; c: number } {
  const slope = (i: number): number => (points[i + 1]![1] - points[i]![1]) / (points[i + 1]![0] - points[i]![0]);
  let b = Math.max(0, ...points.slice(0, -1).map((_, i) => slope(i)));
  let c = 0;
  if (points.length >= 3) {
    const [s1, s2] = [slope(0), slope(points.length - 2)];
    if (s1 > 0 && s2 > 1.15 * s1) {
      // Superlinear: the parabola through the first, a middle and the last point, its slope at n = 0 kept >= 0.
      const [[n1], , [n3]] = [points[0]!, points[1]!, points[points.length - 1]!];
      c = (s2 - s1) / (n3! - n1!);
      b = Math.max(0, s1 - c * (n1! + points[1]![0]));
    }
  }
  b *= CLASS_SLACK;
  c *= CLASS_SLACK;
  const a = Math.max(...points.map(([n, y]) => y - b * n - c * n * n));
  return { a, b, c };
}
