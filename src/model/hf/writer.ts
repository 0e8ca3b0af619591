// Writes a small, randomly initialised LLaVA-Next checkpoint in the exact Hugging Face layout (config.json in
// transformers-5 form, safetensors under HF names, tokenizer.json + tokenizer_config.json with a LLaVA-v1.6
// [INST] chat template, preprocessor_config.json / processor_config.json, generation_config.json). Weights are
// N(0, 0.02) (norm weights 1 + N(0, 0.02), biases N(0, 0.02), so a parity test sees every tensor), seeded per
// tensor name: the same options give the same bytes.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { roundTo, byteSize } from "../../io/dtype.ts";
import { Rng } from "../../io/random.ts";
import { writeSafetensors } from "../../io/safetensors.ts";
import { makeTensor, type Tensor } from "../../io/tensor.ts";
import type { LlavaConfig } from "../config.ts";
import type { ModelDType } from "../ops.ts";
import { tokenizerJson, trainByteLevelBpe } from "./bpe.ts";
import { parseConfig } from "./config.ts";
import { ModelError } from "./errors.ts";
import type { WriteOptions } from "./types.ts";
import { expectedWeights } from "./weights.ts";

/** The LLaVA-v1.6-Mistral template (string content also accepted): images first, then text, in [INST] ... [/INST]. */
export const CHAT_TEMPLATE =
  "{% for message in messages %}" +
  "{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + (message['content'] if message['content'] is string else message['content'][0]['text']) + '\\n<</SYS>>\\n\\n' }}" +
  "{% elif message['role'] == 'user' %}{{ '[INST] ' }}" +
  "{% if message['content'] is string %}{{ message['content'] }}{% else %}" +
  "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}" +
  "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}" +
  "{% endif %}{{ ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ ' ' + (message['content'] if message['content'] is string else message['content'][0]['text']) + eos_token + ' ' }}" +
  "{% endif %}{% endfor %}";

const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD = [0.26862954, 0.26130258, 0.27577711];
const TORCH_DTYPE: Record<ModelDType, string> = { f32: "float32", f16: "float16", bf16: "bfloat16" };

/** Token ids of the written tokenizer: <unk> 0, <s> 1, </s> 2, bytes and merges 3..509, <image> 510, <pad> 511. */
export const WRITER_TOKENS = { unk: 0, bos: 1, eos: 2, image: 510, pad: 511, vocabSize: 512 } as const;

function hfConfig(o: Required<Omit<WriteOptions, "legacyNames" | "shards" | "seed">>): Record<string, unknown> {
  const s = o.imageSize;
  return {
    architectures: ["LlavaNextForConditionalGeneration"],
    model_type: "llava_next",
    dtype: TORCH_DTYPE[o.dtype],
    image_token_id: WRITER_TOKENS.image,
    image_grid_pinpoints: [[s, 2 * s], [2 * s, s], [2 * s, 2 * s], [3 * s, s], [s, 3 * s]],
    image_seq_length: (s / o.patchSize) ** 2,
    multimodal_projector_bias: true,
    projector_hidden_act: "gelu",
    tie_word_embeddings: false,
    vision_feature_layer: -2,
    vision_feature_select_strategy: "default",
    text_config: {
      model_type: "llama",
      architectures: ["LlamaForCausalLM"],
      vocab_size: WRITER_TOKENS.vocabSize,
      hidden_size: o.textHidden,
      intermediate_size: o.textIntermediate,
      num_hidden_layers: o.textLayers,
      num_attention_heads: o.textHeads,
      num_key_value_heads: o.textKvHeads,
      head_dim: o.textHidden / o.textHeads,
      hidden_act: "silu",
      max_position_embeddings: 4096,
      rms_norm_eps: 1e-5,
      rope_parameters: { rope_type: "default", rope_theta: 10000.0 },
      attention_bias: false,
      mlp_bias: false,
      tie_word_embeddings: false,
      bos_token_id: WRITER_TOKENS.bos,
      eos_token_id: WRITER_TOKENS.eos,
      pad_token_id: WRITER_TOKENS.pad,
      dtype: TORCH_DTYPE[o.dtype],
    },
    vision_config: {
      model_type: "clip_vision_model",
      hidden_size: o.visionHidden,
      intermediate_size: o.visionHidden * 4,
      num_hidden_layers: o.visionLayers,
      num_attention_heads: o.visionHeads,
      image_size: s,
      patch_size: o.patchSize,
      num_channels: 3,
      hidden_act: "quick_gelu",
      layer_norm_eps: 1e-5,
      projection_dim: o.visionHidden,
    },
    transformers_version: "5.0.0",
  };
}

