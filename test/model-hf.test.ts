// Tests for src/model/hf: config.json parsing (real llava-hf layouts, transformers 5 layout), lazy/sharded/legacy
// weights, the tokenizer and chat template, PNG/JPEG decoding, preprocessing and the anyres arithmetic, and the
// random-checkpoint writer. Expected numbers come from hand computations or independent re-implementations here.
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import jpeg from "jpeg-js";
import { PNG } from "pngjs";
import { afterAll, describe, expect, it } from "vitest";
import { readSafetensors, writeSafetensors } from "../src/io/safetensors.ts";
import { makeTensor } from "../src/io/tensor.ts";
import type { LlavaConfig } from "../src/model/config.ts";
import {
  anyresGridShape, checkWeights, expandImageTokens, expectedWeights, loadConfig, loadImage, loadProcessorConfig,
  loadTokenizer, MODEL_CODES, ModelError, numImageTokens, openWeights, parseConfig, preprocess, selectBestResolution,
  unpaddedFeatureShape, writeRandomLlavaNext, type RgbImage,
} from "../src/model/hf/index.ts";
import { resizeRgb } from "../src/model/hf/resize.ts";
import { normalizeWeightName } from "../src/model/hf/weights.ts";
import { WRITER_TOKENS } from "../src/model/hf/writer.ts";

const tmp = mkdtempSync(join(tmpdir(), "zipvl-hf-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let dirCount = 0;
const freshDir = (): string => join(tmp, `d${dirCount++}`);

const seen = new Set<string>();
function expectCode(f: () => unknown, code: keyof typeof MODEL_CODES, ...mentions: string[]): void {
  seen.add(code);
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ModelError);
    expect((e as ModelError).code).toBe(code);
    for (const m of mentions) expect((e as ModelError).message).toContain(m);
    return;
  }
  throw new Error(`expected ModelError ${code}`);
}

// llava-hf/llava-1.5-7b-hf config.json (transformers 4.36 era: defaults left out, torch_dtype, image_token_index).
const LLAVA15 = {
  architectures: ["LlavaForConditionalGeneration"], ignore_index: -100, image_token_index: 32000, model_type: "llava",
  pad_token_id: 32001, projector_hidden_act: "gelu",
  text_config: { _name_or_path: "lmsys/vicuna-7b-v1.5", architectures: ["LlamaForCausalLM"], max_position_embeddings: 4096, model_type: "llama", rms_norm_eps: 1e-5, torch_dtype: "float16", vocab_size: 32064 },
  tie_word_embeddings: false, torch_dtype: "float16", transformers_version: "4.36.0.dev0",
  vision_config: { hidden_size: 1024, image_size: 336, intermediate_size: 4096, model_type: "clip_vision_model", num_attention_heads: 16, num_hidden_layers: 24, patch_size: 14, projection_dim: 768, vocab_size: 32000 },
  vision_feature_layer: -2, vision_feature_select_strategy: "default", vocab_size: 32064,
};

// llava-hf/llava-v1.6-mistral-7b-hf config.json.
const LLAVA16_MISTRAL = {
  architectures: ["LlavaNextForConditionalGeneration"], ignore_index: -100,
  image_grid_pinpoints: [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]], image_token_index: 32000,
  model_type: "llava_next", projector_hidden_act: "gelu",
  text_config: { _name_or_path: "mistralai/Mistral-7B-Instruct-v0.2", architectures: ["MistralForCausalLM"], intermediate_size: 14336, max_position_embeddings: 32768, model_type: "mistral", num_key_value_heads: 8, rms_norm_eps: 1e-5, rope_theta: 1000000.0, sliding_window: null, torch_dtype: "bfloat16", vocab_size: 32064 },
  torch_dtype: "float16", use_image_newline_parameter: true,
  vision_config: { hidden_size: 1024, image_size: 336, intermediate_size: 4096, model_type: "clip_vision_model", num_attention_heads: 16, num_hidden_layers: 24, patch_size: 14, projection_dim: 768, vocab_size: 32000 },
  vision_feature_layer: -2, vision_feature_select_strategy: "default", vocab_size: 32064,
};

