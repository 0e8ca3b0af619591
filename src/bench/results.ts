// The bench results file (results.json): one card, one run, zipvl and the PyTorch peers on the same shapes.
// Also reads the recorded session files (bench/results/<run>/peers.json + gpu-bench.json) into the same form.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { TuneError } from "../tune/errors.ts";

export const RESULTS_VERSION = 1;

export type RowKind = "dense_prefill" | "step" | "select" | "kernel" | "decode" | "floor";
export interface Row {
  readonly kind: RowKind;
  /** zipvl, zipvl_graph, sdpa_flash, sdpa_cudnn, flex, ref_flash, ref_cudnn, ref_eager; kernel rows: probe, select, sparse_attn. */
  readonly impl: string;
  readonly n: number;
  /** Kept fraction (1 for dense; decode: cache / n). */
  readonly kept: number;
  readonly d: number;
  readonly Hq: number;
  readonly Hkv: number;
  readonly ms: number | null;
  readonly note?: string;
}
export interface Floors {
  readonly copyTbps: number;
  readonly matmulTflops: number;
}
export interface BenchResults {
  readonly version: number;
  readonly card: { readonly name: string; readonly cc: string; readonly driver: string; readonly smCount: number | null };
  readonly created: string;
  readonly quick: boolean;
  readonly source: string;
  readonly floors: Floors | null;
  readonly rows: readonly Row[];
  readonly peers: { readonly torch: string; readonly cuda: string; readonly cudnn: number | null } | null;
  /** Which tuning record zipvl's configs came from ("off", "none" = fallback configs, or the record's path). */
  readonly tuning?: string;
}

const bad = (path: string, why: string): never => {
  throw new TuneError("ZV8004", [path, why]);
};

/** Reads and checks a results.json (ZV8004 names the problem). */
export function readResults(path: string): BenchResults {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    return bad(path, (e as Error).message);
  }
  const r = doc as BenchResults;
  if (r?.version !== RESULTS_VERSION) bad(path, `version must be ${RESULTS_VERSION}`);
  if (typeof r.card?.name !== "string") bad(path, "card.name must be a string");
  if (!Array.isArray(r.rows)) bad(path, "rows must be an array");
  r.rows.forEach((row, i) => {
    for (const f of ["n", "kept", "d", "Hq", "Hkv"] as const) if (typeof row[f] !== "number") bad(path, `rows[${i}].${f} must be a number`);
    if (typeof row.kind !== "string" || typeof row.impl !== "string") bad(path, `rows[${i}] needs kind and impl`);
    if (row.ms !== null && typeof row.ms !== "number") bad(path, `rows[${i}].ms must be a number or null`);
  });
  return r;
}

// ---- peers.py documents ------------------------------------------------------------------------------------------
export interface PeersRow { kind: string; impl: string; n: number | null; kept: number | null; ms: number | null; extra?: Record<string, unknown> }
export interface PeersDoc {
  device: string; torch: string; cuda: string; cudnn: number | null;
  shapes: { H: number; Hkv: number; d: number };
  results: PeersRow[];
  floors: { copy_tbps?: number; matmul_tflops?: number };
}

/** peers.py rows in the results' form (kinds renamed: ref_step -> step, ref_select -> select). */
export function peerRows(doc: PeersDoc): Row[] {
  const { H, Hkv, d } = doc.shapes;
  const rows: Row[] = [];
  for (const r of doc.results) {
    if (r.n === null || r.kept === null || r.extra?.error) continue;
    const base = { n: r.n, kept: r.kept, d, Hq: H, Hkv: Hkv ?? H, ms: r.ms };
    if (r.kind === "dense_prefill") rows.push({ kind: "dense_prefill", impl: r.impl, ...base });
    else if (r.kind === "ref_step") rows.push({ kind: "step", impl: `ref_${r.impl}`, ...base });
    else if (r.kind === "ref_select") rows.push({ kind: "select", impl: "ref_eager", ...base });
    else if (r.kind === "decode") rows.push({ kind: "decode", impl: r.impl, ...base });
  }
  return rows;
}

export const peerFloors = (doc: PeersDoc): Floors | null =>
  doc.floors?.copy_tbps && doc.floors?.matmul_tflops ? { copyTbps: doc.floors.copy_tbps, matmulTflops: doc.floors.matmul_tflops } : null;

/**
 * A recorded GPU session (bench/gpu-check.ts's gpu-check.json as gpu-bench.json, and peers.json) as results: the
 * H = 40, d = 128 prefill and decode rows of both sides.
 */
export function fromRecordedSession(dir: string): BenchResults {
  const peers = JSON.parse(readFileSync(join(dir, "peers.json"), "utf8")) as PeersDoc;
  const gpu = JSON.parse(readFileSync(join(dir, "gpu-bench.json"), "utf8")) as {
    device: { name: string; computeCapability: number[]; driverVersion: number; smCount: number };
    bench: { kind: string; program?: string; n?: number; kept?: number; ms?: number; graphMs?: number; cache?: number }[];
  };
  const rows: Row[] = [...peerRows(peers)];
  const H = 40;
  const d = 128;
  for (const b of gpu.bench) {
    if (b.kind === "prefill" && b.n && b.ms !== undefined) {
      if (b.program === "zipvl@0.3") {
        rows.push({ kind: "step", impl: "zipvl", n: b.n, kept: b.kept ?? 0.3, d, Hq: H, Hkv: H, ms: b.ms });
        if (b.graphMs !== undefined) rows.push({ kind: "step", impl: "zipvl_graph", n: b.n, kept: b.kept ?? 0.3, d, Hq: H, Hkv: H, ms: b.graphMs });
      } else if (b.program === "dense") rows.push({ kind: "dense_prefill", impl: "zipvl", n: b.n, kept: 1, d, Hq: H, Hkv: H, ms: b.ms });
    } else if (b.kind === "decode" && b.cache && b.ms !== undefined) {
      // gpu-check timed caches round(0.3 n) and n for n in {2880, 8192, 32768}.
      const n = [2880, 8192, 32768].find((x) => b.cache === x || b.cache === Math.round(0.3 * x))!;
      rows.push({ kind: "decode", impl: "zipvl", n, kept: b.cache / n, d, Hq: H, Hkv: H, ms: b.ms });
    }
  }
  return {
    version: RESULTS_VERSION, card: { name: gpu.device.name, cc: gpu.device.computeCapability.join("."), driver: String(gpu.device.driverVersion), smCount: gpu.device.smCount },
    created: "recorded", quick: true, source: `recorded session ${dir}`, floors: peerFloors(peers), rows,
    peers: { torch: peers.torch, cuda: peers.cuda, cudnn: peers.cudnn },
  };
}
