// `zipvl check | compile | exec | help`. User errors print as `path:line:col - error ZVnnnn: message` (exit 1);
// only internal errors show a stack (exit 2).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { formatDiagnostic, isUserError, fail, ZipvlError } from "../diagnostics/diagnostic.ts";
import { compileFile } from "../driver.ts";
import { printProgram } from "../ir/print.ts";
import { getExecutor, getTarget, TARGETS } from "../backends/registry.ts";
import { randomTensor } from "../io/random.ts";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import type { Tensor } from "../io/tensor.ts";
import { isDType } from "../io/dtype.ts";
import { checkPassName, PASSES } from "../passes/index.ts";
import type { Program } from "../ir/ir.ts";
import { parseParamList } from "./params.ts";

const USAGE = `zipvl: a compiler and runtime for fused sparse-attention kernels

usage:
  zipvl check FILE [--dump-after PASS]
  zipvl compile FILE --target cuda|wgsl|all --out DIR [--dtype bf16,f16,f32] [--head-dim 64,128] [--dump-after PASS]
  zipvl exec FILE [--backend cpu|cuda|webgpu] [--in IN.safetensors] [--out OUT.safetensors]
                  [--param NAME=VALUE]... [--entry prefill|decode] [--layer L]
                  [--shape Hq=8,Hkv=2,n=512,d=64] [--dtype f32|f16|bf16] [--seed S]
  zipvl passes            list the passes in order
  zipvl tune [--program FILE] [--backend cuda|webgpu] [--budget S] [--shapes SPEC] [--dry-run]   per-GPU autotuning
  zipvl bench [--out DIR] [--quick] [--peers] [--shapes SPEC] [--report RESULTS] [--docs FILE]  zipvl vs PyTorch peers
  zipvl run --model DIR --prompt TEXT [--image IMG] [--dense] [--tau T] [--policy FILE] [--param NAME=VALUE]...
            [--backend auto|cpu|cuda|webgpu] [--max-new-tokens N] [--temperature T --top-p P --seed S] [--json]
  zipvl demo [--out DIR] [--backend ...] [--tau T] [--max-new-tokens N] [--json]   a random LLaVA-Next, dense vs ZipVL
  zipvl serve --model DIR [--port P] [--backend cpu|cuda] [--max-batch B] [--queue Q] [--timeout-ms T]   OpenAI-style chat server
  zipvl parity --model DIR --ref REF.safetensors --ref-json REF.json [--image IMG] [--prompt TEXT] [--backend ...]

Without --in, exec draws random q, k, v of --shape and --dtype (seeded) and writes them to the output too.`;

type Out = (s: string) => void;

// Model commands parse their own options (src/cli/run.ts, demo.ts, parity.ts); imported on use.
type Command = (argv: readonly string[], out: Out, err: Out) => Promise<number>;
const MODEL_COMMANDS: Record<string, () => Promise<Command>> = {
  run: async () => (await import("./run.ts")).runCommand,
  demo: async () => (await import("./demo.ts")).demoCommand,
  parity: async () => (await import("./parity.ts")).parityCommand,
  serve: async () => (await import("./serve.ts")).serveCommand,
};

// Tuning and benchmarking parse their own options (src/cli/tune.ts, bench.ts); imported on use.
const TOOL_COMMANDS: Record<string, () => Promise<(argv: readonly string[], out: Out) => Promise<number>>> = {
  tune: async () => {
    const { tuneCommand, loadIrProgram } = await import("./tune.ts");
    return (argv, out) => tuneCommand(argv, out, (f) => (f.endsWith(".ir") ? loadIrProgram(f) : compileFile(f).final));
  },
  bench: async () => (await import("./bench.ts")).benchCommand,
};

