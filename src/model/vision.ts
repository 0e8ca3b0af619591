// Image side of LLaVA: the CLIP vision tower (transformers' CLIPVisionModel, hidden_states), feature selection, the
// multimodal projector, and LLaVA-Next's anyres packing (LlavaNextModel.pack_image_features + unpad_image).
import type { LlavaConfig } from "./config.ts";
import { LlavaError } from "./errors.ts";
import { unpaddedFeatureShape } from "./hf/index.ts";
import type { DTensor, ModelOps } from "./ops.ts";
import { featureLayers, PROJ, VISION, type Weights } from "./weights.ts";

/** Pixel values of one image: [crops, C, S, S] (LLaVA-Next: base crop first, then the grid crops row-major). */
export interface ImageInput {
  readonly pixels: Float32Array;
  readonly shape: readonly [number, number, number, number];
  /** Original [height, width] (LLaVA-Next unpadding). */
  readonly imageSize: readonly [number, number];
  /** LLaVA-Next anyres grid [rows, cols] of crops (get_anyres_image_grid_shape); unused for llava-1.5. */
  readonly grid?: readonly [number, number];
}

/** [np, C*P*P] rows of one crop, in the conv weight's (c, ky, kx) order, patches row-major. */
export function unfoldPatches(px: Float32Array, offset: number, C: number, S: number, P: number): Float32Array {
  const g = S / P;
  const out = new Float32Array(g * g * C * P * P);
  let o = 0;
  for (let gy = 0; gy < g; gy++)
    for (let gx = 0; gx < g; gx++)
      for (let c = 0; c < C; c++)
        for (let ky = 0; ky < P; ky++) {
          const row = offset + (c * S + gy * P + ky) * S + gx * P;
          for (let kx = 0; kx < P; kx++) out[o++] = px[row + kx]!;
        }
  return out;
}

/** hidden_states of the CLIP tower for one crop, at the requested indices only (0 = embeddings after pre_layrnorm). */
export function clipHiddenStates(ops: ModelOps, cfg: LlavaConfig, w: Weights, crop: DTensor, want: readonly number[]): Map<number, DTensor> {
  const v = cfg.vision;
  const W = (n: string): DTensor => w.get(VISION + n);
  const out = new Map<number, DTensor>();
  const keep = (i: number, t: DTensor): void => void (want.includes(i) && out.set(i, t));
  const patches = ops.linear(crop, W("embeddings.patch_embedding.weight"));
  const withCls = ops.concatRows([W("embeddings.class_embedding"), patches]);
  const emb = ops.addRows(withCls, W("embeddings.position_embedding.weight"));
  let h = ops.layerNorm(emb, W("pre_layrnorm.weight"), W("pre_layrnorm.bias"), v.layerNormEps);
  for (const t of [patches, withCls, emb]) ops.free(t);
  keep(0, h);
  const deepest = Math.max(...want);
  const heads = v.numHeads;
  for (let l = 0; l < deepest; l++) {
    const p = `encoder.layers.${l}.`;
    const x = ops.layerNorm(h, W(`${p}layer_norm1.weight`), W(`${p}layer_norm1.bias`), v.layerNormEps);
    const proj = (n: string): DTensor => {
      const y = ops.linear(x, W(`${p}self_attn.${n}_proj.weight`), W(`${p}self_attn.${n}_proj.bias`));
      const t = ops.toHeads(y, heads);
      ops.free(y);
      return t;
    };
    const q = proj("q"), k = proj("k"), vv = proj("v");
    const o = ops.attention(q, k, vv, false);
    const oRows = ops.fromHeads(o);
    const a = ops.linear(oRows, W(`${p}self_attn.out_proj.weight`), W(`${p}self_attn.out_proj.bias`));
    const h1 = ops.add(h, a);
    const x2 = ops.layerNorm(h1, W(`${p}layer_norm2.weight`), W(`${p}layer_norm2.bias`), v.layerNormEps);
    const f1 = ops.linear(x2, W(`${p}mlp.fc1.weight`), W(`${p}mlp.fc1.bias`));
    const f1a = ops.act(f1, v.hiddenAct);
    const f2 = ops.linear(f1a, W(`${p}mlp.fc2.weight`), W(`${p}mlp.fc2.bias`));
    const h2 = ops.add(h1, f2);
    for (const t of [x, q, k, vv, o, oRows, a, h1, x2, f1, f1a, f2]) ops.free(t);
    if (!want.includes(l)) ops.free(h);
    h = h2;
    keep(l + 1, h);
  }
  return out;
}

