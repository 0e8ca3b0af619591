// A tiny LLaVA-Next (config + seeded in-memory weights) and a straightforward float64 reference forward written
// from the formulas (transformers' CLIP, projector, pack_image_features with its view/permute, LLaMA), used by
// test/model.test.ts to check the model on the cpu ops.
import type { LlavaConfig } from "../../src/model/config.ts";
import { anyresGridShape, numImageTokens, unpaddedFeatureShape } from "../../src/model/hf/index.ts";
import type { HostWeight } from "../../src/model/ops.ts";
import type { WeightSource } from "../../src/model/weights.ts";
import { Rng } from "../../src/io/random.ts";

export const TINY: LlavaConfig = {
  modelType: "llava_next",
  text: {
    hiddenSize: 16, intermediateSize: 24, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 4, vocabSize: 48,
    rmsNormEps: 1e-6, ropeTheta: 10000, ropeScaling: null, maxPositionEmbeddings: 128, tieWordEmbeddings: false,
    hiddenAct: "silu", attentionBias: false, mlpBias: false,
  },
  vision: { hiddenSize: 8, intermediateSize: 12, numLayers: 2, numHeads: 2, imageSize: 8, patchSize: 4, numChannels: 3, layerNormEps: 1e-5, hiddenAct: "quick_gelu" },
  visionFeatureLayer: -2,
  visionFeatureSelectStrategy: "default",
  projectorHiddenAct: "gelu",
  multimodalProjectorBias: true,
  imageTokenIndex: 47,
  imageGridPinpoints: [[16, 16]],
  bosTokenId: 1,
  eosTokenIds: [2],
  padTokenId: null,
  dtype: "f32",
};

/** Every tensor of a checkpoint of `cfg` (all vision layers, like a real one), seeded. */
export function tinyWeights(cfg: LlavaConfig, seed = 1): Map<string, { shape: number[]; data: Float64Array }> {
  const rng = new Rng(seed);
  const m = new Map<string, { shape: number[]; data: Float64Array }>();
  const rand = (name: string, shape: number[], std: number, mean = 0): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    m.set(name, { shape, data: Float64Array.from({ length: n }, () => Math.fround(mean + std * rng.normal())) });
  };
  const t = cfg.text, v = cfg.vision;
  const H = t.hiddenSize, d = t.headDim, I = t.intermediateSize;
  const T = "model.language_model.";
  rand(`${T}embed_tokens.weight`, [t.vocabSize, H], 1);
  for (let l = 0; l < t.numLayers; l++) {
    const p = `${T}layers.${l}.`;
    rand(`${p}input_layernorm.weight`, [H], 0.1, 1);
    rand(`${p}post_attention_layernorm.weight`, [H], 0.1, 1);
    rand(`${p}self_attn.q_proj.weight`, [t.numHeads * d, H], 0.4);
    rand(`${p}self_attn.k_proj.weight`, [t.numKvHeads * d, H], 0.4);
    rand(`${p}self_attn.v_proj.weight`, [t.numKvHeads * d, H], 0.4);
    rand(`${p}self_attn.o_proj.weight`, [H, t.numHeads * d], 0.3);
    rand(`${p}mlp.gate_proj.weight`, [I, H], 0.3);
    rand(`${p}mlp.up_proj.weight`, [I, H], 0.3);
    rand(`${p}mlp.down_proj.weight`, [H, I], 0.3);
  }
  rand(`${T}norm.weight`, [H], 0.1, 1);
  rand("lm_head.weight", [t.vocabSize, H], 0.3);
  const V = "model.vision_tower.vision_model.";
  const D = v.hiddenSize, P = v.patchSize;
  rand(`${V}embeddings.patch_embedding.weight`, [D, v.numChannels, P, P], 0.2);
  rand(`${V}embeddings.class_embedding`, [D], 0.5);
  rand(`${V}embeddings.position_embedding.weight`, [(v.imageSize / P) ** 2 + 1, D], 0.5);
  rand(`${V}pre_layrnorm.weight`, [D], 0.1, 1);
  rand(`${V}pre_layrnorm.bias`, [D], 0.1);
  for (let l = 0; l < v.numLayers; l++) {
    const p = `${V}encoder.layers.${l}.`;
    for (const x of ["q", "k", "v", "out"]) {
      rand(`${p}self_attn.${x}_proj.weight`, [D, D], 0.4);
      rand(`${p}self_attn.${x}_proj.bias`, [D], 0.1);
    }
    for (const x of ["layer_norm1", "layer_norm2"]) {
      rand(`${p}${x}.weight`, [D], 0.1, 1);
      rand(`${p}${x}.bias`, [D], 0.1);
    }
    rand(`${p}mlp.fc1.weight`, [v.intermediateSize, D], 0.4);
    rand(`${p}mlp.fc1.bias`, [v.intermediateSize], 0.1);
    rand(`${p}mlp.fc2.weight`, [D, v.intermediateSize], 0.4);
    rand(`${p}mlp.fc2.bias`, [D], 0.1);
  }
  const nFeat = typeof cfg.visionFeatureLayer === "number" ? 1 : cfg.visionFeatureLayer.length;
  rand("model.multi_modal_projector.linear_1.weight", [H, D * nFeat], 0.4);
  rand("model.multi_modal_projector.linear_1.bias", [H], 0.1);
  rand("model.multi_modal_projector.linear_2.weight", [H, H], 0.3);
  rand("model.multi_modal_projector.linear_2.bias", [H], 0.1);
  rand("model.image_newline", [H], 0.5);
  return m;
}

