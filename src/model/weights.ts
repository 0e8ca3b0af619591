// The tensors a LLaVA forward needs, by transformers-5 name and expected shape, checked and uploaded once.
// Only the vision layers up to the deepest feature layer are read (the rest never influence the output).
import type { LlavaConfig } from "./config.ts";
import { LlavaError } from "./errors.ts";
import type { DTensor, HostWeight, ModelOps } from "./ops.ts";
import { byteSize } from "../io/dtype.ts";

/** What the loader reads from: A1's WeightStore (src/model/hf) or an in-memory map in tests. */
export interface WeightSource {
  has(name: string): boolean;
  get(name: string): HostWeight;
}

export interface WeightSpec {
  readonly name: string;
  readonly shape: readonly number[];
  /** Shape the backend sees (the patch conv is uploaded as a [D, C*p*p] linear). */
  readonly as?: readonly number[];
}

export const TEXT = "model.language_model.";
export const VISION = "model.vision_tower.vision_model.";
export const PROJ = "model.multi_modal_projector.";

/** hidden_states indices the features come from (hidden_states[0] is the embedding output, L + 1 entries). */
export function featureLayers(cfg: LlavaConfig): number[] {
  const L = cfg.vision.numLayers;
  const list = typeof cfg.visionFeatureLayer === "number" ? [cfg.visionFeatureLayer] : [...cfg.visionFeatureLayer];
  return list.map((l) => {
    const i = l < 0 ? L + 1 + l : l;
    if (!Number.isInteger(i) || i < 0 || i > L) throw new LlavaError("ZV6103", [`vision_feature_layer ${l}`, `the vision tower has ${L} layers (hidden states 0..${L})`]);
    return i;
  });
}

export function weightSpecs(cfg: LlavaConfig): WeightSpec[] {
  const t = cfg.text;
  const v = cfg.vision;
  const H = t.hiddenSize, d = t.headDim, I = t.intermediateSize;
  const specs: WeightSpec[] = [];
  const add = (name: string, shape: number[], as?: number[]): void => void specs.push(as ? { name, shape, as } : { name, shape });
  add(`${TEXT}embed_tokens.weight`, [t.vocabSize, H]);
  for (let l = 0; l < t.numLayers; l++) {
    const p = `${TEXT}layers.${l}.`;
    add(`${p}input_layernorm.weight`, [H]);
    add(`${p}post_attention_layernorm.weight`, [H]);
    for (const [x, rows] of [["q", t.numHeads * d], ["k", t.numKvHeads * d], ["v", t.numKvHeads * d]] as const) {
      add(`${p}self_attn.${x}_proj.weight`, [rows, H]);
      if (t.attentionBias) add(`${p}self_attn.${x}_proj.bias`, [rows]);
    }
    add(`${p}self_attn.o_proj.weight`, [H, t.numHeads * d]);
    if (t.attentionBias) add(`${p}self_attn.o_proj.bias`, [H]);
    for (const [x, shape] of [["gate", [I, H]], ["up", [I, H]], ["down", [H, I]]] as const) {
      add(`${p}mlp.${x}_proj.weight`, [...shape]);
      if (t.mlpBias) add(`${p}mlp.${x}_proj.bias`, [shape[0]]);
    }
  }
  add(`${TEXT}norm.weight`, [H]);
  add("lm_head.weight", [t.vocabSize, H]);

  const D = v.hiddenSize, P = v.patchSize, C = v.numChannels;
  const np = (v.imageSize / P) ** 2;
  add(`${VISION}embeddings.patch_embedding.weight`, [D, C, P, P], [D, C * P * P]);
  add(`${VISION}embeddings.class_embedding`, [D], [1, D]);
  add(`${VISION}embeddings.position_embedding.weight`, [np + 1, D]);
  add(`${VISION}pre_layrnorm.weight`, [D]);
  add(`${VISION}pre_layrnorm.bias`, [D]);
  const deepest = Math.max(...featureLayers(cfg));
  for (let l = 0; l < deepest; l++) {
    const p = `${VISION}encoder.layers.${l}.`;
    for (const x of ["q", "k", "v", "out"]) {
      add(`${p}self_attn.${x}_proj.weight`, [D, D]);
      add(`${p}self_attn.${x}_proj.bias`, [D]);
    }
    for (const x of ["layer_norm1", "layer_norm2"]) {
      add(`${p}${x}.weight`, [D]);
      add(`${p}${x}.bias`, [D]);
    }
    add(`${p}mlp.fc1.weight`, [v.intermediateSize, D]);
    add(`${p}mlp.fc1.bias`, [v.intermediateSize]);
    add(`${p}mlp.fc2.weight`, [D, v.intermediateSize]);
    add(`${p}mlp.fc2.bias`, [D]);
  }
  const Din = D * featureLayers(cfg).length;
  add(`${PROJ}linear_1.weight`, [H, Din]);
  add(`${PROJ}linear_2.weight`, [H, H]);
  if (cfg.multimodalProjectorBias) {
    add(`${PROJ}linear_1.bias`, [H]);
    add(`${PROJ}linear_2.bias`, [H]);
  }
  if (cfg.modelType === "llava_next") add("model.image_newline", [H], [1, H]);
  return specs;
}

