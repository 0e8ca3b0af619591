// Hugging Face LLaVA / LLaVA-Next checkpoints: config.json, safetensors weights, tokenizer, images and the
// processor arithmetic the model needs. The model (src/model/llava*.ts) imports from here only.
export { ModelError, MODEL_CODES, type ModelErrorCode } from "./errors.ts";
export type { WeightStore, ChatTokenizer, ChatMessage, ChatContent, RgbImage, ProcessorConfig, Preprocessed, WriteOptions } from "./types.ts";
export { parseConfig, loadConfig } from "./config.ts";
export { openWeights, checkWeights, expectedWeights, visionLayersNeeded } from "./weights.ts";
export { loadTokenizer } from "./tokenizer.ts";
export { loadImage } from "./image.ts";
export { preprocess, loadProcessorConfig } from "./preprocess.ts";
export { selectBestResolution, anyresGridShape, unpaddedFeatureShape, numImageTokens, expandImageTokens } from "./anyres.ts";
export { writeRandomLlavaNext } from "./writer.ts";
