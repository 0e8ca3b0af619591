// STUB (being written by helper A1): signatures only.
import type { LlavaConfig } from "../config.ts";
import type { Preprocessed, ProcessorConfig, RgbImage } from "./types.ts";
export function loadProcessorConfig(dir: string): ProcessorConfig { throw new Error("not yet: " + dir); }
export function preprocess(image: RgbImage, processorConfig: ProcessorConfig, config: LlavaConfig): Preprocessed { throw new Error("not yet" + String([image, processorConfig, config])); }
