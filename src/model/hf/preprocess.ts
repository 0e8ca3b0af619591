// Image -> pixel values, following transformers' PIL-backend image processors step by step:
// CLIPImageProcessor / LlavaImageProcessor (llava: [pad to square], resize shortest edge, center crop, rescale,
// normalize) and LlavaNextImageProcessor (llava_next: the base image resized to a square, then the image
// resized into the best pinpoint resolution, letterboxed with zeros and cut into crop-sized tiles; every tile
// then goes through the CLIP steps). Resizes are Pillow's (resize.ts); rescale is float64 then float32, and
// normalize is float32, as numpy does it.
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { LlavaConfig } from "../config.ts";
import { numImageTokens, selectBestResolution } from "./anyres.ts";
import { readJsonFile } from "./config.ts";
import { ModelError } from "./errors.ts";
import { cropRgb, FILTERS, padRgb, resizeRgb } from "./resize.ts";
import type { Preprocessed, ProcessorConfig, RgbImage } from "./types.ts";

const OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711];

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);

/** preprocessor_config.json, with processor_config.json's processor-level fields (patch_size, image_token ...)
 *  and any nested "image_processor" object merged in. */
export function loadProcessorConfig(dir: string): ProcessorConfig {
  const pre = join(dir, "preprocessor_config.json");
  const proc = join(dir, "processor_config.json");
  let merged: Record<string, unknown> = {};
  if (existsSync(proc)) {
    const p = readJsonFile(proc);
    if (!isObj(p)) throw new ModelError("ZV6015", [proc, "top level is not an object"]);
    const { image_processor: nested, ...rest } = p;
    merged = { ...rest, ...(isObj(nested) ? nested : {}) };
  }
  if (existsSync(pre)) {
    const p = readJsonFile(pre);
    if (!isObj(p)) throw new ModelError("ZV6015", [pre, "top level is not an object"]);
    merged = { ...merged, ...p };
  } else if (!existsSync(proc)) {
    throw new ModelError("ZV6001", [pre, "file not found"]);
  }
  return merged as ProcessorConfig;
}

interface Steps {
  readonly resample: number;
  readonly doResize: boolean;
  readonly size: { readonly shortest_edge?: number; readonly height?: number; readonly width?: number };
  readonly doCrop: boolean;
  readonly crop: readonly [number, number]; // [height, width]
  readonly doRescale: boolean;
  readonly rescale: number;
  readonly doNormalize: boolean;
  readonly mean: readonly number[];
  readonly std: readonly number[];
}

function steps(pc: ProcessorConfig, source: string): Steps {
  const bad = (why: string) => new ModelError("ZV6015", [source, why]);
  const resample = pc.resample ?? 3;
  if (FILTERS[resample] === undefined) throw bad(`resample=${resample} (supported: 2 bilinear, 3 bicubic)`);
  const size = pc.size ?? { shortest_edge: 224 };
  const posInt = (x: unknown) => Number.isSafeInteger(x) && (x as number) > 0;
  if (!(posInt(size.shortest_edge) || (posInt(size.height) && posInt(size.width)))) {
    throw bad(`size=${JSON.stringify(size)} (need {shortest_edge} or {height, width})`);
  }
  const c = pc.crop_size ?? { height: 224, width: 224 };
  const crop: [number, number] = typeof c === "number" ? [c, c] : [c.height, c.width];
  if (!crop.every(posInt)) throw bad(`crop_size=${JSON.stringify(c)}`);
  const mean = pc.image_mean ?? OPENAI_CLIP_MEAN;
  const std = pc.image_std ?? OPENAI_CLIP_STD;
  if (mean.length !== 3 || std.length !== 3 || std.some((s) => !(s > 0))) {
    throw bad(`image_mean=${JSON.stringify(mean)} image_std=${JSON.stringify(std)} (need 3 values, std > 0)`);
  }
  return {
    resample, doResize: pc.do_resize ?? true, size, doCrop: pc.do_center_crop ?? true, crop,
    doRescale: pc.do_rescale ?? true, rescale: pc.rescale_factor ?? 1 / 255, doNormalize: pc.do_normalize ?? true, mean, std,
  };
}

/** get_resize_output_image_size(default_to_square=False): the short side becomes `short`, the long side scales
 *  (truncated). Returns [height, width]. */
function shortestEdgeSize(h: number, w: number, short: number): [number, number] {
  const [s, l] = w <= h ? [w, h] : [h, w];
  const newLong = Math.trunc((short * l) / s);
  return w <= h ? [newLong, short] : [short, newLong];
}