export function sourceOf(m: ReadonlyMap<string, { shape: number[]; data: Float64Array }>): WeightSource {
  return {
    has: (name) => m.has(name),
    get(name): HostWeight {
      const t = m.get(name)!;
      return { dtype: "f32", shape: t.shape, bytes: new Uint8Array(Float32Array.from(t.data).buffer) };
    },
  };
}

// ---------------------------------------------------------------- reference (float64, formulas as written)
type W = ReadonlyMap<string, { shape: number[]; data: Float64Array }>;
type Mat = Float64Array[]; // rows

const get = (w: W, n: string): Float64Array => w.get(n)!.data;
const linear = (x: Mat, w: Float64Array, out: number, b?: Float64Array): Mat =>
  x.map((r) => Float64Array.from({ length: out }, (_, o) => {
    let s = b ? b[o]! : 0;
    for (let k = 0; k < r.length; k++) s += r[k]! * w[o * r.length + k]!;
    return s;
  }));
const rms = (x: Mat, g: Float64Array, eps: number): Mat => x.map((r) => {
  const ms = r.reduce((a, v) => a + v * v, 0) / r.length;
  return r.map((v, i) => (v / Math.sqrt(ms + eps)) * g[i]!);
});
const ln = (x: Mat, g: Float64Array, b: Float64Array, eps: number): Mat => x.map((r) => {
  const mu = r.reduce((a, v) => a + v, 0) / r.length;
  const va = r.reduce((a, v) => a + (v - mu) ** 2, 0) / r.length;
  return r.map((v, i) => ((v - mu) / Math.sqrt(va + eps)) * g[i]! + b[i]!);
});
const addM = (a: Mat, b: Mat): Mat => a.map((r, i) => r.map((v, j) => v + b[i]![j]!));
function erfRef(x: number): number {
  // Maclaurin series (exact enough for |x| < 3) and the asymptotic tail beyond.
  if (Math.abs(x) > 3) return Math.sign(x) * (1 - Math.exp(-x * x) / (Math.abs(x) * Math.sqrt(Math.PI)) * (1 - 1 / (2 * x * x)));
  let sum = 0, term = x;
  for (let n = 0; n < 80; n++) {
    sum += term / (2 * n + 1);
    term *= (-x * x) / (n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}
const gelu = (v: number): number => 0.5 * v * (1 + erfRef(v / Math.SQRT2));
const quickGelu = (v: number): number => v / (1 + Math.exp(-1.702 * v));

/** Multi-head attention on rows, heads split along features; kv head of query head h is floor(h / g). */
function mha(q: Mat, k: Mat, v: Mat, Hq: number, Hkv: number, d: number, causal: boolean, qPos?: number[], kPos?: number[]): Mat {
  const g = Hq / Hkv;
  return q.map((qr, i) => {
    const out = new Float64Array(Hq * d);
    for (let h = 0; h < Hq; h++) {
      const kv = Math.floor(h / g);
      const s: number[] = [];
      const idx: number[] = [];
      k.forEach((kr, j) => {
        if (causal && (kPos ? kPos[j]! : j) > (qPos ? qPos[i]! : i)) return;
        let dot = 0;
        for (let x = 0; x < d; x++) dot += qr[h * d + x]! * kr[kv * d + x]!;
        s.push(dot / Math.sqrt(d));
        idx.push(j);
      });
      const mx = Math.max(...s);
      const e = s.map((x) => Math.exp(x - mx));
      const z = e.reduce((a, b) => a + b, 0);
      idx.forEach((j, t) => { for (let x = 0; x < d; x++) out[h * d + x]! += (e[t]! / z) * v[j]![kv * d + x]!; });
    }
    return out;
  });
}

export function refRope(x: Mat, heads: number, d: number, positions: readonly number[], theta: number): Mat {
  return x.map((r, t) => {
    const o = Float64Array.from(r);
    for (let h = 0; h < heads; h++) for (let i = 0; i < d / 2; i++) {
      const ang = positions[t]! / theta ** ((2 * i) / d);
      const a = r[h * d + i]!, b = r[h * d + i + d / 2]!;
      o[h * d + i] = a * Math.cos(ang) - b * Math.sin(ang);
      o[h * d + i + d / 2] = b * Math.cos(ang) + a * Math.sin(ang);
    }
    return o;
  });
}

/** Projected features of one crop [C, S, S]: CLIP hidden_states[-2] without CLS, then the projector. */
export function refCropFeatures(cfg: LlavaConfig, w: W, px: Float64Array): Mat {
  const v = cfg.vision;
  const V = "model.vision_tower.vision_model.";
  const S = v.imageSize, P = v.patchSize, g = S / P, D = v.hiddenSize, C = v.numChannels;
  const conv = get(w, `${V}embeddings.patch_embedding.weight`);
  const emb: Mat = [Float64Array.from(get(w, `${V}embeddings.class_embedding`))];
  for (let gy = 0; gy < g; gy++) for (let gx = 0; gx < g; gx++) {
    emb.push(Float64Array.from({ length: D }, (_, o) => {
      let s = 0;
      for (let c = 0; c < C; c++) for (let ky = 0; ky < P; ky++) for (let kx = 0; kx < P; kx++)
        s += conv[((o * C + c) * P + ky) * P + kx]! * px[(c * S + gy * P + ky) * S + gx * P + kx]!;
      return s;
    }));
  }
  const pos = get(w, `${V}embeddings.position_embedding.weight`);
  let h = ln(emb.map((r, t) => r.map((x, i) => x + pos[t * D + i]!)), get(w, `${V}pre_layrnorm.weight`), get(w, `${V}pre_layrnorm.bias`), v.layerNormEps);
  const hs = [h];
  for (let l = 0; l < v.numLayers; l++) {
    const p = `${V}encoder.layers.${l}.`;
    const x = ln(h, get(w, `${p}layer_norm1.weight`), get(w, `${p}layer_norm1.bias`), v.layerNormEps);
    const pr = (n: string): Mat => linear(x, get(w, `${p}self_attn.${n}_proj.weight`), D, get(w, `${p}self_attn.${n}_proj.bias`));
    const a = linear(mha(pr("q"), pr("k"), pr("v"), v.numHeads, v.numHeads, D / v.numHeads, false), get(w, `${p}self_attn.out_proj.weight`), D, get(w, `${p}self_attn.out_proj.bias`));
    h = addM(h, a);
    const x2 = ln(h, get(w, `${p}layer_norm2.weight`), get(w, `${p}layer_norm2.bias`), v.layerNormEps);
    const f1 = linear(x2, get(w, `${p}mlp.fc1.weight`), v.intermediateSize, get(w, `${p}mlp.fc1.bias`)).map((r) => r.map(quickGelu));
    h = addM(h, linear(f1, get(w, `${p}mlp.fc2.weight`), D, get(w, `${p}mlp.fc2.bias`)));
    hs.push(h);
  }
  const layers = typeof cfg.visionFeatureLayer === "number" ? [cfg.visionFeatureLayer] : cfg.visionFeatureLayer;
  const pool = layers.map((l) => hs[l < 0 ? hs.length + l : l]!.slice(cfg.visionFeatureSelectStrategy === "default" ? 1 : 0));
  const sel = pool[0]!.map((_, t) => Float64Array.from(pool.flatMap((m) => [...m[t]!]))); // torch.cat(hs_pool, dim=-1)
  const H = cfg.text.hiddenSize;
  const y = linear(sel, get(w, "model.multi_modal_projector.linear_1.weight"), H, get(w, "model.multi_modal_projector.linear_1.bias")).map((r) => r.map(gelu));
  return linear(y, get(w, "model.multi_modal_projector.linear_2.weight"), H, get(w, "model.multi_modal_projector.linear_2.bias"));
}

/** pack_image_features as transformers writes it: view(nph, npw, h, w, C).permute(4, 0, 2, 1, 3).flatten(1, 2)
 *  .flatten(2, 3), unpad, append image_newline along the last dim, flatten(1, 2).transpose(0, 1), base first. */
export function refPack(cfg: LlavaConfig, w: W, crops: Mat[], imageSize: [number, number]): Mat {
  const side = cfg.vision.imageSize / cfg.vision.patchSize;
  const [nph, npw] = anyresGridShape(imageSize, cfg.imageGridPinpoints!, cfg.vision.imageSize);
  const H = cfg.text.hiddenSize;
  // feature[a][b][c][dd][e] of the view (a: patch row, b: patch col, c: row in patch, dd: col in patch, e: channel)
  const feat = (a: number, b: number, c: number, dd: number, e: number): number => crops[1 + a * npw + b]![c * side + dd]![e]!;
  // permute(4, 0, 2, 1, 3): [e][a][c][b][dd]; flatten -> grid[e][a*side + c][b*side + dd]
  const rows = nph * side, cols = npw * side;
  const u = unpaddedFeatureShape(imageSize, [rows, cols]);
  const nl = get(w, "model.image_newline");
  const out: Mat = [...crops[0]!];
  for (let y = u.rowStart; y < u.rowStart + u.rows; y++) {
    for (let x = u.colStart; x < u.colStart + u.cols; x++) {
      out.push(Float64Array.from({ length: H }, (_, e) => feat(Math.floor(y / side), Math.floor(x / side), y % side, x % side, e)));
    }
    out.push(Float64Array.from(nl));
  }
  if (out.length !== numImageTokens(cfg, imageSize)) throw new Error(`reference packed ${out.length} rows, numImageTokens says ${numImageTokens(cfg, imageSize)}`);
  return out;
}

export interface RefLayerKv {
  k: Mat; // rows = tokens, RoPE applied, [Hkv*d]
  v: Mat;
  pos: number[];
}

/** One LLaMA decoder layer on rows h at `positions`, attending to `past` (if any) plus themselves (causal). */
export function refDecoderLayer(cfg: LlavaConfig, w: W, l: number, h: Mat, positions: number[], past?: RefLayerKv): { h: Mat; kv: RefLayerKv } {
  const t = cfg.text, d = t.headDim, H = t.hiddenSize;
  const p = `model.language_model.layers.${l}.`;
  const x = rms(h, get(w, `${p}input_layernorm.weight`), t.rmsNormEps);
  const q = refRope(linear(x, get(w, `${p}self_attn.q_proj.weight`), t.numHeads * d), t.numHeads, d, positions, t.ropeTheta);
  const k = refRope(linear(x, get(w, `${p}self_attn.k_proj.weight`), t.numKvHeads * d), t.numKvHeads, d, positions, t.ropeTheta);
  const v = linear(x, get(w, `${p}self_attn.v_proj.weight`), t.numKvHeads * d);
  const kv = { k: [...(past?.k ?? []), ...k], v: [...(past?.v ?? []), ...v], pos: [...(past?.pos ?? []), ...positions] };
  const o = mha(q, kv.k, kv.v, t.numHeads, t.numKvHeads, d, true, positions, kv.pos);
  const h1 = addM(h, linear(o, get(w, `${p}self_attn.o_proj.weight`), H));
  const x2 = rms(h1, get(w, `${p}post_attention_layernorm.weight`), t.rmsNormEps);
  const gate = linear(x2, get(w, `${p}mlp.gate_proj.weight`), t.intermediateSize);
  const up = linear(x2, get(w, `${p}mlp.up_proj.weight`), t.intermediateSize);
  const m = gate.map((r, i) => r.map((g, j) => (g / (1 + Math.exp(-g))) * up[i]![j]!));
  return { h: addM(h1, linear(m, get(w, `${p}mlp.down_proj.weight`), H)), kv };
}

export function refLogits(cfg: LlavaConfig, w: W, h: Mat): Mat {
  const x = rms(h, get(w, "model.language_model.norm.weight"), cfg.text.rmsNormEps);
  return linear(x, get(w, "lm_head.weight"), cfg.text.vocabSize);
}

/** Dense logits of every position for ids with the image features at the image tokens. */
export function refForward(cfg: LlavaConfig, w: W, ids: Int32Array, image?: { pixels: Float64Array; crops: number; imageSize: [number, number] }): Mat {
  const H = cfg.text.hiddenSize;
  const E = get(w, "model.language_model.embed_tokens.weight");
  let h: Mat = Array.from(ids, (id) => E.slice(id * H, (id + 1) * H));
  if (image) {
    const per = cfg.vision.numChannels * cfg.vision.imageSize ** 2;
    const crops = Array.from({ length: image.crops }, (_, i) => refCropFeatures(cfg, w, image.pixels.subarray(i * per, (i + 1) * per)));
    const feats = cfg.modelType === "llava" ? crops[0]! : refPack(cfg, w, crops, image.imageSize);
    let k = 0;
    h = h.map((r, i) => (ids[i] === cfg.imageTokenIndex ? feats[k++]! : r));
    if (k !== feats.length) throw new Error("reference: image token count mismatch");
  }
  const positions = Array.from(ids, (_, i) => i);
  for (let l = 0; l < cfg.text.numLayers; l++) h = refDecoderLayer(cfg, w, l, h, positions).h;
  return refLogits(cfg, w, h);
}
