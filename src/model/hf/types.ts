// Public types of the HF checkpoint layer (src/model/hf). The model (src/model/llava*.ts) reads only these.
import type { HostWeight, ModelDType } from "../ops.ts";

/** Lazily read weights of one checkpoint, under transformers-5 names (model.language_model.*, lm_head.weight ...). */
export interface WeightStore {
  readonly dir: string;
  /** Normalized names, sorted. */
  names(): string[];
  has(name: string): boolean;
  /** Reads the tensor's bytes from disk (positioned read; nothing is cached). */
  get(name: string): HostWeight;
  info(name: string): { readonly dtype: ModelDType; readonly shape: readonly number[] };
}

export type ChatContent = string | readonly ({ readonly type: "image" } | { readonly type: "text"; readonly text: string })[];
export interface ChatMessage {
  readonly role: string;
  readonly content: ChatContent;
}

export interface ChatTokenizer {
  readonly vocabSize: number;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  /** HF `tokenizer(text)`: the post-processor's special tokens are added unless addSpecialTokens is false. */
  encode(text: string, opts?: { readonly addSpecialTokens?: boolean }): Int32Array;
  decode(ids: ArrayLike<number>, skipSpecial?: boolean): string;
  tokenToId(token: string): number | undefined;
  /** Renders the checkpoint's chat template (a string; tokenize it with encode). */
  applyChatTemplate(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string;
}

export interface RgbImage {
  readonly width: number;
  readonly height: number;
  /** Row-major HWC, 3 bytes per pixel. */
  readonly rgb: Uint8Array;
}

/** The fields of preprocessor_config.json that preprocessing reads (HF names). */
export interface ProcessorConfig {
  readonly image_processor_type?: string;
  readonly do_resize?: boolean;
  readonly size?: { readonly shortest_edge?: number; readonly height?: number; readonly width?: number };
  readonly resample?: number;
  readonly do_center_crop?: boolean;
  readonly crop_size?: { readonly height: number; readonly width: number } | number;
  readonly do_rescale?: boolean;
  readonly rescale_factor?: number;
  readonly do_normalize?: boolean;
  readonly image_mean?: readonly number[];
  readonly image_std?: readonly number[];
  readonly do_convert_rgb?: boolean;
  readonly do_pad?: boolean;
  readonly image_grid_pinpoints?: readonly (readonly number[])[];
  /** processor_config.json fields, merged in by loadProcessorConfig. */
  readonly patch_size?: number;
  readonly vision_feature_select_strategy?: string;
  readonly num_additional_image_tokens?: number;
  readonly image_token?: string;
}

export interface Preprocessed {
  /** [numPatches, 3, H, W] row-major float32 (llava: numPatches = 1; llava_next: base image first, then the grid). */
  readonly pixelValues: Float32Array;
  readonly shape: readonly [number, number, number, number];
  /** Original image size [height, width] (HF image_sizes). */
  readonly imageSizes: readonly [number, number];
  /** How many image tokens `<image>` expands to for this image. */
  readonly numImageTokens: number;
}

export interface WriteOptions {
  readonly seed?: number;
  /** Checkpoint dtype (default f32). */
  readonly dtype?: ModelDType;
  /** >1 writes model-0000k-of-0000n.safetensors shards and model.safetensors.index.json. */
  readonly shards?: number;
  /** Overrides of the small default sizes. */
  readonly textHidden?: number;
  readonly textLayers?: number;
  readonly textHeads?: number;
  readonly textKvHeads?: number;
  readonly textIntermediate?: number;
  readonly visionHidden?: number;
  readonly visionLayers?: number;
  readonly visionHeads?: number;
  readonly imageSize?: number;
  readonly patchSize?: number;
  /** Write the pre-transformers-5 tensor names (language_model.model.*, ...), to test the renaming. */
  readonly legacyNames?: boolean;
}
