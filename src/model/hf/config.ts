// config.json -> LlavaConfig. Defaults are transformers 5's (LlavaConfig / LlavaNextConfig, CLIPVisionConfig,
// LlamaConfig, MistralConfig), so a config that omits a key means what it means to transformers. Both the
// pre-5 keys (rope_scaling, rope_theta, torch_dtype, image_token_index) and the 5 ones (rope_parameters, dtype,
// image_token_id) are read.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { LlavaConfig, TextConfig, VisionConfig } from "../config.ts";
import type { ModelDType } from "../ops.ts";
import { ModelError } from "./errors.ts";

type Json = Record<string, unknown>;

const MODEL_TYPES = ["llava", "llava_next"] as const;
const TEXT_TYPES = ["llama", "mistral"] as const;
const ROPE_TYPES = ["default", "linear", "dynamic", "llama3", "yarn", "longrope"];
/** LlavaNextConfig's default image_grid_pinpoints. */
const DEFAULT_PINPOINTS: [number, number][] = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]];

/** transformers' ACT2FN names of the tanh-approximated GELU. */
const ACT_ALIASES: Record<string, string> = { gelu_pytorch_tanh: "gelu_tanh", gelu_new: "gelu_tanh" };

const isObj = (x: unknown): x is Json => typeof x === "object" && x !== null && !Array.isArray(x);

export function readJsonFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    const why = (e as { code?: string }).code === "ENOENT" ? "file not found" : String(e);
    throw new ModelError("ZV6001", [path, why], { cause: e });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ModelError("ZV6002", [path, (e as Error).message], { cause: e });
  }
}

/** Reads and parses DIR/config.json. */
export function loadConfig(dir: string): LlavaConfig {
  const path = join(dir, "config.json");
  return parseConfig(readJsonFile(path), path);
}

/** Typed field access that names the key in its error. */
class Fields {
  constructor(readonly obj: Json, readonly source: string, readonly prefix: string) {}

  private bad(key: string, why: string): ModelError {
    return new ModelError("ZV6004", [this.source, `${this.prefix}${key}=${JSON.stringify(this.obj[key])}`, why]);
  }

  has(key: string): boolean {
    return this.obj[key] !== undefined && this.obj[key] !== null;
  }

  int(key: string, dflt: number, min = 1): number {
    const v = this.obj[key] ?? dflt;
    if (!Number.isSafeInteger(v) || (v as number) < min) throw this.bad(key, `expected an integer >= ${min}`);
    return v as number;
  }

  num(key: string, dflt: number): number {
    const v = this.obj[key] ?? dflt;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) throw this.bad(key, "expected a positive number");
    return v;
  }

  bool(key: string, dflt: boolean): boolean {
    const v = this.obj[key] ?? dflt;
    if (typeof v !== "boolean") throw this.bad(key, "expected true or false");
    return v;
  }

  oneOf<T extends string>(key: string, dflt: T, allowed: readonly T[]): T {
    const raw = this.obj[key] ?? dflt;
    const v = typeof raw === "string" ? (ACT_ALIASES[raw] ?? raw) : raw;
    if (typeof v !== "string" || !allowed.includes(v as T)) throw this.bad(key, `expected one of ${allowed.join(", ")}`);
    return v as T;
  }

  /** An integer id, a list of ids, or absent/null. */
  ids(key: string, dflt: number | null): number[] {
    const v = this.obj[key] === undefined ? dflt : this.obj[key];
    if (v === null) return [];
    const list = Array.isArray(v) ? v : [v];
    if (!list.every((x) => Number.isSafeInteger(x) && (x as number) >= 0)) throw this.bad(key, "expected a token id or a list of ids");
    return list as number[];
  }

  sub(key: string): Fields {
    const v = this.obj[key] ?? {};
    if (!isObj(v)) throw this.bad(key, "expected an object");
    return new Fields(v, this.source, `${this.prefix}${key}.`);
  }
}

const DTYPE_NAMES: Record<string, ModelDType> = { float32: "f32", float16: "f16", bfloat16: "bf16" };

