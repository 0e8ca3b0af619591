// Our model against transformers' own outputs for the same checkpoint (bench/llava_parity.py writes the reference):
// logits of the prompt (last position, and every position when present) and the greedy continuation.
// The reference's input_ids and pixel_values are fed as they are, so tokenizer or image-processing differences
// cannot hide (or fake) a model difference; whether our own prompt building reproduces input_ids is reported apart.
import { existsSync, readFileSync } from "node:fs";
import { readSafetensors } from "../io/safetensors.ts";
import type { Tensor } from "../io/tensor.ts";
import type { LlavaConfig } from "./config.ts";
import { LlavaError } from "./errors.ts";
import { anyresGridShape } from "./hf/index.ts";
import type { LlavaModel } from "./llava.ts";
import type { DTensor, Policy } from "./ops.ts";
import type { ImageInput } from "./vision.ts";

export interface ParityRef {
  readonly ids: Int32Array;
  readonly image?: ImageInput;
  /** [vocab] logits of the last prompt position. */
  readonly lastLogits: Float32Array;
  /** [n, vocab] when the reference has them. */
  readonly allLogits?: Float32Array;
  /** Greedy continuation (transformers generate, do_sample False). */
  readonly greedy: readonly number[];
  /** transformers' text hidden_states.{i} [n, H] when present (embeddings first, the last after the final norm). */
  readonly hidden: readonly Float32Array[];
  readonly meta: Readonly<Record<string, unknown>>;
}

const pick = (m: ReadonlyMap<string, Tensor>, names: readonly string[]): Tensor | undefined => {
  for (const n of names) if (m.has(n)) return m.get(n);
  return undefined;
};
/** Drops leading batch dims of size 1. */
const squeeze = (shape: readonly number[], rank: number): number[] => {
  const s = [...shape];
  while (s.length > rank && s[0] === 1) s.shift();
  return s;
};

export function readParityRef(cfg: LlavaConfig, file: string, jsonFile: string): ParityRef {
  if (!existsSync(jsonFile)) throw new LlavaError("ZV6108", [jsonFile, "file not found"]);
  let meta: Record<string, unknown>;
  try {
    meta = JSON.parse(readFileSync(jsonFile, "utf8")) as Record<string, unknown>;
  } catch (e) {
    throw new LlavaError("ZV6108", [jsonFile, (e as Error).message]);
  }
  const t = readSafetensors(file).tensors;
  const idsT = pick(t, ["input_ids"]);
  if (!idsT) throw new LlavaError("ZV6108", [file, `no tensor input_ids (has: ${[...t.keys()].join(", ")})`]);
  const ids = Int32Array.from(idsT.data);
  const V = cfg.text.vocabSize;
  const lastT = pick(t, ["logits_last", "last_logits"]);
  const allT = pick(t, ["logits", "all_logits"]);
  let lastLogits: Float32Array;
  let allLogits: Float32Array | undefined;
  if (allT) {
    const s = squeeze(allT.shape, 2);
    if (s.length !== 2 || s[0] !== ids.length || s[1] !== V) throw new LlavaError("ZV6108", [file, `logits [${allT.shape}] must be [${ids.length}, ${V}]`]);
    allLogits = Float32Array.from(allT.data);
  }
  if (lastT) {
    if (lastT.data.length !== V) throw new LlavaError("ZV6108", [file, `last-position logits [${lastT.shape}] must hold ${V} values`]);
    lastLogits = Float32Array.from(lastT.data);
  } else if (allLogits) lastLogits = allLogits.slice((ids.length - 1) * V);
  else throw new LlavaError("ZV6108", [file, "no logits (logits_last or logits)"]);
  const pv = pick(t, ["pixel_values"]);
  let image: ImageInput | undefined;
  if (pv) {
    const s = squeeze(pv.shape, 4);
    if (s.length === 3) s.unshift(1);
    if (s.length !== 4) throw new LlavaError("ZV6108", [file, `pixel_values [${pv.shape}] must be [crops, C, H, W]`]);
    const sizesT = pick(t, ["image_sizes"]);
    const sizes: [number, number] = sizesT ? [sizesT.data[0]!, sizesT.data[1]!] : [cfg.vision.imageSize, cfg.vision.imageSize];
    const grid = cfg.modelType === "llava_next" && cfg.imageGridPinpoints ? anyresGridShape(sizes, cfg.imageGridPinpoints, cfg.vision.imageSize) : undefined;
    image = { pixels: Float32Array.from(pv.data), shape: s as [number, number, number, number], imageSize: sizes, ...(grid ? { grid } : {}) };
  }
  const g = meta.greedy ?? meta.greedy_tokens ?? meta.generated_ids;
  if (!Array.isArray(g) || !g.every((x) => Number.isInteger(x))) throw new LlavaError("ZV6108", [jsonFile, "no integer list 'greedy' (or 'greedy_tokens' / 'generated_ids')"]);
  const hidden: Float32Array[] = [];
  for (let i = 0; t.has(`hidden_states.${i}`); i++) hidden.push(Float32Array.from(t.get(`hidden_states.${i}`)!.data));
  return { ids, ...(image ? { image } : {}), lastLogits, ...(allLogits ? { allLogits } : {}), greedy: g as number[], hidden, meta };
}