/** Everything a HF checkpoint holds, not only what the forward reads: all vision layers and post_layernorm. */
function allWeights(config: LlavaConfig): Map<string, readonly number[]> {
  const full = { ...config, visionFeatureLayer: config.vision.numLayers };
  const m = expectedWeights(full);
  const d = config.vision.hiddenSize;
  m.set("model.vision_tower.vision_model.post_layernorm.weight", [d]);
  m.set("model.vision_tower.vision_model.post_layernorm.bias", [d]);
  return m;
}

/** FNV-1a of the name: a per-tensor seed, so one tensor's values do not depend on which others exist. */
function nameSeed(seed: number, name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return seed * 2 ** 32 + h;
}

function randomWeight(name: string, shape: readonly number[], dtype: ModelDType, seed: number): Tensor {
  const rng = new Rng(nameSeed(seed, name));
  const t = makeTensor(dtype, shape);
  const one = /norm[^.]*\.weight$|layernorm[^.]*\.weight$|pre_layrnorm\.weight$/.test(name) ? 1 : 0;
  for (let i = 0; i < t.data.length; i++) t.data[i] = roundTo(dtype, one + rng.normal(0, 0.02));
  return t;
}

const LEGACY: readonly [string, string][] = [
  ["model.language_model.", "language_model.model."],
  ["lm_head.", "language_model.lm_head."],
  ["model.vision_tower.", "vision_tower."],
  ["model.multi_modal_projector.", "multi_modal_projector."],
  ["model.image_newline", "image_newline"],
];
const legacyName = (n: string): string => {
  for (const [from, to] of LEGACY) if (n.startsWith(from)) return to + n.slice(from.length);
  return n;
};

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, JSON.stringify(value, null, 2) + "\n");
}