export class Weights {
  private readonly map = new Map<string, DTensor>();
  constructor(private readonly ops: ModelOps) {}
  set(name: string, t: DTensor): void {
    this.map.set(name, t);
  }
  get(name: string): DTensor {
    const t = this.map.get(name);
    if (!t) throw new Error(`internal: weight '${name}' was not loaded`);
    return t;
  }
  maybe(name: string): DTensor | undefined {
    return this.map.get(name);
  }
  free(): void {
    for (const t of this.map.values()) this.ops.free(t);
    this.map.clear();
  }
}

/** Checks every tensor (name, shape) and uploads it; `onProgress(done, total)` after each. */
export function loadWeights(ops: ModelOps, cfg: LlavaConfig, src: WeightSource, where: string, onProgress?: (done: number, total: number) => void): Weights {
  const specs = weightSpecs(cfg);
  for (const s of specs) {
    const name = s.name === "lm_head.weight" && !src.has(s.name) && cfg.text.tieWordEmbeddings ? `${TEXT}embed_tokens.weight` : s.name;
    if (!src.has(name)) throw new LlavaError("ZV6101", [s.name, where]);
  }
  const w = new Weights(ops);
  const nFeat = featureLayers(cfg).length;
  let done = 0;
  for (const s of specs) {
    const name = s.name === "lm_head.weight" && !src.has(s.name) ? `${TEXT}embed_tokens.weight` : s.name;
    const host = src.get(name);
    if (host.shape.join() !== s.shape.join()) throw new LlavaError("ZV6102", [s.name, host.shape.join(", "), s.shape.join(", ")]);
    if (s.name === `${PROJ}linear_1.weight` && nFeat > 1) {
      // Several feature layers: the projector's input is their concatenation, so linear_1 is split into one column
      // block per layer and the blocks' products are summed (no column concatenation op needed).
      for (let l = 0; l < nFeat; l++) w.set(`${s.name}#${l}`, ops.upload(columnBlock(host, l, nFeat)));
    } else w.set(s.name, ops.upload(s.as ? { dtype: host.dtype, shape: s.as, bytes: host.bytes } : host));
    onProgress?.(++done, specs.length);
  }
  return w;
}

/** Columns [l*C/k, (l+1)*C/k) of a 2-D weight. */
function columnBlock(host: HostWeight, l: number, k: number): HostWeight {
  const [R, C] = host.shape as [number, number];
  const c = C / k;
  const width = byteSize(host.dtype);
  const bytes = new Uint8Array(R * c * width);
  for (let r = 0; r < R; r++) bytes.set(host.bytes.subarray((r * C + l * c) * width, (r * C + (l + 1) * c) * width), r * c * width);
  return { dtype: host.dtype, shape: [R, c], bytes };
}
