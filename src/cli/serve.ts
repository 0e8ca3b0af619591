// `zipvl serve`: an OpenAI-style chat server over one LLaVA checkpoint (src/serve), dense or with a policy
// (ZipVL by default). Runs until SIGINT/SIGTERM, then stops taking requests, fails queued ones (503) and lets the
// running ones finish.
import { parseArgs } from "node:util";
import { ServeError } from "../serve/errors.ts";
import { fmtBytes } from "../serve/planner.ts";
import { startServer } from "../serve/server.ts";
import { opsFor, policyFromFlags, type Out } from "./run.ts";

export const SERVE_USAGE = `usage: zipvl serve --model DIR [--port P] [--host H] [--backend cpu|cuda|auto] [--dtype f32|f16|bf16]
                   [--max-batch B] [--queue Q] [--timeout-ms T] [--max-tokens N] [--dense | --tau T | --policy FILE]
                   [--param NAME=VALUE]... [--page-tokens N] [--page-layout per-layer|per-head] [--memory BYTES]
                   [--max-prompt-tokens N] [--kept-ratio R]`;

function int(name: string, v: string | undefined, def: number, min: number): number {
  if (v === undefined) return def;
  const x = Number(v);
  if (v.trim() === "" || !Number.isSafeInteger(x) || x < min) throw new ServeError("ZV7041", [`--${name} must be an integer >= ${min}, got '${v}'`]);
  return x;
}

/** "8G", "512M", "1e9" -> bytes. */
export function parseBytes(v: string): number {
  const m = /^(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmgt]i?b?)?$/i.exec(v.trim());
  if (!m) throw new ServeError("ZV7041", [`--memory takes a byte count such as 8G or 512M, got '${v}'`]);
  const unit = (m[2] ?? "").toLowerCase()[0];
  const mul = unit === "k" ? 1024 : unit === "m" ? 1024 ** 2 : unit === "g" ? 1024 ** 3 : unit === "t" ? 1024 ** 4 : 1;
  return Math.floor(Number(m[1]) * mul);
}

export async function serveCommand(argv: readonly string[], out: Out, err: Out): Promise<number> {
  let o;
  try {
    o = parseArgs({
      args: [...argv],
      strict: true,
      options: {
        model: { type: "string" }, port: { type: "string" }, host: { type: "string" }, backend: { type: "string" }, dtype: { type: "string" },
        "max-batch": { type: "string" }, queue: { type: "string" }, "timeout-ms": { type: "string" }, "max-tokens": { type: "string" },
        dense: { type: "boolean" }, tau: { type: "string" }, policy: { type: "string" }, param: { type: "string", multiple: true, default: [] },
        "page-tokens": { type: "string" }, "page-layout": { type: "string" }, memory: { type: "string" }, "max-prompt-tokens": { type: "string" },
        "kept-ratio": { type: "string" }, help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    throw new ServeError("ZV7041", [`${(e as Error).message}\n${SERVE_USAGE}`]);
  }
  if (o.help) return out(SERVE_USAGE), 0;
  if (!o.model) throw new ServeError("ZV7041", [`--model DIR is required\n${SERVE_USAGE}`]);
  const layout = o["page-layout"] ?? "per-layer";
  if (layout !== "per-layer" && layout !== "per-head") throw new ServeError("ZV7041", [`--page-layout must be per-layer or per-head, got '${layout}'`]);
  const kept = o["kept-ratio"] === undefined ? undefined : Number(o["kept-ratio"]);
  if (kept !== undefined && !(kept > 0 && kept <= 1)) throw new ServeError("ZV7041", [`--kept-ratio must be in (0, 1], got '${o["kept-ratio"]}'`]);
  const port = int("port", o.port, 8000, 0);
  const policy = policyFromFlags(o);
  const ops = await opsFor(o.backend ?? "cpu", o.dtype, err);
  const maxPrompt = o["max-prompt-tokens"] === undefined ? undefined : int("max-prompt-tokens", o["max-prompt-tokens"], 0, 1);
  const s = await startServer(
    {
      model: o.model, ops, ...(policy ? { policy } : {}),
      maxBatch: int("max-batch", o["max-batch"], 8, 1), maxQueue: int("queue", o.queue, 64, 0), timeoutMs: int("timeout-ms", o["timeout-ms"], 120_000, 1),
      defaultMaxTokens: int("max-tokens", o["max-tokens"], 64, 1), pageTokens: int("page-tokens", o["page-tokens"], 16, 1), layout,
      ...(o.memory !== undefined ? { memoryBytes: parseBytes(o.memory) } : {}), ...(maxPrompt !== undefined ? { maxPromptTokens: maxPrompt } : {}),
      ...(kept !== undefined ? { keptRatio: kept } : {}), log: err,
    },
    { port, host: o.host ?? "127.0.0.1" },
  );
  out(`zipvl serve: ${s.engine.modelId} on ${ops.name} (${policy ? `policy ${policy.program.name}` : "dense"}), http://${o.host ?? "127.0.0.1"}:${s.port}/v1/chat/completions`);
  out(`  KV pool ${fmtBytes(s.plan.poolBytes)} (${s.plan.numPages} pages), max batch ${s.scheduler.opts.maxBatch}, queue ${s.scheduler.opts.maxQueue}`);
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      err(`zipvl serve: ${sig}: finishing running requests`);
      process.off("SIGINT", onInt);
      process.off("SIGTERM", onTerm);
      void s.close().then(resolve);
    };
    const onInt = (): void => stop("SIGINT");
    const onTerm = (): void => stop("SIGTERM");
    process.on("SIGINT", onInt);
    process.on("SIGTERM", onTerm);
  });
  ops.dispose();
  return 0;
}