/** Writes the checkpoint into `dir` (created if needed) and returns its parsed config. */
export function writeRandomLlavaNext(dir: string, opts: WriteOptions = {}): LlavaConfig {
  const o = {
    dtype: opts.dtype ?? "f32",
    textHidden: opts.textHidden ?? 128,
    textLayers: opts.textLayers ?? 2,
    textHeads: opts.textHeads ?? 4,
    textKvHeads: opts.textKvHeads ?? 2,
    textIntermediate: opts.textIntermediate ?? 256,
    visionHidden: opts.visionHidden ?? 64,
    visionLayers: opts.visionLayers ?? 2,
    visionHeads: opts.visionHeads ?? 4,
    imageSize: opts.imageSize ?? 56,
    patchSize: opts.patchSize ?? 14,
  } as const;
  const seed = opts.seed ?? 0;
  const shards = opts.shards ?? 1;
  const bad = (why: string) => new ModelError("ZV6016", [dir, why]);
  if (o.textHidden % o.textHeads !== 0 || o.textHeads % o.textKvHeads !== 0) throw bad("textHidden must divide into textHeads, textHeads into textKvHeads");
  if (o.visionHidden % o.visionHeads !== 0) throw bad("visionHidden must divide into visionHeads");
  if (o.imageSize % o.patchSize !== 0) throw bad("imageSize must be a multiple of patchSize");
  if (!Number.isSafeInteger(shards) || shards < 1) throw bad(`shards=${shards}`);
  const json = hfConfig(o);
  const config = parseConfig(json, join(dir, "config.json"));
  try {
    mkdirSync(dir, { recursive: true });
    writeJson(join(dir, "config.json"), json);
    writeTokenizer(dir);
    writeProcessor(dir, o.imageSize, o.patchSize, json["image_grid_pinpoints"]);
    writeJson(join(dir, "generation_config.json"), {
      _from_model_config: true, bos_token_id: WRITER_TOKENS.bos, eos_token_id: WRITER_TOKENS.eos, pad_token_id: WRITER_TOKENS.pad,
    });
  } catch (e) {
    throw bad((e as Error).message);
  }

  const tensors = [...allWeights(config)].map(([name, shape]) => ({
    name: opts.legacyNames === true ? legacyName(name) : name,
    tensor: randomWeight(name, shape, o.dtype, seed),
  }));
  tensors.sort((a, b) => (a.name < b.name ? -1 : 1));
  const meta = { format: "pt" };
  if (shards === 1) {
    writeSafetensors(join(dir, "model.safetensors"), new Map(tensors.map((t) => [t.name, t.tensor])), meta);
    return config;
  }
  // Contiguous runs of names, cut where the running byte count passes k/shards of the total.
  const bytes = (t: Tensor) => t.data.length * byteSize(o.dtype);
  const total = tensors.reduce((s, t) => s + bytes(t.tensor), 0);
  const groups: (typeof tensors)[] = Array.from({ length: shards }, () => []);
  let acc = 0;
  for (const t of tensors) {
    groups[Math.min(shards - 1, Math.floor((acc * shards) / total))]!.push(t);
    acc += bytes(t.tensor);
  }
  const weightMap: Record<string, string> = {};
  groups.forEach((g, i) => {
    const file = `model-${String(i + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}.safetensors`;
    writeSafetensors(join(dir, file), new Map(g.map((t) => [t.name, t.tensor])), meta);
    for (const t of g) weightMap[t.name] = file;
  });
  writeJson(join(dir, "model.safetensors.index.json"), { metadata: { total_size: total }, weight_map: weightMap });
  return config;
}

function writeTokenizer(dir: string): void {
  const T = WRITER_TOKENS;
  const bpe = trainByteLevelBpe(3, T.image - 3 - 256);
  if (bpe.vocab.size !== T.image - 3) throw new Error(`BPE vocabulary has ${bpe.vocab.size} tokens, expected ${T.image - 3}`);
  const specials = [
    { id: T.unk, content: "<unk>" }, { id: T.bos, content: "<s>" }, { id: T.eos, content: "</s>" },
    { id: T.image, content: "<image>" }, { id: T.pad, content: "<pad>" },
  ];
  writeJson(join(dir, "tokenizer.json"), tokenizerJson(bpe, specials, specials[1]!));
  writeJson(join(dir, "tokenizer_config.json"), {
    tokenizer_class: "PreTrainedTokenizerFast",
    processor_class: "LlavaNextProcessor",
    bos_token: "<s>",
    eos_token: "</s>",
    unk_token: "<unk>",
    pad_token: "<pad>",
    extra_special_tokens: { image_token: "<image>" },
    clean_up_tokenization_spaces: false,
    model_max_length: 4096,
    padding_side: "left",
    chat_template: CHAT_TEMPLATE,
  });
  writeFileSync(join(dir, "chat_template.jinja"), CHAT_TEMPLATE);
}

function writeProcessor(dir: string, size: number, patch: number, pinpoints: unknown): void {
  writeJson(join(dir, "preprocessor_config.json"), {
    image_processor_type: "LlavaNextImageProcessor",
    processor_class: "LlavaNextProcessor",
    do_resize: true,
    size: { shortest_edge: size },
    resample: 3,
    do_center_crop: true,
    crop_size: { height: size, width: size },
    do_rescale: true,
    rescale_factor: 1 / 255,
    do_normalize: true,
    image_mean: CLIP_MEAN,
    image_std: CLIP_STD,
    do_convert_rgb: true,
    do_pad: true,
    image_grid_pinpoints: pinpoints,
  });
  writeJson(join(dir, "processor_config.json"), {
    processor_class: "LlavaNextProcessor",
    image_token: "<image>",
    patch_size: patch,
    vision_feature_select_strategy: "default",
    num_additional_image_tokens: 1,
  });
}
