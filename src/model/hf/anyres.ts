// LLaVA-Next "anyres" arithmetic, transcribed from transformers (image_processing_utils.select_best_resolution,
// modeling_llava_next.get_anyres_image_grid_shape / unpad_image, processing_llava_next._get_number_of_features).
// The processor and the model must agree on these numbers: the processor expands `<image>` into
// numImageTokens ids, the model packs exactly that many feature rows (base image, then the unpadded grid with
// one image_newline per row).
import type { LlavaConfig } from "../config.ts";
import { ModelError } from "./errors.ts";

export type Size = readonly [height: number, width: number];

/** Python's int(round(x, 7)) for the non-negative values used here (toFixed rounds the exact binary value). */
const roundInt7 = (x: number): number => Math.trunc(Number(x.toFixed(7)));

/** The pinpoint [h, w] that keeps the most of the image's resolution, then wastes the least (first wins ties). */
export function selectBestResolution(original: Size, pinpoints: readonly (readonly number[])[]): Size {
  const [oh, ow] = original;
  let best: Size | null = null;
  let maxEffective = 0;
  let minWasted = Infinity;
  for (const p of pinpoints) {
    const h = p[0]!;
    const w = p[1]!;
    const scale = Math.min(w / ow, h / oh);
    const dw = Math.trunc(ow * scale);
    const dh = Math.trunc(oh * scale);
    const effective = Math.min(dw * dh, ow * oh);
    const wasted = w * h - effective;
    if (effective > maxEffective || (effective === maxEffective && wasted < minWasted)) {
      maxEffective = effective;
      minWasted = wasted;
      best = [h, w];
    }
  }
  if (best === null) throw new ModelError("ZV6004", ["image_grid_pinpoints", "[]", "needs at least one [height, width]"]);
  return best;
}

/** get_anyres_image_grid_shape: how many vision-tile rows and columns the best resolution splits into. */
export function anyresGridShape(imageSize: Size, pinpoints: readonly (readonly number[])[], tileSize: number): Size {
  const [h, w] = selectBestResolution(imageSize, pinpoints);
  return [Math.floor(h / tileSize), Math.floor(w / tileSize)];
}

/** unpad_image on a feature map of `current` = [gridRows * side, gridCols * side]: the window [rowStart, rowStart +
 *  rows) x [colStart, colStart + cols) that remains once the letterbox padding of an `original`-sized image is cut. */
export function unpaddedFeatureShape(original: Size, current: Size): { rows: number; cols: number; rowStart: number; colStart: number } {
  const [oh, ow] = original;
  const [ch, cw] = current;
  if (ow / oh > cw / ch) {
    const newH = roundInt7(oh * (cw / ow));
    const pad = Math.floor((ch - newH) / 2);
    return { rows: ch - 2 * pad, cols: cw, rowStart: pad, colStart: 0 };
  }
  const newW = roundInt7(ow * (ch / oh));
  const pad = Math.floor((cw - newW) / 2);
  return { rows: ch, cols: cw - 2 * pad, rowStart: 0, colStart: pad };
}

/** Feature rows per image for the "default" (CLS dropped) and "full" select strategies. */
function tileTokens(config: LlavaConfig): number {
  const side = Math.floor(config.vision.imageSize / config.vision.patchSize);
  return side * side + (config.visionFeatureSelectStrategy === "full" ? 1 : 0);
}

/** How many ids one `<image>` expands to (= feature rows the model produces for an image of `imageSize` [h, w]). */
export function numImageTokens(config: LlavaConfig, imageSize: Size): number {
  if (config.modelType === "llava") return tileTokens(config);
  if (config.visionFeatureSelectStrategy === "full") {
    throw new ModelError("ZV6005", ["config.json", "llava_next with vision_feature_select_strategy 'full' (the CLS token breaks the anyres grid)"]);
  }
  const pinpoints = config.imageGridPinpoints;
  if (pinpoints === null) throw new ModelError("ZV6004", ["config.json", "image_grid_pinpoints", "llava_next needs image_grid_pinpoints"]);
  const side = Math.floor(config.vision.imageSize / config.vision.patchSize);
  const [gh, gw] = anyresGridShape(imageSize, pinpoints, config.vision.imageSize);
  const { rows, cols } = unpaddedFeatureShape(imageSize, [gh * side, gw * side]);
  return side * side + rows * (cols + 1);
}

/** Replaces the k-th occurrence of `imageTokenId` with counts[k] copies of it (what the processor does to the text). */
export function expandImageTokens(ids: Int32Array, imageTokenId: number, counts: readonly number[]): Int32Array {
  const found = ids.reduce((n, id) => n + (id === imageTokenId ? 1 : 0), 0);
  if (found !== counts.length) {
    throw new ModelError("ZV6012", ["prompt", `${found} image token(s) (id ${imageTokenId}) in the prompt but ${counts.length} image(s) given`]);
  }
  const out: number[] = [];
  let k = 0;
  for (const id of ids) {
    if (id !== imageTokenId) out.push(id);
    else for (let i = 0, n = counts[k++]!; i < n; i++) out.push(id);
  }
  return Int32Array.from(out);
}
