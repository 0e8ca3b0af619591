// The search, backend-agnostic (Triton's autotuner, with FlashInfer's mandatory fallback): every candidate of a
// (stage, bucket) task is compiled (in parallel, by the harness), timed, and verified against the fallback config's
// output. A config that fails to compile or run, or whose output differs, scores Infinity and never aborts the
// search; the fallback always exists. The budget stops the search between measurements.
import { configId, type Space } from "./space.ts";
import { progress } from "./progress.ts";
import type { TuneShape } from "./shapes.ts";
import type { RecordEntry } from "./records.ts";

export interface Task<C> {
  readonly stage: string;
  readonly bucket: string;
  readonly shape: TuneShape;
  readonly space: Space<C>;
}

/** Named output arrays of one stage (float or integer), compared within the dtype's tolerance. */
export type Outputs = ReadonlyMap<string, Float32Array | Int32Array>;

export interface Harness<C> {
  /** What a time covers, stored in the records (e.g. "whole prefill layer, CUDA events, median of 10"). */
  readonly timed: string;
  /** Compiles every config of every task (in parallel); returns the compile failures: task-config id -> reason. */
  prepare(tasks: readonly Task<C>[]): Promise<Map<string, string>>;
  measure(task: Task<C>, config: C): Promise<{ ms: number; outputs: Outputs }>;
  /** Relative tolerance of float outputs at the task's dtype. */
  tolerance(task: Task<C>): number;
}

export type Verdict = "ok" | "compile failed" | "failed" | "wrong output" | "skipped (budget)";
export interface Trial<C> {
  readonly config: C;
  readonly ms: number;
  readonly verdict: Verdict;
  readonly why?: string;
}
export interface TaskResult<C> {
  readonly task: Task<C>;
  readonly trials: readonly Trial<C>[];
  /** Null when the fallback itself failed (the bucket gets no record). */
  readonly entry: RecordEntry | null;
  readonly error?: string;
}

export const taskConfigId = (t: { stage: string; bucket: string }, c: object): string => `${t.stage} ${t.bucket} ${configId(c)}`;

/** Null when `got` matches `ref` (NaN matches NaN: both were poisoned the same way), else the first difference. */
export function compareOutputs(ref: Outputs, got: Outputs, rtol: number): string | null {
  for (const [name, a] of ref) {
    const b = got.get(name);
    if (!b || b.length !== a.length) return `${name}: ${b ? `length ${b.length}, expected ${a.length}` : "missing"}`;
    const ints = a instanceof Int32Array;
    let scale = 0;
    if (!ints) for (let i = 0; i < a.length; i++) if (Number.isFinite(a[i]!)) scale = Math.max(scale, Math.abs(a[i]!));
    for (let i = 0; i < a.length; i++) {
      const x = a[i]!;
      const y = b[i]!;
      if (Number.isNaN(x) && Number.isNaN(y)) continue;
      const bad = ints ? x !== y : !(Math.abs(x - y) <= rtol * (Math.abs(x) + 0.05 * scale));
      if (bad) return `${name}[${i}] = ${y}, fallback gives ${x}`;
    }
  }
  return null;
}

export interface SearchOptions {
  readonly budgetS: number;
  readonly write?: (s: string) => void;
  readonly tty?: boolean;
  readonly now?: () => number;
  /** One line per finished task (the CLI prints them). */
  readonly onTask?: (r: TaskResult<unknown>) => void;
}

export async function search<C extends object>(tasks: readonly Task<C>[], h: Harness<C>, o: SearchOptions): Promise<TaskResult<C>[]> {
  const now = o.now ?? (() => performance.now());
  const deadline = now() + o.budgetS * 1000;
  const bar = progress("tune", tasks.reduce((a, t) => a + t.space.configs.length, 0), o.write, o.tty, now);
  const compileFailures = await h.prepare(tasks);
  const results: TaskResult<C>[] = [];
  for (const task of tasks) {
    const trials: Trial<C>[] = [];
    const [fallback, ...rest] = task.space.configs;
    let ref: { ms: number; outputs: Outputs };
    try {
      const why = compileFailures.get(taskConfigId(task, fallback!));
      if (why) throw new Error(why);
      ref = await h.measure(task, fallback!);
    } catch (e) {
      const error = (e as Error).message.split("\n")[0]!.slice(0, 300);
      for (let i = 0; i < task.space.configs.length; i++) bar.tick(`${task.stage} ${task.bucket}`);
      const r: TaskResult<C> = { task, trials, entry: null, error };
      results.push(r);
      o.onTask?.(r as TaskResult<unknown>);
      continue;
    }
    trials.push({ config: fallback!, ms: ref.ms, verdict: "ok" });
    bar.tick(`${task.stage} ${task.bucket}`);
    for (const c of rest) {
      const why = compileFailures.get(taskConfigId(task, c));
      if (now() > deadline) trials.push({ config: c, ms: Infinity, verdict: "skipped (budget)" });
      else if (why) trials.push({ config: c, ms: Infinity, verdict: "compile failed", why });
      else {
        try {
          const m = await h.measure(task, c);
          const diff = compareOutputs(ref.outputs, m.outputs, h.tolerance(task));
          trials.push(diff ? { config: c, ms: Infinity, verdict: "wrong output", why: diff } : { config: c, ms: m.ms, verdict: "ok" });
        } catch (e) {
          trials.push({ config: c, ms: Infinity, verdict: "failed", why: (e as Error).message.split("\n")[0]!.slice(0, 300) });
        }
      }
      bar.tick(`${task.stage} ${task.bucket}`);
    }
    const best = trials.reduce((a, b) => (b.ms < a.ms ? b : a));
    const entry: RecordEntry = {
      stage: task.stage, bucket: task.bucket, config: best.config as RecordEntry["config"], ms: best.ms, fallbackMs: ref.ms,
      candidates: trials.filter((t) => t.verdict !== "skipped (budget)").length, failed: trials.filter((t) => t.ms === Infinity && t.verdict !== "skipped (budget)").length,
      pruned: Object.values(task.space.pruned).reduce((a, b) => a + b, 0), shape: task.shape, timed: h.timed,
    };
    const r: TaskResult<C> = { task, trials, entry };
    results.push(r);
    o.onTask?.(r as TaskResult<unknown>);
  }
  bar.done();
  return results;
}
