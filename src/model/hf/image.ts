// PNG (pngjs) and JPEG (jpeg-js) decoding to 8-bit RGB, what PIL's Image.convert("RGB") gives the HF processors:
// alpha is dropped (not composited), gray and palette images expand to RGB, 16-bit samples scale to 8 bits.
// (JPEG decoders differ in IDCT/chroma upsampling by a level or so; PNG is exact.)
import { readFileSync } from "node:fs";
import jpeg from "jpeg-js";
import { PNG } from "pngjs";
import { ModelError } from "./errors.ts";
import type { RgbImage } from "./types.ts";

const isPng = (b: Uint8Array): boolean => b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47;
const isJpeg = (b: Uint8Array): boolean => b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;

/** Drops every 4th byte of RGBA. */
function rgbaToRgb(rgba: Uint8Array, n: number): Uint8Array {
  const rgb = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    rgb[3 * i] = rgba[4 * i]!;
    rgb[3 * i + 1] = rgba[4 * i + 1]!;
    rgb[3 * i + 2] = rgba[4 * i + 2]!;
  }
  return rgb;
}

/** Decodes a PNG or JPEG file (path) or its bytes. */
export function loadImage(src: string | Uint8Array): RgbImage {
  const source = typeof src === "string" ? src : "<image bytes>";
  let bytes: Uint8Array;
  if (typeof src === "string") {
    try {
      bytes = readFileSync(src);
    } catch (e) {
      const why = (e as { code?: string }).code === "ENOENT" ? "file not found" : String(e);
      throw new ModelError("ZV6001", [src, why], { cause: e });
    }
  } else bytes = src;
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let width: number;
  let height: number;
  let rgb: Uint8Array;
  try {
    if (isPng(bytes)) {
      const png = PNG.sync.read(buf);
      ({ width, height } = png);
      rgb = rgbaToRgb(png.data, width * height);
    } else if (isJpeg(bytes)) {
      const img = jpeg.decode(buf, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 1024 });
      ({ width, height } = img);
      rgb = rgbaToRgb(img.data, width * height);
    } else {
      throw new ModelError("ZV6013", [source]);
    }
  } catch (e) {
    if (e instanceof ModelError) throw e;
    throw new ModelError("ZV6014", [source, (e as Error).message], { cause: e });
  }
  if (width <= 0 || height <= 0) throw new ModelError("ZV6014", [source, `empty image ${width}x${height}`]);
  return { width, height, rgb };
}
