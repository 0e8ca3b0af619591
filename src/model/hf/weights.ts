// Safetensors weights of a HF checkpoint (model.safetensors, or shards listed by model.safetensors.index.json),
// under transformers-5 names. Only headers are read up front; get() does one positioned read per tensor.
import { closeSync, existsSync, openSync, readSync } from "node:fs";
import { join } from "node:path";
import { readSafetensorsHeader, type TensorInfo } from "../../io/safetensors.ts";
import type { LlavaConfig } from "../config.ts";
import type { HostWeight, ModelDType } from "../ops.ts";
import { loadConfig, readJsonFile } from "./config.ts";
import { ModelError } from "./errors.ts";
import type { WeightStore } from "./types.ts";

/** Pre-transformers-5 prefixes and their new names (transformers' _checkpoint_conversion_mapping for LLaVA). */
const RENAMES: readonly [string, string][] = [
  ["language_model.model.", "model.language_model."],
  ["language_model.lm_head.", "lm_head."],
  ["vision_tower.", "model.vision_tower."],
  ["multi_modal_projector.", "model.multi_modal_projector."],
  ["image_newline", "model.image_newline"],
];

/** transformers 5.17's save_pretrained of LlavaNextForConditionalGeneration (seen on the GPU host) writes the legacy
 *  prefixes but drops CLIPVisionModel's `vision_model.` level: `vision_tower.embeddings.patch_embedding.weight`.
 *  Both spellings (and the in-memory `model.vision_tower.embeddings...`) map to `model.vision_tower.vision_model.*`. */
const VISION = "model.vision_tower.";
export function normalizeWeightName(name: string): string {
  let out = name;
  for (const [from, to] of RENAMES) {
    if (name.startsWith(from)) {
      out = to + name.slice(from.length);
      break;
    }
  }
  if (out.startsWith(VISION) && !out.startsWith(VISION + "vision_model.")) out = VISION + "vision_model." + out.slice(VISION.length);
  return out;
}

const LM_HEAD = "lm_head.weight";
const EMBED = "model.language_model.embed_tokens.weight";
const FLOAT: readonly string[] = ["f32", "f16", "bf16"];

interface Entry {
  readonly file: string;
  readonly stored: string; // name in the file
  readonly info: TensorInfo;
  readonly dataStart: number;
}

/** The safetensors files of a checkpoint directory. */
function shardFiles(dir: string): string[] {
  const single = join(dir, "model.safetensors");
  const index = join(dir, "model.safetensors.index.json");
  if (existsSync(index)) {
    const json = readJsonFile(index) as { weight_map?: unknown };
    const map = json?.weight_map;
    if (typeof map !== "object" || map === null || Array.isArray(map)) throw new ModelError("ZV6007", [index, "missing \"weight_map\" object"]);
    const files = [...new Set(Object.values(map as Record<string, unknown>))];
    for (const f of files) {
      if (typeof f !== "string" || f.includes("/") || f.includes("\\")) throw new ModelError("ZV6007", [index, `bad shard file name ${JSON.stringify(f)}`]);
      if (!existsSync(join(dir, f))) throw new ModelError("ZV6007", [index, `shard "${f}" does not exist`]);
    }
    return (files as string[]).sort();
  }
  if (existsSync(single)) return ["model.safetensors"];
  throw new ModelError("ZV6006", [dir]);
}

/** Opens DIR's weights. lm_head.weight falls back to the input embeddings when the text model ties them
 *  (opts.tieWordEmbeddings, by default read from DIR/config.json). */
export function openWeights(dir: string, opts: { readonly tieWordEmbeddings?: boolean } = {}): WeightStore {
  const entries = new Map<string, Entry>();
  for (const file of shardFiles(dir)) {
    const path = join(dir, file);
    const header = readSafetensorsHeader(path);
    for (const [stored, info] of header.tensors) {
      const name = normalizeWeightName(stored);
      const prev = entries.get(name);
      if (prev !== undefined) throw new ModelError("ZV6007", [dir, `tensor "${name}" stored twice (${prev.file}: "${prev.stored}", ${file}: "${stored}")`]);
      entries.set(name, { file: path, stored, info, dataStart: header.dataStart });
    }
  }
  const tie = opts.tieWordEmbeddings ?? (existsSync(join(dir, "config.json")) ? loadConfig(dir).text.tieWordEmbeddings : false);
  if (tie && !entries.has(LM_HEAD) && entries.has(EMBED)) entries.set(LM_HEAD, entries.get(EMBED)!);
  const sorted = [...entries.keys()].sort();

  const entry = (name: string): Entry => {
    const e = entries.get(name);
    if (e === undefined) throw new ModelError("ZV6008", [name, dir]);
    if (!FLOAT.includes(e.info.dtype)) throw new ModelError("ZV6010", [name, e.info.dtype]);
    return e;
  };
  return {
    dir,
    names: () => [...sorted],
    has: (name) => entries.has(name),
    info: (name) => {
      const e = entry(name);
      return { dtype: e.info.dtype as ModelDType, shape: e.info.shape };
    },
    get: (name): HostWeight => {
      const e = entry(name);
      const [begin, end] = e.info.dataOffsets;
      const bytes = new Uint8Array(end - begin);
      let fd: number;
      try {
        fd = openSync(e.file, "r");
      } catch (err) {
        throw new ModelError("ZV6001", [e.file, String(err)], { cause: err });
      }
      try {
        let done = 0;
        while (done < bytes.length) {
          const n = readSync(fd, bytes, done, bytes.length - done, e.dataStart + begin + done);
          if (n === 0) throw new ModelError("ZV6001", [e.file, `tensor "${e.stored}" is truncated`]);
          done += n;
        }
      } finally {
        closeSync(fd);
      }
      return { dtype: e.info.dtype as ModelDType, shape: e.info.shape, bytes };
    },
  };
}

