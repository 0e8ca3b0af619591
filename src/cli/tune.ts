// `zipvl tune`: per-GPU autotuning of the kernels' configs (schedule only, never code), stored in
// generated/tuning/<gpu-key>.json and picked up by the executors' config selection.
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import { parseProgram } from "../ir/parse.ts";
import { verifyProgram } from "../ir/verify.ts";
import type { Program } from "../ir/ir.ts";
import { TuneError, tuneFail } from "../tune/errors.ts";
import { CUDA_PRESETS, type CudaLimits, type Space } from "../tune/space.ts";
import { DEFAULT_GPU_SHAPES, parseShapes } from "../tune/shapes.ts";
import { search, type Task, type TaskResult } from "../tune/search.ts";
import { recordFile, tuningDir, writeRecord, type RecordKey } from "../tune/records.ts";
import { fmtDuration } from "../tune/progress.ts";

export const TUNE_USAGE = `usage: zipvl tune [--program FILE] [--backend cuda|webgpu] [--budget SECONDS] [--shapes SPEC] [--dry-run]
                  [--warmup N] [--iters N] [--jobs N] [--max-candidates N] [--out DIR] [--arch sm90|sm80]
  --shapes n=2880,8192,32768:kept=0.3:d=128:gqa=1,8:dtype=bf16:H=40 (cross product; the cuda default)
  --dry-run lists the buckets and the candidate counts after pruning (no GPU needed: --arch picks the limits)`;
const WEBGPU_SHAPES = "n=1024:kept=0.3:d=64:gqa=1:dtype=f32:H=8";

type Out = (s: string) => void;

