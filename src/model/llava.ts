// A LLaVA / LLaVA-Next model on any ModelOps backend: image features merged at the image-token positions, prefill
// (dense or ZipVL per layer), then decoding on the ORIGINAL positions over the per-layer (pruned) caches.
import type { LlavaConfig } from "./config.ts";
import { LlavaError } from "./errors.ts";
import type { KvCache } from "./kv-cache.ts";
import type { DTensor, ModelOps, Policy } from "./ops.ts";
import { checkRope } from "./rope.ts";
import { createSampler, type SamplingOptions } from "./sampling.ts";
import { decodeStep, logits, prefill, type HiddenHook, type PrefillLayerStat } from "./text.ts";
import { imageFeatures, type ImageInput } from "./vision.ts";
import { loadWeights, TEXT, type WeightSource, type Weights } from "./weights.ts";

export interface GenerateOptions {
  /** Policy program per layer; undefined = dense attention and full caches. */
  readonly policy?: Policy;
  readonly maxNewTokens?: number;
  readonly sampling?: SamplingOptions;
  /** Stop ids (default: the config's eos ids). */
  readonly eos?: readonly number[];
  /** Also return the logits of every prompt position (parity checks). */
  readonly allLogits?: boolean;
  /** Called with the logits each new token is drawn from (step 0: the prompt's last position). */
  readonly onLogits?: (step: number, logits: Float32Array) => void;
  /** Prefill hidden states in transformers' hidden_states order (see text.ts HiddenHook). */
  readonly onHidden?: HiddenHook;
}

export interface GenerateResult {
  readonly tokens: number[];
  readonly stop: "eos" | "length";
  /** Logits of the last prompt position [vocab]. */
  readonly promptLogits: Float32Array;
  /** [n, vocab] when asked for. */
  readonly allLogits?: Float32Array;
  readonly layers: PrefillLayerStat[];
  readonly promptTokens: number;
  readonly prefillMs: number;
  readonly decodeMs: number;
  /** Decode forward passes timed in decodeMs (the first new token comes from the prefill logits). */
  readonly decodeSteps: number;
}

export class LlavaModel {
  private constructor(readonly cfg: LlavaConfig, readonly ops: ModelOps, readonly weights: Weights) {}
  private get w(): Weights {
    return this.weights;
  }

  static load(ops: ModelOps, cfg: LlavaConfig, src: WeightSource, where: string, onProgress?: (done: number, total: number) => void): LlavaModel {
    checkRope(cfg.text);
    if (cfg.text.numHeads % cfg.text.numKvHeads !== 0) throw new LlavaError("ZV6103", [`${cfg.text.numHeads} query heads over ${cfg.text.numKvHeads} KV heads`, "query heads must be a multiple of KV heads"]);
    return new LlavaModel(cfg, ops, loadWeights(ops, cfg, src, where, onProgress));
  }

  /** Token embeddings with the image features in place of the image tokens: [n, H]. */
  embed(ids: Int32Array, image?: ImageInput): DTensor {
    const ops = this.ops;
    const imgId = this.cfg.imageTokenIndex;
    const V = this.cfg.text.vocabSize;
    const slots = ids.reduce((n, id) => n + (id === imgId ? 1 : 0), 0);
    // Image ids may lie past the vocabulary (llava-1.5: 32000 of 32064 is inside, others are not); like transformers,
    // embed them as id 0 and overwrite.
    const text = ops.embed(this.w.get(`${TEXT}embed_tokens.weight`), ids.map((id) => (id === imgId && id >= V ? 0 : id)));
    if (!image) {
      if (slots > 0) throw new LlavaError("ZV6105", [`the prompt holds ${slots} image token(s) (id ${imgId}) but no image was given`]);
      return text;
    }
    const feats = imageFeatures(ops, this.cfg, this.w, image);
    const rows = feats.shape[0]!;
    if (slots !== rows) throw new LlavaError("ZV6105", [`the prompt holds ${slots} image token(s) (id ${imgId}); the image gives ${rows} feature rows`]);
    const n = ids.length;
    const table = ops.concatRows([text, feats]);
    let k = 0;
    const order = ids.map((id, i) => (id === imgId ? n + k++ : i));
    const out = ops.embed(table, order);
    for (const t of [text, feats, table]) ops.free(t);
    return out;
  }

  generate(ids: Int32Array, image: ImageInput | undefined, opts: GenerateOptions = {}): GenerateResult {
    const ops = this.ops;
    const cfg = this.cfg.text;
    const maxNew = opts.maxNewTokens ?? 32;
    if (!Number.isInteger(maxNew) || maxNew < 0) throw new LlavaError("ZV6106", [`--max-new-tokens must be a non-negative integer, got ${maxNew}`]);
    if (ids.length === 0) throw new LlavaError("ZV6109", ["the prompt has no tokens"]);
    const sample = createSampler(opts.sampling);
    const eos = new Set(opts.eos ?? this.cfg.eosTokenIds);
    ops.sync();
    const t0 = performance.now();
    const embeds = this.embed(ids, image);
    // Each layer's cache reserves a row per new token: decode writes in place and never regrows it.
    const pre = prefill(ops, cfg, this.w, embeds, opts.policy, { keepAll: opts.allLogits ?? false, reserve: maxNew, ...(opts.onHidden ? { onHidden: opts.onHidden } : {}) });
    const promptLogits = logits(ops, this.w, pre.last);
    ops.sync();
    const prefillMs = performance.now() - t0;
    ops.free(pre.last);
    let allLogits: Float32Array | undefined;
    if (pre.all) {
      allLogits = logits(ops, this.w, pre.all);
      ops.free(pre.all);
    }
    const caches: KvCache[] = pre.caches;
    const n = ids.length;
    const tokens: number[] = [];
    let stop: "eos" | "length" = "length";
    opts.onLogits?.(0, promptLogits);
    let next = maxNew > 0 ? sample(promptLogits) : -1;
    const t1 = performance.now();
    let steps = 0;
    while (next >= 0) {
      tokens.push(next);
      if (eos.has(next)) {
        stop = "eos";
        break;
      }
      if (tokens.length >= maxNew) break;
      const e = ops.embed(this.w.get(`${TEXT}embed_tokens.weight`), Int32Array.of(next));
      // The new token sits at its ORIGINAL position: prompt length + tokens before it, whatever the caches hold.
      const h = decodeStep(ops, cfg, this.w, e, n + tokens.length - 1, caches);
      ops.free(e);
      const lg = logits(ops, this.w, h);
      ops.free(h);
      steps++;
      opts.onLogits?.(steps, lg);
      next = sample(lg);
    }
    ops.sync();
    const decodeMs = performance.now() - t1;
    for (const c of caches) c.free();
    const base = { tokens, stop, promptLogits, layers: pre.stats, promptTokens: n, prefillMs, decodeMs, decodeSteps: steps };
    return allLogits ? { ...base, allLogits } : base;
  }

  dispose(): void {
    this.w.free();
  }
}
