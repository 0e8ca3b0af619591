// `zipvl run`: one LLaVA checkpoint, one image and prompt, dense or a policy (ZipVL by default) per layer.
import { parseArgs } from "node:util";
import { fail } from "../diagnostics/diagnostic.ts";
import { LlavaError } from "../model/errors.ts";
import type { ModelDType, ModelOps, Policy } from "../model/ops.ts";
import { bestOps, buildPrompt, createOps, formatReport, loadModel, loadPolicy, reportJson, runPrompt, ZIPVL_PROGRAM } from "../model/session.ts";
import { parseParamList } from "./params.ts";
export { parseParamList };

export type Out = (s: string) => void;

export const RUN_USAGE = `usage: zipvl run --model DIR --prompt TEXT [--image IMG] [--dense] [--tau T] [--policy FILE]
                 [--param NAME=VALUE]... [--backend auto|cpu|cuda|webgpu] [--dtype f32|f16|bf16] [--max-new-tokens N]
                 [--temperature T --top-p P --seed S] [--json]`;

export function parseNumber(name: string, v: string | undefined, check: (x: number) => boolean, what: string): number | undefined {
  if (v === undefined) return undefined;
  const x = Number(v);
  if (v.trim() === "" || !Number.isFinite(x) || !check(x)) throw new LlavaError("ZV6106", [`--${name} must be ${what}, got '${v}'`]);
  return x;
}


/** The policy of --dense / --policy / --tau / --param (undefined = dense). */
export function policyFromFlags(o: { dense?: boolean; policy?: string; tau?: string; param?: string[] }): Policy | undefined {
  const params = parseParamList(o.param ?? []);
  const tau = parseNumber("tau", o.tau, (x) => x > 0 && x <= 1, "in (0, 1]");
  if (o.dense) {
    if (o.policy || tau !== undefined || Object.keys(params).length) throw new LlavaError("ZV6106", ["--dense runs dense attention; it takes no --policy, --tau or --param"]);
    return undefined;
  }
  const file = o.policy ?? ZIPVL_PROGRAM;
  if (tau !== undefined) params.tau = tau;
  return loadPolicy(file, params, tau !== undefined ? "--tau" : undefined);
}

/** Ops of --backend and --dtype; `auto` says on stderr why it fell back to the CPU. */
export async function opsFor(backend: string, dtype: string | undefined, err: Out): Promise<ModelOps> {
  if (dtype !== undefined && !["f32", "f16", "bf16"].includes(dtype)) throw new LlavaError("ZV6106", [`--dtype must be f32, f16 or bf16, got '${dtype}'`]);
  const opts = dtype ? { dtype: dtype as ModelDType } : {};
  if (backend !== "auto") return createOps(backend, opts);
  const { ops, fallbacks } = await bestOps(opts);
  for (const f of fallbacks) err(`backend auto: ${f.split("\n")[0]}; using the cpu`);
  return ops;
}

/** A progress bar on stderr while weights load (a plain final line when stderr is not a terminal). */
export function progress(err: Out, label: string): { tick: (done: number, total: number) => void; end: (ms: number) => void } {
  const tty = process.stderr.isTTY === true;
  let total = 0;
  return {
    tick(done, all) {
      total = all;
      if (!tty) return;
      const w = 30;
      const fill = Math.round((w * done) / all);
      process.stderr.write(`\r${label} [${"#".repeat(fill)}${".".repeat(w - fill)}] ${done}/${all}`);
    },
    end(ms) {
      if (tty) process.stderr.write("\n");
      err(`${label}: ${total} tensors in ${ms.toFixed(0)} ms`);
    },
  };
}

export async function runCommand(argv: readonly string[], out: Out, err: Out): Promise<number> {
  let o;
  try {
    o = parseArgs({
      args: [...argv], strict: true, allowPositionals: false,
      options: {
        model: { type: "string" }, image: { type: "string" }, prompt: { type: "string" }, dense: { type: "boolean" },
        tau: { type: "string" }, policy: { type: "string" }, param: { type: "string", multiple: true, default: [] },
        backend: { type: "string", default: "auto" }, "max-new-tokens": { type: "string", default: "32" },
        temperature: { type: "string" }, "top-p": { type: "string" }, seed: { type: "string" }, json: { type: "boolean" },
        dtype: { type: "string" },
      },
    }).values;
  } catch (e) {
    return fail("ZV5001", [`${(e as Error).message}\n${RUN_USAGE}`]);
  }
  const dir = o.model ?? fail("ZV5001", [`'zipvl run' needs --model DIR\n${RUN_USAGE}`]);
  const text = o.prompt ?? fail("ZV5001", [`'zipvl run' needs --prompt TEXT\n${RUN_USAGE}`]);
  const policy = policyFromFlags(o);
  const maxNewTokens = parseNumber("max-new-tokens", o["max-new-tokens"], (x) => Number.isInteger(x) && x >= 0, "a non-negative integer")!;
  const temperature = parseNumber("temperature", o.temperature, (x) => x >= 0, "a number >= 0");
  const topP = parseNumber("top-p", o["top-p"], (x) => x > 0 && x <= 1, "in (0, 1]");
  const seed = parseNumber("seed", o.seed, Number.isSafeInteger, "an integer");
  if (topP !== undefined && !temperature) throw new LlavaError("ZV6106", ["--top-p samples, so it needs --temperature > 0 (temperature 0 is greedy)"]);
  const ops = await opsFor(o.backend!, o.dtype, err);
  try {
    const bar = progress(err, "loading weights");
    const m = loadModel(ops, dir, bar.tick);
    bar.end(m.loadMs);
    const prompt = buildPrompt(m.cfg, dir, m.tok, text, o.image);
    const sampling = { ...(temperature !== undefined ? { temperature } : {}), ...(topP !== undefined ? { topP } : {}), ...(seed !== undefined ? { seed } : {}) };
    const r = runPrompt(m, prompt, { ...(policy ? { policy } : {}), maxNewTokens, sampling }, ops.name);
    if (o.json) out(JSON.stringify(reportJson(r), null, 2));
    else {
      out(r.answer);
      for (const line of formatReport(r)) err(line);
    }
    m.model.dispose();
    return 0;
  } finally {
    ops.dispose();
  }
}