function options(argv: readonly string[]) {
  try {
    return parseArgs({
      args: [...argv], allowPositionals: false, strict: true,
      options: {
        program: { type: "string", default: "dsl/variants/topk-ratio.ts" }, backend: { type: "string", default: "cuda" },
        budget: { type: "string", default: "600" }, shapes: { type: "string" }, "dry-run": { type: "boolean", default: false },
        warmup: { type: "string", default: "3" }, iters: { type: "string", default: "10" }, jobs: { type: "string" },
        out: { type: "string" }, arch: { type: "string" }, "max-candidates": { type: "string" }, help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    return tuneFail("ZV8001", ["zipvl tune", `${(e as Error).message}\n${TUNE_USAGE}`]);
  }
}

const int = (name: string, v: string, min: number): number => {
  const x = Number(v);
  if (!Number.isFinite(x) || x < min || (name !== "--budget" && !Number.isInteger(x))) tuneFail("ZV8001", [name, `expected a number >= ${min}, got '${v}'`]);
  return x;
};

function describeSpace(t: Task<object>, out: Out): void {
  const pruned = Object.entries(t.space.pruned).map(([why, n]) => `${n} ${why}`).join(", ");
  out(`  ${t.stage.padEnd(11)} ${t.bucket.padEnd(34)} ${String(t.space.configs.length).padStart(4)} of ${String(t.space.total).padStart(4)} configs${pruned ? `  (pruned: ${pruned})` : ""}`);
}

/** Programs as printed IR (`*.final.ir`); `zipvl tune` (src/cli/main.ts) also takes DSL files through the front end. */
export function loadIrProgram(file: string): Program {
  if (!file.endsWith(".ir")) tuneFail("ZV8001", ["--program", `this runner reads printed IR (e.g. test/golden/topk-ratio.final.ir), not '${file}'`]);
  return verifyProgram(parseProgram(readFileSync(file, "utf8")));
}

export async function tuneCommand(argv: readonly string[], out: Out, load: (file: string) => Program = loadIrProgram): Promise<number> {
  const o = options(argv);
  if (o.help) return out(TUNE_USAGE), 0;
  const backend = o.backend!;
  if (backend !== "cuda" && backend !== "webgpu") tuneFail("ZV8001", ["--backend", `expected cuda or webgpu, got '${backend}'`]);
  const budgetS = int("--budget", o.budget!, 1);
  const warmup = int("--warmup", o.warmup!, 0);
  const iters = int("--iters", o.iters!, 1);
  const jobs = o.jobs === undefined ? undefined : int("--jobs", o.jobs, 1);
  if (o.arch !== undefined && !(o.arch in CUDA_PRESETS)) tuneFail("ZV8001", ["--arch", `expected ${Object.keys(CUDA_PRESETS).join(" or ")}, got '${o.arch}'`]);
  const shapes = parseShapes(o.shapes ?? (backend === "cuda" ? DEFAULT_GPU_SHAPES : WEBGPU_SHAPES));
  const p = load(o.program!);
  const dir = o.out ?? tuningDir();
  const dry = o["dry-run"] === true;

  let tasks: Task<object>[];
  let key: RecordKey | null = null;
  let run: ((tasks: Task<object>[]) => Promise<TaskResult<object>[]>) | null = null;
  let cleanup = (): void => {};
  const searchOpts = { budgetS, onTask: (r: TaskResult<unknown>) => report(r, out) };
  if (backend === "cuda") {
    const { cudaTasks, cudaLimits, cudaHarness } = await import("../tune/cuda.ts");
    let limits: CudaLimits;
    let ctx: Awaited<ReturnType<typeof openCudaOrNull>> = null;
    if (o.arch) limits = CUDA_PRESETS[o.arch]!;
    else {
      ctx = await openCudaOrNull(dry);
      limits = ctx ? cudaLimits(ctx) : CUDA_PRESETS.sm90!;
    }
    tasks = cudaTasks(p, shapes, limits) as Task<object>[];
    out(`zipvl tune: program '${p.name}', cuda, limits of ${limits.name} (sm_${limits.arch}), ${shapes.length} shape(s), ${tasks.length} (stage, bucket) tasks`);
    if (!dry) {
      const c = ctx ?? (await openCudaOrNull(false))!;
      const { cudaKey, cudaToolchain } = await import("../tune/keys.ts");
      const { nvrtcVersion } = await import("../runtime/native.ts");
      key = cudaKey(c.dev.info, cudaToolchain(nvrtcVersion));
      const h = cudaHarness(c, p, { warmup, iters, ...(jobs ? { jobs } : {}) });
      run = (ts) => search(ts as Task<Record<string, number>>[], h, searchOpts) as Promise<TaskResult<object>[]>;
      cleanup = () => c.dispose();
    }
  } else {
    const { sharedWebGpu } = await import("../runtime/webgpu.ts");
    let dev;
    try {
      dev = await sharedWebGpu();
    } catch (e) {
      return tuneFail("ZV8002", ["zipvl tune --backend webgpu", (e as Error).message.split("\n")[0]!]);
    }
    const { wgslTasks, wgslHarness } = await import("../tune/webgpu.ts");
    const { webgpuKey } = await import("../tune/keys.ts");
    tasks = wgslTasks(dev, shapes) as Task<object>[];
    out(`zipvl tune: program '${p.name}', webgpu on ${dev.info.vendor} ${dev.info.architecture} ${dev.info.description}, ${shapes.length} shape(s), ${tasks.length} (stage, bucket) tasks`);
    key = webgpuKey(dev.info);
    const h = wgslHarness(dev, p, { warmup, iters });
    run = (ts) => search(ts as Task<never>[], h, searchOpts) as Promise<TaskResult<object>[]>;
  }
  if (o["max-candidates"] !== undefined) tasks = limitCandidates(tasks, int("--max-candidates", o["max-candidates"], 1));
  const candidates = tasks.reduce((a, t) => a + t.space.configs.length, 0);
  for (const t of tasks) describeSpace(t, out);
  out(`${candidates} candidate configs after pruning (of ${tasks.reduce((a, t) => a + (t.space as Space<object>).total, 0)})`);
  if (dry || !run || !key) return 0;
  try {
    const t0 = performance.now();
    const results = await run(tasks);
    const entries = results.flatMap((r) => (r.entry ? [r.entry] : []));
    const path = writeRecord(key, p.name, entries, dir);
    const failedBuckets = results.filter((r) => !r.entry).length;
    out(`wrote ${entries.length} record entr${entries.length === 1 ? "y" : "ies"} to ${path} in ${fmtDuration((performance.now() - t0) / 1000)}${failedBuckets ? `; ${failedBuckets} bucket(s) had a failing fallback (see ZV8006 above)` : ""}`);
    return failedBuckets ? 1 : 0;
  } finally {
    cleanup();
  }
}

/** Keeps the fallback and the first max - 1 candidates of every task (quick runs, CI). */
export function limitCandidates<C>(tasks: Task<C>[], max: number): Task<C>[] {
  return tasks.map((t) => ({ ...t, space: { ...t.space, configs: t.space.configs.slice(0, max) } }));
}

function report(r: TaskResult<unknown>, out: Out): void {
  const t = r.task;
  if (!r.entry) return out(`error ZV8006: ${new TuneError("ZV8006", [`${t.stage} ${t.bucket}`, r.error ?? "?"]).message.slice(8)}`);
  const e = r.entry;
  const bad = r.trials.filter((x) => x.ms === Infinity && x.verdict !== "skipped (budget)");
  const skipped = r.trials.filter((x) => x.verdict === "skipped (budget)").length;
  const gain = e.fallbackMs / e.ms;
  out(`  ${t.stage.padEnd(11)} ${t.bucket.padEnd(34)} fallback ${e.fallbackMs.toFixed(4)} ms -> ${e.ms.toFixed(4)} ms (${gain.toFixed(2)}x) ${JSON.stringify(e.config)}` +
    `${bad.length ? `; ${bad.length} scored Infinity (${[...new Set(bad.map((x) => x.verdict))].join(", ")})` : ""}${skipped ? `; ${skipped} skipped (budget)` : ""}`);
}

async function openCudaOrNull(dry: boolean) {
  const { openCuda } = await import("../backends/cuda/executor.ts");
  try {
    return openCuda();
  } catch (e) {
    if (dry) return null;
    return tuneFail("ZV8002", ["zipvl tune", (e as Error).message.split("\n")[0]!]);
  }
}


