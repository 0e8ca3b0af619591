// The normalized configuration of a LLaVA-family checkpoint (HF `llava` = LLaVA-1.5, `llava_next` = LLaVA-Next).
// hf/config.ts parses config.json (both the old nested layout and transformers 5's) into this; the model reads
// only this. Field meanings follow transformers' LlavaConfig / LlavaNextConfig / CLIPVisionConfig / LlamaConfig.

export interface TextConfig {
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number; // head_dim, default hidden/heads
  readonly vocabSize: number;
  readonly rmsNormEps: number;
  readonly ropeTheta: number;
  /** rope_scaling / rope_parameters: null (default), linear, dynamic, llama3, yarn ... (unknown types: coded error). */
  readonly ropeScaling: Readonly<Record<string, unknown>> | null;
  readonly maxPositionEmbeddings: number;
  readonly tieWordEmbeddings: boolean;
  readonly hiddenAct: "silu";
  readonly attentionBias: boolean;
  readonly mlpBias: boolean;
}

export interface VisionConfig {
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly imageSize: number;
  readonly patchSize: number;
  readonly numChannels: number;
  readonly layerNormEps: number;
  readonly hiddenAct: "quick_gelu" | "gelu" | "gelu_tanh";
}

export interface LlavaConfig {
  readonly modelType: "llava" | "llava_next";
  readonly text: TextConfig;
  readonly vision: VisionConfig;
  /** vision_feature_layer: index into hidden_states (negative from the end), or several (concatenated). */
  readonly visionFeatureLayer: number | readonly number[];
  readonly visionFeatureSelectStrategy: "default" | "full";
  readonly projectorHiddenAct: "gelu" | "quick_gelu" | "gelu_tanh" | "silu";
  readonly multimodalProjectorBias: boolean;
  readonly imageTokenIndex: number;
  /** llava_next only: candidate resolutions [height, width]. */
  readonly imageGridPinpoints: readonly (readonly [number, number])[] | null;
  readonly bosTokenId: number | null;
  readonly eosTokenIds: readonly number[];
  readonly padTokenId: number | null;
  /** Checkpoint storage dtype (torch_dtype / dtype). */
  readonly dtype: "f32" | "f16" | "bf16";
}