export interface ParityResult {
  readonly mode: string;
  readonly maxAbsLast: number;
  readonly maxRelLast: number; // max |ours - ref| / max |ref|
  readonly maxAbsAll?: number;
  readonly maxRelAll?: number;
  readonly argmaxMatch: boolean;
  readonly greedyMatch: number; // leading generated tokens equal to the reference's
  readonly greedyOurs: number[];
  readonly kept: number[];
  /** Max abs error of each text hidden state against the reference's (dense only; empty without them). */
  readonly hiddenMaxAbs: number[];
}

function errs(a: Float32Array, b: Float32Array): [abs: number, rel: number] {
  if (a.length !== b.length) return [Infinity, Infinity];
  let abs = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    abs = Math.max(abs, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return [abs, scale > 0 ? abs / scale : abs];
}

export function compareToRef(model: LlavaModel, ref: ParityRef, mode: string, policy: Policy | undefined): ParityResult {
  const hiddenMaxAbs: number[] = [];
  const onHidden = (i: number, h: DTensor): void => {
    const want = ref.hidden[i];
    if (want) hiddenMaxAbs[i] = errs(model.ops.toF32(h), want)[0];
  };
  const withHidden = !policy && ref.hidden.length === model.cfg.text.numLayers + 1 ? { onHidden } : {};
  const r = model.generate(ref.ids, ref.image, { ...(policy ? { policy } : {}), ...withHidden, maxNewTokens: ref.greedy.length, allLogits: ref.allLogits !== undefined, eos: [] });
  const [maxAbsLast, maxRelLast] = errs(r.promptLogits, ref.lastLogits);
  let lead = 0;
  while (lead < ref.greedy.length && r.tokens[lead] === ref.greedy[lead]) lead++;
  const argmax = (x: Float32Array): number => x.reduce((b, v, i) => (v > x[b]! ? i : b), 0);
  const base = { mode, maxAbsLast, maxRelLast, argmaxMatch: argmax(r.promptLogits) === argmax(ref.lastLogits), greedyMatch: lead, greedyOurs: r.tokens, kept: r.layers.map((s) => s.kept), hiddenMaxAbs };
  if (!ref.allLogits || !r.allLogits) return base;
  const [maxAbsAll, maxRelAll] = errs(r.allLogits, ref.allLogits);
  return { ...base, maxAbsAll, maxRelAll };
}

export function formatParity(p: ParityResult, refGreedy: number): string {
  const all = p.maxAbsAll !== undefined ? `; every position max abs ${p.maxAbsAll.toExponential(3)} rel ${p.maxRelAll!.toExponential(3)}` : "";
  const hs = p.hiddenMaxAbs.length ? `\n       text hidden states (embeddings, layers..., final norm) max abs: ${p.hiddenMaxAbs.map((x) => x.toExponential(2)).join(" ")}` : "";
  return `${p.mode.padEnd(6)} last-position logits max abs ${p.maxAbsLast.toExponential(3)} rel ${p.maxRelLast.toExponential(3)}${all}; argmax ${p.argmaxMatch ? "matches" : "DIFFERS"}; greedy ${p.greedyMatch}/${refGreedy} tokens match${hs}`;
}