/** hidden_states[k] is the output of k encoder layers, so the deepest requested feature layer bounds what runs. */
export function visionLayersNeeded(config: LlavaConfig): number {
  const layers = Array.isArray(config.visionFeatureLayer) ? config.visionFeatureLayer : [config.visionFeatureLayer as number];
  return Math.max(...layers.map((l) => (l < 0 ? config.vision.numLayers + 1 + l : l)));
}

/** Every tensor the forward pass reads, with its shape (HF nn.Linear weights are [out, in]). */
export function expectedWeights(config: LlavaConfig): Map<string, readonly number[]> {
  const m = new Map<string, readonly number[]>();
  const t = config.text;
  const v = config.vision;
  const lm = "model.language_model";
  m.set(`${lm}.embed_tokens.weight`, [t.vocabSize, t.hiddenSize]);
  const q = t.numHeads * t.headDim;
  const kv = t.numKvHeads * t.headDim;
  for (let i = 0; i < t.numLayers; i++) {
    const p = `${lm}.layers.${i}`;
    const lin = (name: string, out: number, inp: number, bias: boolean) => {
      m.set(`${p}.${name}.weight`, [out, inp]);
      if (bias) m.set(`${p}.${name}.bias`, [out]);
    };
    lin("self_attn.q_proj", q, t.hiddenSize, t.attentionBias);
    lin("self_attn.k_proj", kv, t.hiddenSize, t.attentionBias);
    lin("self_attn.v_proj", kv, t.hiddenSize, t.attentionBias);
    lin("self_attn.o_proj", t.hiddenSize, q, t.attentionBias);
    lin("mlp.gate_proj", t.intermediateSize, t.hiddenSize, t.mlpBias);
    lin("mlp.up_proj", t.intermediateSize, t.hiddenSize, t.mlpBias);
    lin("mlp.down_proj", t.hiddenSize, t.intermediateSize, t.mlpBias);
    m.set(`${p}.input_layernorm.weight`, [t.hiddenSize]);
    m.set(`${p}.post_attention_layernorm.weight`, [t.hiddenSize]);
  }
  m.set(`${lm}.norm.weight`, [t.hiddenSize]);
  m.set(LM_HEAD, [t.vocabSize, t.hiddenSize]);

  const vm = "model.vision_tower.vision_model";
  const side = Math.floor(v.imageSize / v.patchSize);
  m.set(`${vm}.embeddings.class_embedding`, [v.hiddenSize]);
  m.set(`${vm}.embeddings.patch_embedding.weight`, [v.hiddenSize, v.numChannels, v.patchSize, v.patchSize]);
  m.set(`${vm}.embeddings.position_embedding.weight`, [side * side + 1, v.hiddenSize]);
  m.set(`${vm}.pre_layrnorm.weight`, [v.hiddenSize]); // (sic: HF's CLIP spells it pre_layrnorm)
  m.set(`${vm}.pre_layrnorm.bias`, [v.hiddenSize]);
  for (let i = 0; i < visionLayersNeeded(config); i++) {
    const p = `${vm}.encoder.layers.${i}`;
    for (const proj of ["q_proj", "k_proj", "v_proj", "out_proj"]) {
      m.set(`${p}.self_attn.${proj}.weight`, [v.hiddenSize, v.hiddenSize]);
      m.set(`${p}.self_attn.${proj}.bias`, [v.hiddenSize]);
    }
    for (const ln of ["layer_norm1", "layer_norm2"]) {
      m.set(`${p}.${ln}.weight`, [v.hiddenSize]);
      m.set(`${p}.${ln}.bias`, [v.hiddenSize]);
    }
    m.set(`${p}.mlp.fc1.weight`, [v.intermediateSize, v.hiddenSize]);
    m.set(`${p}.mlp.fc1.bias`, [v.intermediateSize]);
    m.set(`${p}.mlp.fc2.weight`, [v.hiddenSize, v.intermediateSize]);
    m.set(`${p}.mlp.fc2.bias`, [v.hiddenSize]);
  }

  const pr = "model.multi_modal_projector";
  const nFeat = Array.isArray(config.visionFeatureLayer) ? config.visionFeatureLayer.length : 1;
  m.set(`${pr}.linear_1.weight`, [t.hiddenSize, v.hiddenSize * nFeat]);
  m.set(`${pr}.linear_2.weight`, [t.hiddenSize, t.hiddenSize]);
  if (config.multimodalProjectorBias) {
    m.set(`${pr}.linear_1.bias`, [t.hiddenSize]);
    m.set(`${pr}.linear_2.bias`, [t.hiddenSize]);
  }
  if (config.modelType === "llava_next") m.set("model.image_newline", [t.hiddenSize]);
  return m;
}

/** Every tensor the model needs exists, is f32/f16/bf16 and has the shape the config implies. */
export function checkWeights(config: LlavaConfig, store: WeightStore): void {
  for (const [name, shape] of expectedWeights(config)) {
    if (!store.has(name)) {
      const hint = name === LM_HEAD && !config.text.tieWordEmbeddings ? " (tie_word_embeddings is false)" : "";
      throw new ModelError("ZV6008", [name, store.dir + hint]);
    }
    const got = store.info(name).shape;
    if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
      throw new ModelError("ZV6009", [name, shape.join(", "), got.join(", ")]);
    }
  }
}