function parseDtype(f: Fields, t: Fields): ModelDType {
  for (const g of [f, t]) {
    for (const key of ["dtype", "torch_dtype"]) {
      if (!g.has(key)) continue;
      const name = g.obj[key];
      const d = typeof name === "string" ? DTYPE_NAMES[name] : undefined;
      if (d === undefined) {
        throw new ModelError("ZV6004", [g.source, `${g.prefix}${key}=${JSON.stringify(name)}`, "expected float32, float16 or bfloat16"]);
      }
      return d;
    }
  }
  return "f32";
}

function parseVision(v: Fields): VisionConfig {
  const type = v.obj["model_type"] ?? "clip_vision_model";
  if (type !== "clip_vision_model") {
    throw new ModelError("ZV6003", [v.source, `vision_config.model_type=${String(type)}`, "clip_vision_model"]);
  }
  return {
    hiddenSize: v.int("hidden_size", 768),
    intermediateSize: v.int("intermediate_size", 3072),
    numLayers: v.int("num_hidden_layers", 12),
    numHeads: v.int("num_attention_heads", 12),
    imageSize: v.int("image_size", 224),
    patchSize: v.int("patch_size", 32),
    numChannels: v.int("num_channels", 3),
    layerNormEps: v.num("layer_norm_eps", 1e-5),
    hiddenAct: v.oneOf("hidden_act", "quick_gelu", ["quick_gelu", "gelu", "gelu_tanh"] as const),
  };
}

/** rope_parameters (transformers 5) or rope_theta + rope_scaling (earlier). */
function parseRope(t: Fields): { theta: number; scaling: Readonly<Record<string, unknown>> | null } {
  const params = t.obj["rope_parameters"] ?? t.obj["rope_scaling"] ?? null;
  if (params !== null && !isObj(params)) {
    throw new ModelError("ZV6004", [t.source, `${t.prefix}rope_parameters=${JSON.stringify(params)}`, "expected an object"]);
  }
  const theta = params !== null && typeof params["rope_theta"] === "number" ? params["rope_theta"] : t.num("rope_theta", 10000);
  if (params === null) return { theta, scaling: null };
  const type = params["rope_type"] ?? params["type"] ?? "default";
  if (typeof type !== "string" || !ROPE_TYPES.includes(type)) {
    throw new ModelError("ZV6005", [t.source, `${t.prefix}rope type ${JSON.stringify(type)} (known: ${ROPE_TYPES.join(", ")})`]);
  }
  if (type === "default") return { theta, scaling: null };
  return { theta, scaling: Object.freeze({ ...params, rope_type: type }) };
}

function parseText(t: Fields, top: Fields): TextConfig {
  const type = t.obj["model_type"] ?? "llama";
  if (typeof type !== "string" || !(TEXT_TYPES as readonly string[]).includes(type)) {
    throw new ModelError("ZV6003", [t.source, `text_config.model_type=${String(type)}`, TEXT_TYPES.join(", ")]);
  }
  const mistral = type === "mistral";
  if (mistral && t.obj["sliding_window"] !== null) {
    // MistralConfig defaults sliding_window to 4096; LLaVA-Next's Mistral checkpoints set it to null.
    throw new ModelError("ZV6005", [t.source, `text_config.sliding_window=${JSON.stringify(t.obj["sliding_window"] ?? 4096)} (sliding-window attention)`]);
  }
  const hiddenSize = t.int("hidden_size", 4096);
  const numHeads = t.int("num_attention_heads", 32);
  const numKvHeads = t.has("num_key_value_heads") ? t.int("num_key_value_heads", numHeads) : mistral ? 8 : numHeads;
  if (numHeads % numKvHeads !== 0) {
    throw new ModelError("ZV6004", [t.source, `text_config.num_key_value_heads=${numKvHeads}`, `must divide num_attention_heads=${numHeads}`]);
  }
  const headDim = t.has("head_dim") ? t.int("head_dim", 0) : hiddenSize / numHeads;
  if (!Number.isInteger(headDim)) {
    throw new ModelError("ZV6004", [t.source, `text_config.hidden_size=${hiddenSize}`, `not divisible by num_attention_heads=${numHeads} (set head_dim)`]);
  }
  const rope = parseRope(t);
  const tie = t.has("tie_word_embeddings") ? t.bool("tie_word_embeddings", false) : top.bool("tie_word_embeddings", false);
  return {
    hiddenSize,
    intermediateSize: t.int("intermediate_size", mistral ? 14336 : 11008),
    numLayers: t.int("num_hidden_layers", 32),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: t.int("vocab_size", 32000),
    rmsNormEps: t.num("rms_norm_eps", 1e-6),
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
    maxPositionEmbeddings: t.int("max_position_embeddings", mistral ? 4096 * 32 : 2048),
    tieWordEmbeddings: tie,
    hiddenAct: t.oneOf("hidden_act", "silu", ["silu"] as const),
    attentionBias: mistral ? false : t.bool("attention_bias", false),
    mlpBias: mistral ? false : t.bool("mlp_bias", false),
  };
}

