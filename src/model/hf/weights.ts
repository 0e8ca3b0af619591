// STUB (being written by helper A1): signatures only.
import type { LlavaConfig } from "../config.ts";
import type { WeightStore } from "./types.ts";
export function openWeights(dir: string): WeightStore { throw new Error("not yet: " + dir); }
export function expectedWeights(config: LlavaConfig): Map<string, readonly number[]> { throw new Error("not yet" + String(config)); }
export function visionLayersNeeded(config: LlavaConfig): number { throw new Error("not yet" + String(config)); }
export function checkWeights(config: LlavaConfig, store: WeightStore): void { throw new Error("not yet" + String(config) + String(store)); }