// llava-hf/llava-v1.6-vicuna-7b-hf style, in transformers 5 form (dtype, image_token_id, rope_parameters), plus
// linear RoPE scaling to test that path.
const LLAVA16_VICUNA_V5 = {
  architectures: ["LlavaNextForConditionalGeneration"], model_type: "llava_next", dtype: "bfloat16", image_token_id: 32000,
  image_grid_pinpoints: [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
  text_config: { model_type: "llama", vocab_size: 32064, max_position_embeddings: 4096, rms_norm_eps: 1e-5, eos_token_id: [2, 32001], rope_parameters: { rope_type: "linear", factor: 2.0, rope_theta: 500000.0 } },
  vision_config: { hidden_size: 1024, image_size: 336, intermediate_size: 4096, model_type: "clip_vision_model", num_attention_heads: 16, num_hidden_layers: 24, patch_size: 14 },
  vision_feature_layer: [-2, -5],
};

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

describe("config.json", () => {
  it("reads llava-1.5-7b-hf with transformers' defaults for what it leaves out", () => {
    const c = parseConfig(LLAVA15, "llava15.json");
    expect(c.modelType).toBe("llava");
    expect(c.text).toEqual({
      hiddenSize: 4096, intermediateSize: 11008, numLayers: 32, numHeads: 32, numKvHeads: 32, headDim: 128, vocabSize: 32064,
      rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: null, maxPositionEmbeddings: 4096, tieWordEmbeddings: false,
      hiddenAct: "silu", attentionBias: false, mlpBias: false,
    });
    expect(c.vision).toEqual({ hiddenSize: 1024, intermediateSize: 4096, numLayers: 24, numHeads: 16, imageSize: 336, patchSize: 14, numChannels: 3, layerNormEps: 1e-5, hiddenAct: "quick_gelu" });
    expect([c.visionFeatureLayer, c.visionFeatureSelectStrategy, c.projectorHiddenAct, c.multimodalProjectorBias]).toEqual([-2, "default", "gelu", true]);
    expect([c.imageTokenIndex, c.imageGridPinpoints, c.bosTokenId, c.eosTokenIds, c.padTokenId, c.dtype]).toEqual([32000, null, 1, [2], 32001, "f16"]);
  });

  it("reads llava-v1.6-mistral-7b-hf (mistral text model without sliding window)", () => {
    const c = parseConfig(LLAVA16_MISTRAL, "m.json");
    expect(c.modelType).toBe("llava_next");
    expect([c.text.numKvHeads, c.text.intermediateSize, c.text.ropeTheta, c.text.maxPositionEmbeddings, c.text.headDim]).toEqual([8, 14336, 1e6, 32768, 128]);
    expect(c.imageGridPinpoints).toEqual([[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]);
    expect(c.dtype).toBe("f16"); // the top-level dtype wins over text_config's
  });

  it("reads the transformers 5 layout: dtype, image_token_id, rope_parameters, several feature layers", () => {
    const c = parseConfig(LLAVA16_VICUNA_V5, "v5.json");
    expect([c.dtype, c.imageTokenIndex, c.text.ropeTheta, c.eosTokenIds, c.visionFeatureLayer]).toEqual(["bf16", 32000, 500000, [2, 32001], [-2, -5]]);
    expect(c.text.ropeScaling).toEqual({ rope_type: "linear", factor: 2, rope_theta: 500000 });
    expect(expectedWeights(c).get("model.multi_modal_projector.linear_1.weight")).toEqual([4096, 2048]);
    // rope_scaling (pre-5 key, "type" spelling) means the same.
    const old = clone(LLAVA16_VICUNA_V5) as Record<string, any>;
    old.text_config.rope_parameters = undefined;
    old.text_config.rope_scaling = { type: "dynamic", factor: 4 };
    expect(parseConfig(old, "old.json").text.ropeScaling).toEqual({ type: "dynamic", factor: 4, rope_type: "dynamic" });
    expect(parseConfig(old, "old.json").text.ropeTheta).toBe(10000);
    expect(parseConfig({ ...LLAVA15, projector_hidden_act: "gelu_pytorch_tanh" }, "a.json").projectorHiddenAct).toBe("gelu_tanh");
  });

  it("fills LLaVA's default vision tower when vision_config is absent", () => {
    const c = parseConfig({ model_type: "llava", text_config: { model_type: "llama" } }, "x.json");
    expect([c.vision.hiddenSize, c.vision.numLayers, c.vision.imageSize, c.vision.patchSize, c.text.vocabSize, c.text.rmsNormEps]).toEqual([1024, 24, 336, 14, 32000, 1e-6]);
  });

  it("rejects what it cannot run, naming the key", () => {
    expectCode(() => parseConfig({ ...LLAVA15, model_type: "qwen2_vl" }, "a.json"), "ZV6003", "a.json", "qwen2_vl");
    expectCode(() => parseConfig({ ...LLAVA15, text_config: { model_type: "qwen2" } }, "a.json"), "ZV6003", "qwen2");
    expectCode(() => parseConfig({ ...LLAVA15, vision_config: { model_type: "siglip_vision_model" } }, "a.json"), "ZV6003", "siglip_vision_model");
    expectCode(() => parseConfig({ ...LLAVA15, text_config: { num_key_value_heads: 5 } }, "a.json"), "ZV6004", "num_key_value_heads=5");
    expectCode(() => parseConfig({ ...LLAVA15, vision_feature_layer: -30 }, "a.json"), "ZV6004", "vision_feature_layer");
    expectCode(() => parseConfig({ ...LLAVA15, torch_dtype: "int8" }, "a.json"), "ZV6004", "torch_dtype");
    expectCode(() => parseConfig({ ...LLAVA15, text_config: { rope_scaling: { rope_type: "mrope" } } }, "a.json"), "ZV6005", "mrope");
    expectCode(() => parseConfig({ ...LLAVA16_MISTRAL, text_config: { model_type: "mistral" } }, "a.json"), "ZV6005", "sliding_window=4096");
    const dir = freshDir();
    mkdirSync(dir);
    expectCode(() => loadConfig(dir), "ZV6001", "config.json", "not found");
    writeFileSync(join(dir, "config.json"), "{ nope");
    expectCode(() => loadConfig(dir), "ZV6002", "config.json");
  });
});

describe("weights", () => {
  const single = freshDir();
  const cfg = writeRandomLlavaNext(single, { seed: 3 });

  it("writer -> reader: every tensor the model needs, HF names and shapes, lazily read bytes", () => {
    const store = openWeights(single);
    checkWeights(cfg, store);
    const want = expectedWeights(cfg);
    for (const [name, shape] of want) expect(store.info(name).shape).toEqual(shape);
    expect(store.names()).toContain("model.vision_tower.vision_model.post_layernorm.weight");
    expect(store.names().length).toBe(want.size + 16 + 2); // + the unused last vision layer + post_layernorm
    const file = readSafetensors(join(single, "model.safetensors"));
    for (const name of ["lm_head.weight", "model.image_newline", "model.language_model.layers.1.mlp.down_proj.weight"]) {
      const w = store.get(name);
      expect(w.dtype).toBe("f32");
      expect(Array.from(new Float32Array(w.bytes.slice().buffer))).toEqual(Array.from(file.tensors.get(name)!.data));
    }
    const norm = new Float32Array(store.get("model.language_model.norm.weight").bytes.slice().buffer);
    expect(Math.abs(norm.reduce((s, x) => s + x, 0) / norm.length - 1)).toBeLessThan(0.01);
  });

  it("sharded and legacy-named checkpoints read back as the same tensors", () => {
    const ref = openWeights(single);
    for (const opts of [{ shards: 3 }, { legacyNames: true }, { shards: 2, legacyNames: true }]) {
      const dir = freshDir();
      writeRandomLlavaNext(dir, { seed: 3, ...opts });
      const s = openWeights(dir);
      expect(s.names()).toEqual(ref.names());
      for (const n of ref.names()) expect(Buffer.compare(s.get(n).bytes, ref.get(n).bytes)).toBe(0);
      checkWeights(cfg, s);
    }
    const dir = freshDir();
    writeRandomLlavaNext(dir, { seed: 3, shards: 3 });
    const index = JSON.parse(readFileSync(join(dir, "model.safetensors.index.json"), "utf8"));
    expect(new Set(Object.values(index.weight_map))).toEqual(new Set(["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"]));
    expect(Object.keys(index.weight_map).sort()).toEqual(ref.names());
  });

  it("weight names of every layout map to the transformers-5 names", () => {
    const cases: [string, string][] = [
      ["vision_tower.vision_model.embeddings.patch_embedding.weight", "model.vision_tower.vision_model.embeddings.patch_embedding.weight"],
      // transformers 5.17 save_pretrained (seen on the GPU host): legacy prefixes without CLIPVisionModel's level
      ["vision_tower.embeddings.patch_embedding.weight", "model.vision_tower.vision_model.embeddings.patch_embedding.weight"],
      ["vision_tower.pre_layrnorm.bias", "model.vision_tower.vision_model.pre_layrnorm.bias"],
      ["model.vision_tower.encoder.layers.0.mlp.fc1.weight", "model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"],
      ["model.vision_tower.vision_model.post_layernorm.weight", "model.vision_tower.vision_model.post_layernorm.weight"],
      ["language_model.model.layers.0.self_attn.q_proj.weight", "model.language_model.layers.0.self_attn.q_proj.weight"],
      ["language_model.lm_head.weight", "lm_head.weight"],
      ["image_newline", "model.image_newline"],
      ["multi_modal_projector.linear_1.bias", "model.multi_modal_projector.linear_1.bias"],
    ];
    for (const [from, to] of cases) expect(normalizeWeightName(from), from).toBe(to);
  });

  it("bf16 checkpoints and tied embeddings", () => {
    const dir = freshDir();
    writeRandomLlavaNext(dir, { dtype: "bf16" });
    const s = openWeights(dir);
    expect(s.info("lm_head.weight")).toEqual({ dtype: "bf16", shape: [512, 128] });
    expect(s.get("lm_head.weight").bytes.length).toBe(512 * 128 * 2);
    // Tied: drop lm_head; the store serves the input embeddings under its name.
    const f = readSafetensors(join(dir, "model.safetensors"));
    f.tensors.delete("lm_head.weight");
    writeSafetensors(join(dir, "model.safetensors"), f.tensors);
    expectCode(() => checkWeights(loadConfig(dir), openWeights(dir)), "ZV6008", "lm_head.weight", "tie_word_embeddings is false");
    const tied = openWeights(dir, { tieWordEmbeddings: true });
    expect(Buffer.compare(tied.get("lm_head.weight").bytes, tied.get("model.language_model.embed_tokens.weight").bytes)).toBe(0);
  });

  it("coded errors: no weights, bad index, missing tensor, wrong shape, unsupported dtype", () => {
    const empty = freshDir();
    mkdirSync(empty);
    expectCode(() => openWeights(empty), "ZV6006", empty);
    writeFileSync(join(empty, "model.safetensors.index.json"), JSON.stringify({ weight_map: { a: "gone.safetensors" } }));
    expectCode(() => openWeights(empty), "ZV6007", "gone.safetensors");
    writeFileSync(join(empty, "model.safetensors.index.json"), JSON.stringify({ metadata: {} }));
    expectCode(() => openWeights(empty), "ZV6007", "weight_map");

    const dir = freshDir();
    writeRandomLlavaNext(dir);
    const f = readSafetensors(join(dir, "model.safetensors"));
    f.tensors.delete("model.language_model.layers.1.self_attn.k_proj.weight");
    f.tensors.set("model.image_newline", makeTensor("f32", [7]));
    f.tensors.set("some.int.buffer", makeTensor("i32", [2]));
    writeSafetensors(join(dir, "model.safetensors"), f.tensors);
    const s = openWeights(dir);
    expectCode(() => s.get("model.language_model.layers.1.self_attn.k_proj.weight"), "ZV6008", "layers.1.self_attn.k_proj");
    expectCode(() => s.info("some.int.buffer"), "ZV6010", "some.int.buffer", "i32");
    const c = loadConfig(dir);
    expectCode(() => checkWeights(c, s), "ZV6008", "model.language_model.layers.1.self_attn.k_proj.weight");
    f.tensors.set("model.language_model.layers.1.self_attn.k_proj.weight", makeTensor("f32", [64, 128]));
    writeSafetensors(join(dir, "model.safetensors"), f.tensors);
    expectCode(() => checkWeights(c, openWeights(dir)), "ZV6009", "model.image_newline", "[128]", "[7]");
  });
});

describe("tokenizer and chat template", () => {
  const dir = freshDir();
  writeRandomLlavaNext(dir);
  const tok = loadTokenizer(dir);

  it("byte-level BPE: <s> from the post-processor, special tokens whole, lossless round trip", () => {
    expect(tok.vocabSize).toBe(WRITER_TOKENS.vocabSize);
    expect([tok.bosToken, tok.eosToken, tok.tokenToId("<image>"), tok.tokenToId("<pad>")]).toEqual(["<s>", "</s>", 510, 511]);
    const ids = tok.encode("the image");
    expect(ids[0]).toBe(1);
    expect(Array.from(tok.encode("the image", { addSpecialTokens: false }))).toEqual(Array.from(ids.subarray(1)));
    expect(Array.from(tok.encode("a<image>b", { addSpecialTokens: false })).filter((i) => i === 510).length).toBe(1);
    fc.assert(fc.property(fc.string({ maxLength: 40, unit: "binary" }), (s) => {
      const e = tok.encode(s, { addSpecialTokens: false });
      expect(tok.decode(e)).toBe(s); // special tokens included
      expect(tok.decode(tok.encode(s), true)).toBe(s.replace(/<s>|<\/s>|<unk>|<image>|<pad>/g, ""));
    }), { numRuns: 25 });
  });

  it("renders the LLaVA-v1.6 [INST] template from the checkpoint", () => {
    const user = { role: "user", content: [{ type: "text" as const, text: "What is in the image?" }, { type: "image" as const }] };
    expect(tok.applyChatTemplate([user], true)).toBe("[INST] <image>\nWhat is in the image? [/INST]");
    expect(tok.applyChatTemplate([{ role: "user", content: "hi" }, { role: "assistant", content: "hello" }, { role: "user", content: "more" }], true))
      .toBe("[INST] hi [/INST] hello</s> [INST] more [/INST]");
  });

  it("coded errors: no tokenizer.json, bad ids, no or broken chat template", () => {
    const d = freshDir();
    mkdirSync(d);
    expectCode(() => loadTokenizer(d), "ZV6011", "tokenizer.json");
    expectCode(() => tok.decode([9999]), "ZV6011", "9999");
    writeFileSync(join(d, "tokenizer.json"), readFileSync(join(dir, "tokenizer.json")));
    expectCode(() => loadTokenizer(d).applyChatTemplate([], true), "ZV6012", "no chat template");
    writeFileSync(join(d, "chat_template.jinja"), "{% for m in messages %}{{ raise_exception('only user turns') }}{% endfor %}");
    expectCode(() => loadTokenizer(d).applyChatTemplate([{ role: "x", content: "" }], true), "ZV6012", "only user turns");
  });
});

/** A deterministic test picture: gradients plus a few hard edges. */
function testImage(width: number, height: number): RgbImage {
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
    const i = (y * width + x) * 3;
    rgb[i] = (x * 255) / Math.max(width - 1, 1);
    rgb[i + 1] = (y * 255) / Math.max(height - 1, 1);
    rgb[i + 2] = ((x >> 2) + (y >> 2)) % 2 === 0 ? 230 : 20;
  }
  return { width, height, rgb };
}

describe("images", () => {
  it("PNG (with alpha, dropped) and JPEG decode to RGB", () => {
    const img = testImage(13, 7);
    const png = new PNG({ width: 13, height: 7 });
    for (let i = 0; i < 13 * 7; i++) {
      png.data.set([img.rgb[3 * i]!, img.rgb[3 * i + 1]!, img.rgb[3 * i + 2]!, i % 256], 4 * i);
    }
    const path = join(tmp, "t.png");
    writeFileSync(path, PNG.sync.write(png));
    expect(loadImage(path)).toEqual(img);
    const rgba = new Uint8Array(16 * 8 * 4).fill(200);
    const jpg = jpeg.encode({ width: 16, height: 8, data: rgba }, 100).data;
    const back = loadImage(new Uint8Array(jpg));
    expect([back.width, back.height]).toEqual([16, 8]);
    for (const v of back.rgb) expect(Math.abs(v - 200)).toBeLessThanOrEqual(1);
  });

  it("coded errors: missing, unknown format, corrupt", () => {
    expectCode(() => loadImage(join(tmp, "nope.png")), "ZV6001", "nope.png");
    expectCode(() => loadImage(new TextEncoder().encode("GIF89a....")), "ZV6013");
    const png = PNG.sync.write(Object.assign(new PNG({ width: 4, height: 4 }), {}));
    expectCode(() => loadImage(png.subarray(0, 40)), "ZV6014");
  });
});

/** Float64 separable convolution with Pillow's filter geometry (no fixed point): within 1 level of Pillow. */
function referenceResize(img: RgbImage, w: number, h: number): Float64Array {
  const cubic = (x: number) => {
    const a = -0.5;
    x = Math.abs(x);
    return x < 1 ? ((a + 2) * x - (a + 3)) * x * x + 1 : x < 2 ? (((x - 5) * x + 8) * x - 4) * a : 0;
  };
  const weights = (inSize: number, outSize: number) => Array.from({ length: outSize }, (_, o) => {
    const scale = inSize / outSize;
    const fs = Math.max(scale, 1);
    const center = (o + 0.5) * scale;
    const ws = Array.from({ length: inSize }, (_, i) => cubic((i + 0.5 - center) / fs));
    const sum = ws.reduce((s, x) => s + x, 0);
    return ws.map((x) => x / sum);
  });
  const wx = weights(img.width, w);
  const wy = weights(img.height, h);
  const tmpRow = new Float64Array(img.height * w * 3);
  for (let y = 0; y < img.height; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) {
    let s = 0;
    for (let i = 0; i < img.width; i++) s += wx[x]![i]! * img.rgb[(y * img.width + i) * 3 + c]!;
    tmpRow[(y * w + x) * 3 + c] = w === img.width ? img.rgb[(y * img.width + x) * 3 + c]! : Math.min(255, Math.max(0, Math.round(s)));
  }
  const out = new Float64Array(h * w * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) {
    let s = 0;
    for (let i = 0; i < img.height; i++) s += wy[y]![i]! * tmpRow[(i * w + x) * 3 + c]!;
    out[(y * w + x) * 3 + c] = h === img.height ? tmpRow[(y * w + x) * 3 + c]! : s;
  }
  return out;
}

describe("preprocessing", () => {
  it("bicubic resize: constants stay constant, and within one level of a float64 convolution", () => {
    const flat: RgbImage = { width: 9, height: 5, rgb: new Uint8Array(135).fill(77) };
    for (const [w, h] of [[3, 2], [20, 11], [9, 12]] as const) expect(new Set(resizeRgb(flat, w, h, 3).rgb)).toEqual(new Set([77]));
    const img = testImage(23, 17);
    for (const [w, h] of [[11, 8], [40, 30], [23, 9], [7, 17]] as const) {
      const got = resizeRgb(img, w, h, 3).rgb;
      const ref = referenceResize(img, w, h);
      let worst = 0;
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - Math.min(255, Math.max(0, ref[i]!))));
      expect(worst).toBeLessThanOrEqual(1);
    }
  });

  it("select_best_resolution and the anyres grid on hand-checked cases", () => {
    const pins = [[672, 336], [336, 672], [672, 672], [336, 1008], [1008, 336]];
    expect(selectBestResolution([336, 336], pins)).toEqual([672, 336]); // transformers' test: ties keep the first
    expect(selectBestResolution([300, 800], pins)).toEqual([336, 1008]);
    expect(selectBestResolution([480, 640], pins)).toEqual([672, 672]);
    expect(anyresGridShape([480, 640], pins, 336)).toEqual([2, 2]);
    // 480x640 in a 48x48 grid: width-bound, 0.075 * 480 = 36 rows, 6 padding rows cut on each side.
    expect(unpaddedFeatureShape([480, 640], [48, 48])).toEqual({ rows: 36, cols: 48, rowStart: 6, colStart: 0 });
    expect(unpaddedFeatureShape([640, 480], [48, 48])).toEqual({ rows: 48, cols: 36, rowStart: 0, colStart: 6 });
    const c = parseConfig(LLAVA16_MISTRAL, "m.json");
    expect(numImageTokens(c, [480, 640])).toBe(576 + 36 * 49);
    expect(numImageTokens(parseConfig(LLAVA15, "l.json"), [480, 640])).toBe(576);
  });

  it("numImageTokens matches the processor's own count (_get_number_of_features) for any image size", () => {
    const c = parseConfig(LLAVA16_MISTRAL, "m.json");
    // processing_llava_next.py, with num_additional_image_tokens = 1 and the "default" strategy's -1.
    const processorCount = (h: number, w: number) => {
      const [bh, bw] = selectBestResolution([h, w], c.imageGridPinpoints!);
      let ch = 24 * Math.floor(bh / 336);
      let cw = 24 * Math.floor(bw / 336);
      if (w / h > cw / ch) ch -= 2 * Math.floor((ch - Math.trunc(Number((h * (cw / w)).toFixed(7)))) / 2);
      else cw -= 2 * Math.floor((cw - Math.trunc(Number((w * (ch / h)).toFixed(7)))) / 2);
      return ch * cw + ch + 24 * 24 + 1 - 1;
    };
    fc.assert(fc.property(fc.integer({ min: 1, max: 3000 }), fc.integer({ min: 1, max: 3000 }), (h, w) => {
      expect(numImageTokens(c, [h, w])).toBe(processorCount(h, w));
    }), { numRuns: 300 });
  });

  it("expandImageTokens repeats each image id by its count", () => {
    expect(Array.from(expandImageTokens(Int32Array.of(1, 9, 5, 9), 9, [2, 3]))).toEqual([1, 9, 9, 5, 9, 9, 9]);
    expectCode(() => expandImageTokens(Int32Array.of(1, 9), 9, [2, 3]), "ZV6012", "1 image token");
  });

  it("llava_next: base image plus letterboxed grid tiles, rescaled and normalized in float32", () => {
    const dir = freshDir();
    const cfg = writeRandomLlavaNext(dir);
    const pc = loadProcessorConfig(dir);
    expect([pc.patch_size, pc.image_token, pc.crop_size]).toEqual([14, "<image>", { height: 56, width: 56 }]);
    const v = 150;
    const img: RgbImage = { width: 70, height: 40, rgb: new Uint8Array(70 * 40 * 3).fill(v) };
    const out = preprocess(img, pc, cfg);
    const [bh, bw] = selectBestResolution([40, 70], cfg.imageGridPinpoints!);
    expect([bh, bw]).toEqual([56, 112]);
    expect(out.shape).toEqual([1 + (bh / 56) * (bw / 56), 3, 56, 56]);
    expect(out.imageSizes).toEqual([40, 70]);
    expect(out.numImageTokens).toBe(numImageTokens(cfg, [40, 70]));
    const mean = [0.48145466, 0.4578275, 0.40821073];
    const std = [0.26862954, 0.26130258, 0.27577711];
    const norm = (x: number, c: number) => Math.fround(Math.fround(Math.fround(x / 255) - Math.fround(mean[c]!)) / Math.fround(std[c]!));
    const tile = 3 * 56 * 56;
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < 56 * 56; i++) expect(out.pixelValues[c * 56 * 56 + i]).toBe(norm(v, c)); // base tile
      // Grid: 70x40 into 112x56 is height-bound (56/40 = 1.4 < 112/70 = 1.6): resized to 98x56, 7 zero columns left
      // and right of the 112-wide canvas, so tile 1's columns 0..6 and tile 2's columns 49..55 are padding.
      const t1 = out.pixelValues.subarray(tile + c * 56 * 56, tile + (c + 1) * 56 * 56);
      expect(t1[20 * 56 + 3]).toBe(norm(0, c));
      expect(t1[20 * 56 + 30]).toBe(norm(v, c));
      const t2 = out.pixelValues.subarray(2 * tile + c * 56 * 56, 2 * tile + (c + 1) * 56 * 56);
      expect(t2[20 * 56 + 52]).toBe(norm(0, c));
    }
  });

  it("llava (CLIP): shortest-edge resize, center crop, and LlavaImageProcessor's pad to square", () => {
    const cfg = parseConfig(LLAVA15, "l.json");
    const pc = { size: { shortest_edge: 336 }, crop_size: { height: 336, width: 336 }, resample: 3 };
    const img: RgbImage = { width: 20, height: 10, rgb: new Uint8Array(600).fill(255) };
    const out = preprocess(img, pc, cfg);
    expect(out.shape).toEqual([1, 3, 336, 336]);
    expect(new Set(out.pixelValues.subarray(0, 336 * 336)).size).toBe(1);
    const padded = preprocess(img, { ...pc, do_pad: true }, cfg);
    // 10x20 padded to 20x20 with int(255 * mean) rows above and below: row 0 holds the mean color.
    const m0 = Math.trunc(0.48145466 * 255);
    expect(padded.pixelValues[0]).toBeCloseTo((m0 / 255 - 0.48145466) / 0.26862954, 5);
    expect(padded.pixelValues[168 * 336 + 168]).toBeCloseTo((1 - 0.48145466) / 0.26862954, 5);
  });

  it("coded errors: bad processor config, missing file", () => {
    const cfg = parseConfig(LLAVA15, "l.json");
    expectCode(() => preprocess(testImage(4, 4), { resample: 0 }, cfg), "ZV6015", "resample=0");
    expectCode(() => preprocess(testImage(4, 4), { crop_size: 224, size: { shortest_edge: 224 } }, cfg), "ZV6015", "224x224", "336x336");
    expectCode(() => preprocess(testImage(4, 4), { image_mean: [0.5], crop_size: 336 }, cfg), "ZV6015", "image_mean");
    const d = freshDir();
    mkdirSync(d);
    expectCode(() => loadProcessorConfig(d), "ZV6001", "preprocessor_config.json");
  });
});

describe("random checkpoint writer", () => {
  it("is deterministic, fast, and rejects impossible sizes", () => {
    const a = freshDir();
    const b = freshDir();
    const t0 = performance.now();
    writeRandomLlavaNext(a, { seed: 7 });
    const ms = performance.now() - t0;
    writeRandomLlavaNext(b, { seed: 7 });
    for (const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "generation_config.json"]) {
      expect(Buffer.compare(readFileSync(join(a, f)), readFileSync(join(b, f)))).toBe(0);
    }
    expect(ms).toBeLessThan(1000);
    const c: LlavaConfig = loadConfig(a);
    expect([c.modelType, c.text.numKvHeads, c.vision.imageSize, c.imageTokenIndex]).toEqual(["llava_next", 2, 56, 510]);
    expectCode(() => writeRandomLlavaNext(freshDir(), { textHidden: 100, textHeads: 3 }), "ZV6016", "textHeads");
  });

  it("every error code has a test", () => {
    expect([...seen].sort()).toEqual(Object.keys(MODEL_CODES).sort());
  });
});
