// STUB (being written by helper A1): signatures only.
import type { WriteOptions } from "./types.ts";
export function writeRandomLlavaNext(dir: string, opts: WriteOptions = {}): void { throw new Error("not yet: " + dir + String(opts)); }