export async function main(argv: readonly string[], out: Out = (s) => process.stdout.write(s + "\n"), err: Out = (s) => process.stderr.write(s + "\n")): Promise<number> {
  try {
    const tool = TOOL_COMMANDS[argv[0] ?? ""];
    if (tool) return await (await tool())(argv.slice(1), out);
    const model = MODEL_COMMANDS[argv[0] ?? ""];
    if (model) return await (await model())(argv.slice(1), out, err);
    return await dispatch(argv, out);
  } catch (e) {
    if (e instanceof ZipvlError) {
      for (const d of e.diagnostics) err(formatDiagnostic(d));
      return 1;
    }
    if (isUserError(e)) {
      err(`error ${e.code}: ${e.message.startsWith(`${e.code}: `) ? e.message.slice(e.code.length + 2) : e.message}`);
      return 1;
    }
    err(`internal error (please report): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 2;
  }
}

function parse(argv: readonly string[]) {
  try {
    return parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        "dump-after": { type: "string" },
        target: { type: "string" },
        out: { type: "string" },
        backend: { type: "string", default: "cpu" },
        in: { type: "string" },
        param: { type: "string", multiple: true, default: [] },
        entry: { type: "string", default: "prefill" },
        layer: { type: "string", default: "0" },
        shape: { type: "string", default: "Hq=8,Hkv=2,n=512,d=64" },
        dtype: { type: "string" },
        "head-dim": { type: "string" },
        seed: { type: "string", default: "0" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean" },
      },
    });
  } catch (e) {
    return fail("ZV5001", [`${(e as Error).message}\n${USAGE}`]);
  }
}

async function dispatch(argv: readonly string[], out: Out): Promise<number> {
  const { values: o, positionals } = parse(argv);
  if (o.version) return out("zipvl 0.1.0"), 0;
  const [cmd, file, ...extra] = positionals;
  if (o.help || cmd === undefined || cmd === "help") return out(USAGE), 0;
  if (cmd === "passes") {
    for (const p of PASSES) out(`${p.name.padEnd(24)} ${p.doc}`);
    return 0;
  }
  if (!["check", "compile", "exec"].includes(cmd)) fail("ZV5001", [`unknown command '${cmd}'\n${USAGE}`]);
  if (!file) fail("ZV5001", [`'zipvl ${cmd}' needs a program file\n${USAGE}`]);
  if (extra.length) fail("ZV5001", [`unexpected arguments: ${extra.join(" ")}`]);
  const dumps: [string, Program][] = [];
  const until = o["dump-after"];
  if (until) checkPassName(until);
  const compiled = compileFile(file!, { onStage: (name, p) => name === until && dumps.push([name, p]) });
  const dump = dumps[0];
  if (cmd === "check") {
    if (dump) out(printProgram(dump[1]));
    out(`${file}: ok (program '${compiled.final.name}', ${compiled.final.params.length} parameter(s))`);
    return 0;
  }
  if (cmd === "compile") return compile(file!, compiled.final, o, dump, out);
  if (dump) out(printProgram(dump[1]));
  return exec(file!, compiled.final, o, out);
}

async function compile(file: string, p: Program, o: ReturnType<typeof parse>["values"], dump: [string, Program] | undefined, out: Out): Promise<number> {
  const dir = o.out ?? fail("ZV5001", ["'zipvl compile' needs --out DIR"]);
  const target = o.target ?? fail("ZV5001", [`'zipvl compile' needs --target ${TARGETS.join("|")}|all`]);
  const targets = target === "all" ? [...TARGETS] : [target];
  const generated = [];
  const dtypes = (o.dtype ?? "bf16").split(",").map((x) => x.trim());
  for (const dt of dtypes) if (!["f32", "f16", "bf16"].includes(dt)) fail("ZV5001", [`--dtype takes f32, f16 or bf16 (comma-separated), got '${dt}'`]);
  const headDims = (o["head-dim"] ?? "128").split(",").map((x) => Number(x.trim()));
  for (const hd of headDims) if (!Number.isInteger(hd) || hd < 1) fail("ZV5001", [`--head-dim takes positive integers (comma-separated), got '${o["head-dim"]}'`]);
  const copts = { build: true, dtypes: dtypes as ("f32" | "f16" | "bf16")[], headDims };
  for (const t of targets) generated.push(...(await (await getTarget(t)).generate(p, copts)));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${p.name}.ir`), printProgram(p));
  if (dump) writeFileSync(join(dir, `${p.name}.after-${dump[0]}.ir`), printProgram(dump[1]));
  for (const g of generated) {
    mkdirSync(join(dir, g.path, ".."), { recursive: true });
    writeFileSync(join(dir, g.path), g.contents);
  }
  const meta = {
    program: p.name, source: file, params: Object.fromEntries(p.params.map((x) => [x.name, x.value])),
    passes: PASSES.map((x) => x.name), targets, files: [`${p.name}.ir`, ...generated.map((g) => g.path)],
  };
  writeFileSync(join(dir, `${p.name}.json`), JSON.stringify(meta, null, 2) + "\n");
  out(`${file}: wrote ${meta.files.length + 1} file(s) to ${dir}`);
  return 0;
}