/** image_transforms.center_crop, padding with zeros when the image is smaller than the crop. */
function centerCrop(img: RgbImage, ch: number, cw: number): RgbImage {
  const padH = Math.max(ch - img.height, 0);
  const padW = Math.max(cw - img.width, 0);
  const t = Math.ceil(padH / 2);
  const l = Math.ceil(padW / 2);
  const padded = padH > 0 || padW > 0 ? padRgb(img, t, padH - t, l, padW - l) : img;
  return cropRgb(padded, Math.floor((padded.height - ch) / 2), Math.floor((padded.width - cw) / 2), cw, ch);
}

/** The CLIP steps on one image, appended as CHW float32 at `out[offset...]`. */
function clipSteps(img: RgbImage, s: Steps, out: Float32Array, offset: number): void {
  let cur = img;
  if (s.doResize) {
    const [h, w] = s.size.shortest_edge !== undefined ? shortestEdgeSize(cur.height, cur.width, s.size.shortest_edge) : [s.size.height!, s.size.width!];
    cur = resizeRgb(cur, w, h, s.resample);
  }
  if (s.doCrop) cur = centerCrop(cur, s.crop[0], s.crop[1]);
  const hw = cur.width * cur.height;
  const mean = s.mean.map(Math.fround);
  const std = s.std.map(Math.fround);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < hw; i++) {
      let v = cur.rgb[i * 3 + c]!;
      if (s.doRescale) v = Math.fround(v * s.rescale);
      if (s.doNormalize) v = Math.fround(Math.fround(v - mean[c]!) / std[c]!);
      out[offset + c * hw + i] = v;
    }
  }
}

/** Tile side of the llava_next grid: the crop size, which must be square and the vision tower's image size. */
function outputSize(s: Steps, config: LlavaConfig, source: string): number {
  const [ch, cw] = s.doCrop ? s.crop : [s.size.height ?? s.size.shortest_edge!, s.size.width ?? s.size.shortest_edge!];
  if (ch !== cw || ch !== config.vision.imageSize) {
    throw new ModelError("ZV6015", [source, `processed images are ${ch}x${cw} but the vision tower takes ${config.vision.imageSize}x${config.vision.imageSize}`]);
  }
  return ch;
}

/** Pixel values for one image (HF's pixel_values[0] and image_sizes[0]), and its `<image>` token count. */
export function preprocess(image: RgbImage, pc: ProcessorConfig, config: LlavaConfig, source = "preprocessor_config.json"): Preprocessed {
  const s = steps(pc, source);
  const side = outputSize(s, config, source);
  const imageSizes: [number, number] = [image.height, image.width];
  const per = 3 * side * side;
  if (config.modelType === "llava") {
    let img = image;
    if (pc.do_pad === true && img.width !== img.height) {
      // LlavaImageProcessor: pad to a square of the mean color (int(255 * mean)), the image centered.
      const color = s.mean.map((m) => Math.trunc(m * 255));
      const d = Math.max(img.width, img.height);
      const t = Math.floor((d - img.height) / 2);
      const l = Math.floor((d - img.width) / 2);
      img = padRgb(img, t, d - img.height - t, l, d - img.width - l, color);
    }
    const pixelValues = new Float32Array(per);
    clipSteps(img, s, pixelValues, 0);
    return { pixelValues, shape: [1, 3, side, side], imageSizes, numImageTokens: numImageTokens(config, imageSizes) };
  }
  const pinpoints = pc.image_grid_pinpoints ?? config.imageGridPinpoints;
  if (pinpoints === null || pinpoints === undefined) throw new ModelError("ZV6015", [source, "llava_next needs image_grid_pinpoints"]);
  const [bh, bw] = selectBestResolution(imageSizes, pinpoints);
  // get_patch_output_size: fit inside the best resolution, keeping the aspect ratio (ceil, capped).
  const sw = bw / image.width;
  const sh = bh / image.height;
  const [nh, nw] = sw < sh ? [Math.min(Math.ceil(image.height * sw), bh), bw] : [bh, Math.min(Math.ceil(image.width * sh), bw)];
  const resized = resizeRgb(image, nw, nh, s.resample);
  const py = Math.floor((bh - nh) / 2);
  const px = Math.floor((bw - nw) / 2);
  const padded = padRgb(resized, py, bh - nh - py, px, bw - nw - px);
  const tiles: RgbImage[] = [];
  // The base image: resized straight to a square of the shortest_edge (or min(height, width)) size.
  const base = s.size.shortest_edge ?? Math.min(s.size.height!, s.size.width!);
  tiles.push(resizeRgb(image, base, base, s.resample));
  for (let y = 0; y < bh; y += side) for (let x = 0; x < bw; x += side) tiles.push(cropRgb(padded, y, x, Math.min(side, bw - x), Math.min(side, bh - y)));
  const pixelValues = new Float32Array(per * tiles.length);
  tiles.forEach((t, i) => clipSteps(t, s, pixelValues, i * per));
  return { pixelValues, shape: [tiles.length, 3, side, side], imageSizes, numImageTokens: numImageTokens(config, imageSizes) };
}