function parsePinpoints(f: Fields): [number, number][] {
  const v = f.obj["image_grid_pinpoints"] ?? DEFAULT_PINPOINTS;
  const ok = Array.isArray(v) && v.length > 0 &&
    v.every((p) => Array.isArray(p) && p.length === 2 && p.every((x) => Number.isSafeInteger(x) && (x as number) > 0));
  if (!ok) throw new ModelError("ZV6004", [f.source, `image_grid_pinpoints=${JSON.stringify(v)}`, "expected a non-empty list of [height, width]"]);
  return (v as [number, number][]).map(([h, w]) => [h, w]);
}

function parseFeatureLayer(f: Fields, numLayers: number): number | number[] {
  const v = f.obj["vision_feature_layer"] ?? -2;
  const list = Array.isArray(v) ? v : [v];
  const ok = list.length > 0 && list.every((x) => Number.isSafeInteger(x) && (x as number) >= -(numLayers + 1) && (x as number) <= numLayers);
  if (!ok) {
    throw new ModelError("ZV6004", [f.source, `vision_feature_layer=${JSON.stringify(v)}`, `expected hidden-state indices in [-${numLayers + 1}, ${numLayers}]`]);
  }
  return Array.isArray(v) ? (list as number[]) : (v as number);
}

/** Parses a config.json object (`source` names the file in errors). */
export function parseConfig(json: unknown, source: string): LlavaConfig {
  if (!isObj(json)) throw new ModelError("ZV6004", [source, "(top level)", "expected a JSON object"]);
  const f = new Fields(json, source, "");
  const modelType = json["model_type"];
  if (typeof modelType !== "string" || !(MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw new ModelError("ZV6003", [source, String(modelType), MODEL_TYPES.join(", ")]);
  }
  const next = modelType === "llava_next";
  const t = f.sub("text_config");
  const vsub = f.sub("vision_config");
  // An absent vision_config means LLaVA's default CLIP ViT-L/14-336.
  const vision = parseVision(json["vision_config"] === undefined || json["vision_config"] === null
    ? new Fields({ hidden_size: 1024, intermediate_size: 4096, num_hidden_layers: 24, num_attention_heads: 16, image_size: 336, patch_size: 14 }, source, "vision_config.")
    : vsub);
  const text = parseText(t, f);
  const imageKey = f.has("image_token_id") ? "image_token_id" : "image_token_index";
  const eos = t.has("eos_token_id") ? t.ids("eos_token_id", 2) : f.has("eos_token_id") ? f.ids("eos_token_id", 2) : [2];
  const bos = t.has("bos_token_id") ? t.ids("bos_token_id", 1) : f.has("bos_token_id") ? f.ids("bos_token_id", 1) : [1];
  const pad = f.has("pad_token_id") ? f.ids("pad_token_id", null) : t.ids("pad_token_id", null);
  return {
    modelType: modelType as LlavaConfig["modelType"],
    text,
    vision,
    visionFeatureLayer: parseFeatureLayer(f, vision.numLayers),
    visionFeatureSelectStrategy: f.oneOf("vision_feature_select_strategy", "default", ["default", "full"] as const),
    projectorHiddenAct: f.oneOf("projector_hidden_act", "gelu", ["gelu", "quick_gelu", "gelu_tanh", "silu"] as const),
    multimodalProjectorBias: f.bool("multimodal_projector_bias", true),
    imageTokenIndex: f.int(imageKey, 32000, 0),
    imageGridPinpoints: next ? parsePinpoints(f) : null,
    bosTokenId: bos[0] ?? null,
    eosTokenIds: eos,
    padTokenId: pad[0] ?? null,
    dtype: parseDtype(f, t),
  };
}