function parseShape(s: string): Record<"Hq" | "Hkv" | "n" | "d", number> {
  const dims: Record<string, number> = { Hq: 8, Hkv: 2, n: 512, d: 64 };
  for (const part of s.split(",")) {
    const m = /^(Hq|Hkv|n|d)=(\d+)$/.exec(part.trim());
    if (!m) fail("ZV5001", [`--shape takes Hq=..,Hkv=..,n=..,d=.. (positive integers), got '${part}'`]);
    dims[m![1]!] = Number(m![2]);
  }
  return dims as Record<"Hq" | "Hkv" | "n" | "d", number>;
}

async function exec(file: string, p: Program, o: ReturnType<typeof parse>["values"], out: Out): Promise<number> {
  const entry = o.entry;
  if (entry !== "prefill" && entry !== "decode") fail("ZV5001", [`--entry must be prefill or decode, got '${entry}'`]);
  const layer = Number(o.layer);
  if (!Number.isInteger(layer) || layer < 0) fail("ZV5001", [`--layer must be a non-negative integer, got '${o.layer}'`]);
  const params = parseParamList(o.param ?? []);
  let inputs: Map<string, Tensor>;
  let generated = false;
  if (o.in) inputs = readSafetensors(o.in).tensors;
  else {
    const { Hq, Hkv, n, d } = parseShape(o.shape!);
    const dtype = o.dtype ?? "f32";
    if (!isDType(dtype) || !["f32", "f16", "bf16"].includes(dtype)) fail("ZV5001", [`--dtype must be f32, f16 or bf16, got '${dtype}'`]);
    const seed = Number(o.seed);
    if (!Number.isInteger(seed)) fail("ZV5001", [`--seed must be an integer, got '${o.seed}'`]);
    const t = (shape: number[], s: number): Tensor => randomTensor(dtype as "f32", shape, seed * 7 + s);
    inputs = entry === "prefill"
      ? new Map([["q", t([Hq, n, d], 1)], ["k", t([Hkv, n, d], 2)], ["v", t([Hkv, n, d], 3)]])
      : new Map([["q", t([Hq, 1, d], 1)], ["k_cache", t([Hkv, n, d], 2)], ["v_cache", t([Hkv, n, d], 3)]]);
    generated = true;
  }
  const executor = await getExecutor(o.backend!);
  const t0 = performance.now();
  const result = await executor.run(p, entry, inputs, { params, layer });
  const ms = performance.now() - t0;
  executor.dispose?.();
  const dest = o.out ?? "out.safetensors";
  const all = new Map(result);
  if (generated) for (const [k, v] of inputs) all.set(`input.${k}`, v);
  writeSafetensors(dest, all, { program: p.name, entry, backend: executor.name, source: file });
  for (const [k, v] of result) out(`${k.padEnd(12)} ${v.dtype}[${v.shape.join(",")}]`);
  const count = result.get("count");
  const n = inputs.get("q")?.shape[1];
  if (count && n) out(`kept ${[...count.data].join(",")} of ${n} tokens (${[...count.data].map((c) => ((100 * c) / n).toFixed(1) + "%").join(", ")})`);
  out(`${entry} on ${executor.name}: ${ms.toFixed(1)} ms; wrote ${dest}`);
  return 0;
}
