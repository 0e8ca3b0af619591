// Model shapes the GPU benchmarks share.
import type { LlavaConfig } from "../src/model/config.ts";
import type { CudaOpsHandle } from "../src/model/cuda-ops.ts";
import { TEXT, Weights, weightSpecs } from "../src/model/weights.ts";

/** A LLaVA-Next-13B-shaped config (Vicuna-13B decoder: 5120 hidden, 40 layers, 40 heads, 13824 MLP, bf16). The
 *  benchmarks run the decoder only; the vision part is there because weightSpecs reads a whole LLaVA config. */
export function llavaNext13b(layers: number, maxPositions: number): LlavaConfig {
  return {
    modelType: "llava_next",
    text: {
      hiddenSize: 5120, intermediateSize: 13824, numLayers: layers, numHeads: 40, numKvHeads: 40, headDim: 128, vocabSize: 32064,
      rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: null, maxPositionEmbeddings: maxPositions, tieWordEmbeddings: false,
      hiddenAct: "silu", attentionBias: false, mlpBias: false,
    },
    vision: { hiddenSize: 1024, intermediateSize: 4096, numLayers: 1, numHeads: 16, imageSize: 336, patchSize: 14, numChannels: 3, layerNormEps: 1e-5, hiddenAct: "quick_gelu" },
    visionFeatureLayer: -2, visionFeatureSelectStrategy: "default", projectorHiddenAct: "gelu", multimodalProjectorBias: true,
    imageTokenIndex: 32000, imageGridPinpoints: [[336, 672]], bosTokenId: 1, eosTokenIds: [2], padTokenId: null, dtype: "bf16",
  };
}

/** The decoder's weights (and lm_head) of `cfg` drawn on the device: every matrix N(0, 0.02) by the init kernel, seeds
 *  1, 2, ... in weightSpecs order, norm weights 1 (uploaded). Nothing of the matrices touches the host. */
export function deviceDecoderWeights(ops: CudaOpsHandle, cfg: LlavaConfig): { w: Weights; params: number } {
  const w = new Weights(ops);
  let params = 0;
  let seed = 1;
  for (const s of weightSpecs(cfg)) {
    if (!(s.name.startsWith(TEXT) || s.name === "lm_head.weight")) continue;
    const n = s.shape.reduce((a, b) => a * b, 1);
    params += n;
    if (s.shape.length === 1) w.set(s.name, ops.fromF32(s.shape, new Float32Array(n).fill(1)));
    else {
      const buf = ops.ctx.dev.alloc(n * 2);
      ops.kernels.init(buf, n, seed++, 0.02);
      w.set(s.name, ops.adopt(buf, s.shape));
    }
  }
  ops.sync();
  return { w, params };
}

/** The device copy rate through the model kernels' elementwise copy: 1 GiB of bf16 copied, read + write bytes over
 *  the best of 5 timed runs (after one warm-up), in TB/s. A scalar kernel: below what PyTorch's copy_ reaches. */
export function eltCopyTbps(ops: CudaOpsHandle): number {
  const n = 1 << 29;
  const a = ops.empty([n]), b = ops.empty([n]);
  let best = Infinity;
  try {
    for (let i = 0; i < 6; i++) {
      const ms = ops.ctx.dev.time(() => ops.kernels.elt("copy", ops.bufferOf(a), null, ops.bufferOf(b), n), ops.stream);
      if (i > 0) best = Math.min(best, ms);
    }
  } finally {
    ops.free(a);
    ops.free(b);
  }
  return (4 * n) / (best * 1e9);
}
