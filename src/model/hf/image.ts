// STUB (being written by helper A1): signatures only.
import type { RgbImage } from "./types.ts";
export function loadImage(src: string | Uint8Array): RgbImage { throw new Error("not yet: " + String(src)); }