/** Projected features of one crop: [tokens, text hidden] (tokens = patches, plus the class token for "full"). */
export function cropFeatures(ops: ModelOps, cfg: LlavaConfig, w: Weights, crop: DTensor): DTensor {
  const layers = featureLayers(cfg);
  const hs = clipHiddenStates(ops, cfg, w, crop, layers);
  const np = (cfg.vision.imageSize / cfg.vision.patchSize) ** 2;
  const selected = layers.map((l) => (cfg.visionFeatureSelectStrategy === "default" ? ops.sliceRows(hs.get(l)!, 1, np + 1) : hs.get(l)!));
  // linear_1 over the concatenated layers = the sum of its column blocks applied to each layer.
  let y: DTensor;
  if (layers.length === 1) y = ops.linear(selected[0]!, w.get(`${PROJ}linear_1.weight`), w.maybe(`${PROJ}linear_1.bias`));
  else {
    y = ops.linear(selected[0]!, w.get(`${PROJ}linear_1.weight#0`), w.maybe(`${PROJ}linear_1.bias`));
    for (let l = 1; l < layers.length; l++) {
      const part = ops.linear(selected[l]!, w.get(`${PROJ}linear_1.weight#${l}`));
      const sum = ops.add(y, part);
      ops.free(y);
      ops.free(part);
      y = sum;
    }
  }
  const a = ops.act(y, cfg.projectorHiddenAct);
  const out = ops.linear(a, w.get(`${PROJ}linear_2.weight`), w.maybe(`${PROJ}linear_2.bias`));
  for (const t of [y, a, ...selected, ...hs.values()]) ops.free(t);
  return out;
}

/** Row order of pack_image_features over per-crop features [crops * t, H] with the newline row appended at index
 *  crops * t: base crop, then the unpadded grid row by row, each row followed by image_newline. */
export function packOrder(crops: number, side: number, grid: readonly [number, number], imageSize: readonly [number, number]): Int32Array {
  const t = side * side;
  const newline = crops * t;
  const order: number[] = [];
  for (let i = 0; i < t; i++) order.push(i);
  if (crops === 1) return Int32Array.from([...order, newline]);
  const [gr, gc] = grid;
  if (gr * gc !== crops - 1) throw new LlavaError("ZV6109", [`the anyres grid ${gr}x${gc} needs ${gr * gc + 1} crops, the pixel values hold ${crops}`]);
  const u = unpaddedFeatureShape(imageSize, [gr * side, gc * side]);
  for (let y = u.rowStart; y < u.rowStart + u.rows; y++) {
    for (let x = u.colStart; x < u.colStart + u.cols; x++) {
      const crop = 1 + Math.floor(y / side) * gc + Math.floor(x / side);
      order.push(crop * t + (y % side) * side + (x % side));
    }
    order.push(newline);
  }
  return Int32Array.from(order);
}

/** The image's rows for the text model: [image tokens, text hidden]. */
export function imageFeatures(ops: ModelOps, cfg: LlavaConfig, w: Weights, img: ImageInput): DTensor {
  const [crops, C, S, S2] = img.shape;
  const v = cfg.vision;
  if (C !== v.numChannels || S !== v.imageSize || S2 !== v.imageSize) throw new LlavaError("ZV6109", [`pixel values [${img.shape.join(",")}] must be [crops, ${v.numChannels}, ${v.imageSize}, ${v.imageSize}]`]);
  if (img.pixels.length !== crops * C * S * S) throw new LlavaError("ZV6109", [`pixel values hold ${img.pixels.length} numbers, [${img.shape.join(",")}] needs ${crops * C * S * S}`]);
  if (cfg.modelType === "llava" && crops !== 1) throw new LlavaError("ZV6109", [`llava-1.5 takes one crop per image, got ${crops}`]);
  const perCrop: DTensor[] = [];
  const np = (S / v.patchSize) ** 2;
  for (let i = 0; i < crops; i++) {
    const rows = ops.fromF32([np, C * v.patchSize * v.patchSize], unfoldPatches(img.pixels, i * C * S * S, C, S, v.patchSize));
    perCrop.push(cropFeatures(ops, cfg, w, rows));
    ops.free(rows);
  }
  if (cfg.modelType === "llava") return perCrop[0]!;
  if (cfg.visionFeatureSelectStrategy !== "default") throw new LlavaError("ZV6103", ["vision_feature_select_strategy 'full' with llava_next", "anyres packing assumes the class token is dropped"]);
  const table = ops.concatRows([...perCrop, w.get("model.image_newline")]);
  const packed = ops.embed(table, packOrder(crops, S / v.patchSize, img.grid ?? [0, 0], img.imageSize));
  for (const t of [table, ...perCrop]) ops.free(t);
  return packed;
}
