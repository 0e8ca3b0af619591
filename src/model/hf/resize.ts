// Pillow's Image.resize for 8-bit RGB (libImaging/Resample.c), which transformers' PIL-backend image processors
// call: separable convolution, horizontal pass first into an 8-bit image, then vertical; filter support scaled by
// the downscale factor (antialiasing); coefficients normalized, then fixed-point with 22 fractional bits,
// rounded and clipped to 0..255 after each pass. Reproducing the integer arithmetic gives Pillow's exact bytes.
import type { RgbImage } from "./types.ts";

const PRECISION_BITS = 32 - 8 - 2;

interface Filter {
  readonly support: number;
  readonly f: (x: number) => number;
}

/** PIL resample ids: 2 = BILINEAR, 3 = BICUBIC (a = -0.5). */
export const FILTERS: Readonly<Record<number, Filter>> = {
  2: { support: 1, f: (x) => (x < 0 ? -x : x) < 1 ? 1 - (x < 0 ? -x : x) : 0 },
  3: {
    support: 2,
    f: (x0) => {
      const a = -0.5;
      const x = x0 < 0 ? -x0 : x0;
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
};

/** precompute_coeffs + normalize_coeffs_8bpc: per output index, the first input index and integer weights. */
function coefficients(inSize: number, outSize: number, filter: Filter): { bounds: Int32Array; ksize: number; kk: Float64Array } {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Float64Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      w[x] = filter.f((x + xmin - center + 0.5) * ss);
      ww += w[x]!;
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? w[x]! / ww : w[x]!;
      kk[xx * ksize + x] = Math.trunc(k < 0 ? -0.5 + k * (1 << PRECISION_BITS) : 0.5 + k * (1 << PRECISION_BITS));
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { bounds, ksize, kk };
}

const clip8 = (v: number): number => (v >= 1 << (PRECISION_BITS + 8) ? 255 : v <= 0 ? 0 : Math.floor(v / (1 << PRECISION_BITS)));

/** One pass along x (stride 3 within a row) or y (stride 3 * width between rows). */
function pass(src: RgbImage, outW: number, outH: number, horizontal: boolean, filter: Filter): RgbImage {
  const inSize = horizontal ? src.width : src.height;
  const outSize = horizontal ? outW : outH;
  const { bounds, ksize, kk } = coefficients(inSize, outSize, filter);
  const out = new Uint8Array(outW * outH * 3);
  const half = 1 << (PRECISION_BITS - 1);
  const inRow = src.width * 3;
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const o = horizontal ? x : y;
      const xmin = bounds[2 * o]!;
      const xmax = bounds[2 * o + 1]!;
      const k = o * ksize;
      let s0 = half, s1 = half, s2 = half;
      for (let i = 0; i < xmax; i++) {
        const p = horizontal ? y * inRow + (xmin + i) * 3 : (xmin + i) * inRow + x * 3;
        const c = kk[k + i]!;
        s0 += src.rgb[p]! * c;
        s1 += src.rgb[p + 1]! * c;
        s2 += src.rgb[p + 2]! * c;
      }
      const q = (y * outW + x) * 3;
      out[q] = clip8(s0);
      out[q + 1] = clip8(s1);
      out[q + 2] = clip8(s2);
    }
  }
  return { width: outW, height: outH, rgb: out };
}

/** Image.resize((width, height), resample) of an RGB image; same size returns the image unchanged (as Pillow). */
export function resizeRgb(img: RgbImage, width: number, height: number, resample: number): RgbImage {
  const filter = FILTERS[resample];
  if (filter === undefined) throw new Error(`resample ${resample}`);
  let cur = img;
  if (width !== cur.width) cur = pass(cur, width, cur.height, true, filter);
  if (height !== cur.height) cur = pass(cur, width, height, false, filter);
  return cur;
}

/** Constant-color padding (numpy pad / PIL paste onto a filled canvas). */
export function padRgb(img: RgbImage, top: number, bottom: number, left: number, right: number, color: readonly number[] = [0, 0, 0]): RgbImage {
  const width = img.width + left + right;
  const height = img.height + top + bottom;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) rgb.set(color.slice(0, 3), i * 3);
  for (let y = 0; y < img.height; y++) {
    rgb.set(img.rgb.subarray(y * img.width * 3, (y + 1) * img.width * 3), ((y + top) * width + left) * 3);
  }
  return { width, height, rgb };
}

/** The window [top, top + height) x [left, left + width), which must lie inside the image. */
export function cropRgb(img: RgbImage, top: number, left: number, width: number, height: number): RgbImage {
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const s = ((y + top) * img.width + left) * 3;
    rgb.set(img.rgb.subarray(s, s + width * 3), y * width * 3);
  }
  return { width, height, rgb };
}
