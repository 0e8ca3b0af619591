// Tuning records: generated/tuning/<gpu-key>.json, one file per GPU (and backend). A record is used only when the
// whole key matches the running setup (GPU name, compute capability, driver, toolchain, kernel-library hash; the
// adapter for WebGPU); a stale, foreign or unreadable file is ignored with a one-line notice on stderr, once.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { knobs } from "../knobs.ts";
import { TuneError } from "./errors.ts";
import type { TuneShape } from "./shapes.ts";

export const RECORD_VERSION = 1;

export interface RecordKey {
  readonly backend: "cuda" | "webgpu";
  /** GPU name (CUDA) or adapter "vendor architecture device description" (WebGPU). */
  readonly device: string;
  /** Compute capability "9.0" (CUDA) or "" (WebGPU). */
  readonly cc: string;
  /** cuDriverGetVersion (CUDA) or the webgpu (Dawn) package version. */
  readonly driver: string;
  /** "nvcc 13.0.48" / "nvrtc 13.0", or "wgsl". */
  readonly toolchain: string;
  /** Hash of the templates and device library the configs were measured with. */
  readonly library: string;
}

export interface RecordEntry {
  readonly stage: string;
  readonly bucket: string;
  readonly config: Readonly<Record<string, number | boolean>>;
  /** Median time of the chosen config and of the fallback, milliseconds (what was timed: see `timed`). */
  readonly ms: number;
  readonly fallbackMs: number;
  readonly candidates: number;
  readonly failed: number;
  readonly pruned: number;
  readonly shape: TuneShape;
  readonly timed: string;
}

export interface TuningRecord {
  readonly version: number;
  readonly key: RecordKey;
  readonly program: string;
  readonly created: string;
  readonly entries: readonly RecordEntry[];
}

export const tuningDir = (): string => knobs.tuningDir ?? new URL("../../generated/tuning/", import.meta.url).pathname;
const slug = (s: string): string => s.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "unknown";
export const recordFile = (k: RecordKey, dir = tuningDir()): string => join(dir, `${k.backend}-${slug(k.device)}${k.cc ? `-sm${k.cc.replace(".", "")}` : ""}.json`);

let noticeSink: (line: string) => void = (line) => void process.stderr.write(line + "\n");
const noticed = new Set<string>();
const loaded = new Map<string, TuningRecord | string | null>(); // path -> record, or why it is unreadable
/** Where notices go (tests capture them); clears the once-per-file memory and the cache. */
export function setNoticeSink(sink: (line: string) => void): void {
  noticeSink = sink;
  noticed.clear();
  loaded.clear();
}
function notice(path: string, why: string): void {
  if (noticed.has(path)) return;
  noticed.add(path);
  noticeSink(`zipvl: ignoring tuning record ${path}: ${why}; run \`zipvl tune\` on this machine to refresh it`);
}

/** Parses and checks a record file's structure (ZV8003 names what is wrong). */
export function parseRecord(path: string, text: string): TuningRecord {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new TuneError("ZV8003", [path, `not JSON (${(e as Error).message})`]);
  }
  const r = doc as Partial<TuningRecord>;
  if (typeof r !== "object" || r === null || r.version !== RECORD_VERSION) throw new TuneError("ZV8003", [path, `version must be ${RECORD_VERSION}`]);
  const k = r.key as Partial<RecordKey> | undefined;
  for (const f of ["backend", "device", "cc", "driver", "toolchain", "library"] as const) {
    if (typeof k?.[f] !== "string") throw new TuneError("ZV8003", [path, `key.${f} must be a string`]);
  }
  if (!Array.isArray(r.entries)) throw new TuneError("ZV8003", [path, "entries must be an array"]);
  r.entries.forEach((e: Partial<RecordEntry>, i) => {
    if (typeof e.stage !== "string" || typeof e.bucket !== "string" || typeof e.config !== "object" || e.config === null) {
      throw new TuneError("ZV8003", [path, `entries[${i}] needs stage, bucket and config`]);
    }
    for (const [name, v] of Object.entries(e.config)) {
      if (typeof v !== "number" && typeof v !== "boolean") throw new TuneError("ZV8003", [path, `entries[${i}].config.${name} must be a number or boolean`]);
    }
  });
  return r as TuningRecord;
}

/** Why a record does not apply to `key`, or null when it does. */
export function mismatch(rec: RecordKey, key: RecordKey): string | null {
  if (rec.backend !== key.backend || rec.device !== key.device || rec.cc !== key.cc) return `made for ${rec.device}${rec.cc ? ` (cc ${rec.cc})` : ""}, this is ${key.device}${key.cc ? ` (cc ${key.cc})` : ""}`;
  for (const f of ["driver", "toolchain", "library"] as const) if (rec[f] !== key[f]) return `stale: ${f} ${rec[f]} (now ${key[f]})`;
  return null;
}

/** The record for `key` if one exists and matches; otherwise null (with a notice when a file was there). */
export function loadRecord(key: RecordKey, dir = tuningDir()): TuningRecord | null {
  const path = recordFile(key, dir);
  if (!loaded.has(path)) {
    let parsed: TuningRecord | string | null = null;
    if (existsSync(path)) {
      try {
        parsed = parseRecord(path, readFileSync(path, "utf8"));
      } catch (e) {
        parsed = e instanceof TuneError ? e.message.replace(/^ZV8003: tuning record \S+ is not valid: /, "not valid: ") : String(e);
      }
    }
    loaded.set(path, parsed);
  }
  const rec = loaded.get(path)!;
  if (rec === null) return null;
  const why = typeof rec === "string" ? rec : mismatch(rec.key, key);
  if (why) {
    notice(path, why);
    return null;
  }
  return rec as TuningRecord;
}

/** The tuned config of one stage and bucket, or undefined (no record, stale record, or bucket not tuned). */
export function lookup(key: RecordKey, stage: string, bucket: string, dir = tuningDir()): RecordEntry["config"] | undefined {
  if (knobs.tuning === "off") return undefined;
  return loadRecord(key, dir)?.entries.find((e) => e.stage === stage && e.bucket === bucket)?.config;
}

/** Writes (or merges into a matching) record; entries of the same stage and bucket are replaced. */
export function writeRecord(key: RecordKey, program: string, entries: readonly RecordEntry[], dir = tuningDir()): string {
  const path = recordFile(key, dir);
  let old: readonly RecordEntry[] = [];
  if (existsSync(path)) {
    try {
      const rec = parseRecord(path, readFileSync(path, "utf8"));
      if (!mismatch(rec.key, key)) old = rec.entries;
    } catch {
      old = []; // an unreadable file is replaced
    }
  }
  const id = (e: RecordEntry): string => `${e.stage} ${e.bucket}`;
  const fresh = new Set(entries.map(id));
  const all = [...old.filter((e) => !fresh.has(id(e))), ...entries].sort((a, b) => id(a).localeCompare(id(b)));
  const rec: TuningRecord = { version: RECORD_VERSION, key, program, created: new Date().toISOString(), entries: all };
  mkdirSync(dir, { recursive: true });
  writeFileSync(path, JSON.stringify(rec, null, 1) + "\n");
  loaded.delete(path);
  return path;
}
