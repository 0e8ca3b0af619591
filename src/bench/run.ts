// The GPU side of `zipvl bench`: zipvl's dense prefill, ZipVL step (+ CUDA graph), per-kernel times and decode on
// the same shapes the PyTorch peers (bench/peers.py, a child process) then run on the same card.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openCuda, tunedFor, type CudaContext } from "../backends/cuda/executor.ts";
import { CudaDecode, CudaPrefill } from "../backends/cuda/pipeline.ts";
import { parseProgram } from "../ir/parse.ts";
import { verifyProgram } from "../ir/verify.ts";
import type { Program } from "../ir/ir.ts";
import { makeTensor, type Tensor } from "../io/tensor.ts";
import { patternTensor } from "../tune/cuda.ts";
import { TuneError } from "../tune/errors.ts";
import { cudaKey, cudaToolchain } from "../tune/keys.ts";
import { loadRecord, recordFile } from "../tune/records.ts";
import { knobs } from "../knobs.ts";
import { nvrtcVersion } from "../runtime/native.ts";
import { peerFloors, peerRows, RESULTS_VERSION, type BenchResults, type Floors, type PeersDoc, type Row } from "./results.ts";

export interface BenchGroup {
  readonly d: number;
  readonly Hq: number;
  readonly Hkv: number;
  readonly ns: readonly number[];
  readonly kepts: readonly number[];
  /** Peers: FlexAttention, the floors section, the kept sweep. */
  readonly full: boolean;
}

/** The standard plan: H = 40, d = 128 over every n and kept ratio, then d = 64 and GQA 8 at two n. */
export function benchPlan(quick: boolean, ns?: readonly number[]): BenchGroup[] {
  if (quick) return [{ d: 128, Hq: 40, Hkv: 40, ns: ns ?? [2880, 8192, 32768], kepts: [0.3], full: false }];
  return [
    { d: 128, Hq: 40, Hkv: 40, ns: ns ?? [2880, 8192, 32768, 65536], kepts: [0.1, 0.3, 0.5, 0.7], full: true },
    { d: 64, Hq: 40, Hkv: 40, ns: ns ?? [8192, 32768], kepts: [0.3], full: false },
    { d: 128, Hq: 40, Hkv: 5, ns: ns ?? [8192, 32768], kepts: [0.3], full: false },
  ];
}

