// STUB (being written by helper A1): signatures only.
import type { ChatTokenizer } from "./types.ts";
export function loadTokenizer(dir: string): ChatTokenizer { throw new Error("not yet: " + dir); }