export interface BenchOptions {
  readonly quick: boolean;
  readonly peers: boolean;
  readonly groups: readonly BenchGroup[];
  readonly warmup: number;
  readonly iters: number;
  /** Root of the checkout (test/golden programs, bench/peers.py). */
  readonly root: string;
  readonly python: string;
  readonly log: (s: string) => void;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function runBench(o: BenchOptions): Promise<BenchResults> {
  const t0 = performance.now();
  const load = (name: string): Program => verifyProgram(parseProgram(readFileSync(join(o.root, `test/golden/${name}.final.ir`), "utf8")));
  const ratio = load("topk-ratio");
  const dense = load("dense");
  let ctx: CudaContext;
  try {
    ctx = openCuda();
  } catch (e) {
    throw new TuneError("ZV8002", ["zipvl bench", (e as Error).message.split("\n")[0]!]);
  }
  const info = ctx.dev.info;
  const key = cudaKey(info, cudaToolchain(nvrtcVersion));
  const tuning = knobs.tuning === "off" ? "off" : loadRecord(key) ? recordFile(key) : "none (fallback configs)";
  o.log(`tuning records: ${tuning}`);
  o.log(`zipvl bench on ${info.name} (cc ${info.computeCapability.join(".")}, ${info.smCount} SMs), ${o.groups.length} shape group(s)`);
  const rows: Row[] = [];
  const time = (body: () => void, stream: Parameters<typeof ctx.dev.time>[1]): number => {
    for (let i = 0; i < o.warmup; i++) body();
    return median(Array.from({ length: o.iters }, () => ctx.dev.time(body, stream)));
  };
  for (const g of o.groups) {
    const base = { d: g.d, Hq: g.Hq, Hkv: g.Hkv };
    for (const n of g.ns) {
      const bytes = 2 * (2 * g.Hq + 4 * g.Hkv) * n * g.d;
      if (bytes > 0.8 * ctx.dev.memInfo().free) {
        o.log(`  skip n=${n} (${g.d}/${g.Hq}/${g.Hkv}): ${(bytes / 1e9).toFixed(1)} GB does not fit`);
        continue;
      }
      const inputs = new Map<string, Tensor>([["q", patternTensor("bf16", [g.Hq, n, g.d], 11)], ["k", patternTensor("bf16", [g.Hkv, n, g.d], 12)], ["v", patternTensor("bf16", [g.Hkv, n, g.d], 13)]]);
      const prefill = (p: Program, params: Record<string, number>, kind: "dense_prefill" | "step", kept: number): void => {
        const opts = { params };
        const stream = ctx.dev.createStream({ nonBlocking: true });
        let run: CudaPrefill | null = null;
        try {
          run = new CudaPrefill(ctx.dev, p, inputs, ctx.kernels(p, "bf16", g.d, tunedFor(ctx, p, "prefill", inputs, opts)), opts, stream);
          const r = run;
          const ms = time(() => r.enqueue(), stream);
          rows.push({ kind, impl: "zipvl", n, kept, ...base, ms });
          let line = `  ${kind.padEnd(13)} n=${String(n).padStart(5)} kept ${(100 * kept).toFixed(0).padStart(3)}% d=${g.d} Hkv=${g.Hkv}: ${ms.toFixed(3)} ms`;
          if (kind === "step") {
            const graph = ctx.dev.captureGraph(stream, () => r.enqueue());
            const gms = time(() => graph.launch(stream), stream);
            graph.destroy();
            rows.push({ kind, impl: "zipvl_graph", n, kept, ...base, ms: gms });
            const ks = ([0, 1, 2] as const).map((i) => time(() => r.enqueueStage(i), stream));
            (["probe", "select", "sparse_attn"] as const).forEach((k, i) => rows.push({ kind: "kernel", impl: k, n, kept, ...base, ms: ks[i]! }));
            line += ` (graph ${gms.toFixed(3)}; probe ${ks[0]!.toFixed(3)}, select ${ks[1]!.toFixed(3)}, attention ${ks[2]!.toFixed(3)})`;
          }
          o.log(line);
        } catch (e) {
          rows.push({ kind, impl: "zipvl", n, kept, ...base, ms: null, note: String((e as Error).message).slice(0, 300) });
          o.log(`  ${kind} n=${n}: ERROR ${String((e as Error).message).slice(0, 200)}`);
        } finally {
          run?.free();
          stream.destroy();
        }
      };
      prefill(dense, {}, "dense_prefill", 1);
      for (const kept of g.kepts) prefill(ratio, { ratio: kept }, "step", kept);
      for (const kept of [0.3, 1]) {
        const c = Math.round(kept * n);
        const view = (t: Tensor, shape: number[]): Tensor => makeTensor("bf16", shape, (t.data as Float64Array).subarray(0, shape.reduce((a, x) => a * x, 1)));
        const step = new Map([["q", view(inputs.get("q")!, [g.Hq, 1, g.d])], ["k_cache", view(inputs.get("k")!, [g.Hkv, c, g.d])], ["v_cache", view(inputs.get("v")!, [g.Hkv, c, g.d])]]);
        const run = new CudaDecode(ctx.dev, ratio, step, ctx.kernels(ratio, "bf16", g.d, tunedFor(ctx, ratio, "decode", step, {})), {});
        try {
          const ms = time(() => run.enqueue(), null);
          rows.push({ kind: "decode", impl: "zipvl", n, kept: c / n, ...base, ms });
          o.log(`  decode        n=${String(n).padStart(5)} cache ${c}: ${ms.toFixed(4)} ms, ${((4 * g.Hkv * c * g.d) / (ms * 1e9)).toFixed(2)} TB/s`);
        } finally {
          run.free();
        }
      }
    }
  }
  ctx.dispose();
  let floors: Floors | null = null;
  let peersInfo: BenchResults["peers"] = null;
  if (o.peers) {
    for (const g of o.groups) {
      const doc = runPeers(o, g);
      rows.push(...peerRows(doc));
      floors ??= peerFloors(doc);
      peersInfo ??= { torch: doc.torch, cuda: doc.cuda, cudnn: doc.cudnn };
    }
  }
  return {
    version: RESULTS_VERSION, card: { name: info.name, cc: info.computeCapability.join("."), driver: String(info.driverVersion), smCount: info.smCount },
    created: new Date().toISOString(), quick: o.quick, source: `zipvl bench${o.quick ? " --quick" : ""} (${((performance.now() - t0) / 1000).toFixed(0)} s)`,
    floors, rows, peers: peersInfo, tuning,
  };
}

/** The peers' arguments for one group (the floors once, FlexAttention and the kept sweep in the full group). */
export function peersArgs(g: BenchGroup, o: Pick<BenchOptions, "quick" | "iters" | "warmup">): string[] {
  const args = ["--json", "--ns", g.ns.join(","), "--d", String(g.d), "--heads", String(g.Hq), "--kv-heads", String(g.Hkv), "--iters", String(Math.max(20, o.iters)), "--warmup", String(o.warmup)];
  args.push("--sections", g.full ? "floors,dense,ref,decode" : "dense,ref,decode");
  // FlexAttention compiles per shape (tens of seconds) and the kept sweep triples the reference rows: full group only.
  if (!g.full || o.quick) args.push("--no-flex");
  args.push(g.full && !o.quick ? "--sweep" : "--no-sweep");
  return args;
}

function runPeers(o: BenchOptions, g: BenchGroup): PeersDoc {
  const script = join(o.root, "bench/peers.py");
  if (!existsSync(script)) throw new TuneError("ZV8005", [script, "not found"]);
  const out = join(tmpdir(), `zipvl-peers-d${g.d}-h${g.Hq}-kv${g.Hkv}-${process.pid}.json`);
  const args = [script, ...peersArgs(g, o), "--out", out];
  o.log(`peers: ${o.python} ${args.join(" ")}`);
  const r = spawnSync(o.python, args, { encoding: "utf8", maxBuffer: 1 << 28, stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, PYTHONUNBUFFERED: "1" } });
  if (r.error) throw new TuneError("ZV8005", [`${o.python} bench/peers.py`, r.error.message]);
  const last = r.stdout.trim().split("\n").pop() ?? "";
  try {
    return JSON.parse(last) as PeersDoc;
  } catch {
    throw new TuneError("ZV8005", [`${o.python} bench/peers.py`, `exit ${r.status}; no JSON document on stdout`]);
  }
}
