// A model run from a checkpoint directory: backend ops, config, weights, tokenizer, image preprocessing, the
// policy program, then generation. Shared by `zipvl run`, `zipvl demo` and `zipvl parity`.
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { compileFile } from "../driver.ts";
import { bindParams } from "../interp/bind.ts";
import { LlavaError } from "./errors.ts";
import { anyresGridShape, expandImageTokens, loadConfig, loadImage, loadProcessorConfig, loadTokenizer, openWeights, preprocess } from "./hf/index.ts";
import type { ChatTokenizer } from "./hf/index.ts";
import type { LlavaConfig } from "./config.ts";
import { LlavaModel, type GenerateOptions, type GenerateResult } from "./llava.ts";
import type { ModelOps, OpsFactory, OpsOptions, Policy } from "./ops.ts";
import type { ImageInput } from "./vision.ts";

export type BackendName = "cpu" | "cuda" | "webgpu";

/** The default policy: the paper's method (beside this source tree, else under the working directory: bundles). */
export const ZIPVL_PROGRAM = ((): string => {
  const here = fileURLToPath(new URL("../../dsl/zipvl.ts", import.meta.url));
  return existsSync(here) ? here : resolve("dsl/zipvl.ts");
})();

// Static import() calls so bundlers (bench/bundle.mjs) keep them.
const FACTORIES: Partial<Record<BackendName, () => Promise<OpsFactory>>> = {
  cpu: async () => (await import("./cpu-ops.ts")).createCpuOps,
  cuda: async () => (await import("./cuda-ops.ts")).createCudaOps,
  webgpu: async () => (await import("./webgpu-ops.ts")).createWebgpuOps,
};

/** Software rasterizers (Mesa lavapipe/llvmpipe, SwiftShader) run WebGPU on the CPU, slower than the cpu ops. */
const SOFTWARE_ADAPTER = /llvmpipe|lavapipe|swiftshader|software/i;

export async function createOps(backend: string, opts: OpsOptions = {}): Promise<ModelOps> {
  if (!["cpu", "cuda", "webgpu"].includes(backend)) throw new LlavaError("ZV6104", [backend, "choose auto, cpu, cuda or webgpu"]);
  const load = FACTORIES[backend as BackendName];
  if (!load) throw new LlavaError("ZV6104", [backend, "the model does not run on WebGPU yet (no src/model/webgpu-ops.ts); use cuda or cpu"]);
  return (await load())(opts);
}

/** CUDA when its ops load and find a GPU, else WebGPU on a hardware adapter, else the CPU in f32 (the reasons it
 *  fell back are returned). */
export async function bestOps(opts: OpsOptions = {}): Promise<{ ops: ModelOps; fallbacks: string[] }> {
  const fallbacks: string[] = [];
  for (const b of ["cuda", "webgpu"] as const) {
    if (!FACTORIES[b]) continue;
    try {
      const ops = await createOps(b, opts);
      const adapter = (ops as { adapter?: unknown }).adapter;
      if (typeof adapter === "string" && SOFTWARE_ADAPTER.test(adapter)) {
        ops.dispose();
        fallbacks.push(`${b}: the adapter '${adapter}' is a software rasterizer`);
        continue;
      }
      return { ops, fallbacks };
    } catch (e) {
      fallbacks.push(`${b}: ${(e as Error).message}`);
    }
  }
  return { ops: await createOps("cpu"), fallbacks };
}

/** Compiles a policy program and binds parameter overrides (unknown names: ZV1207; `tauFlag` names the option
 *  that set `tau`, for a clearer error when the program has no such parameter). */
export function loadPolicy(file: string, params: Readonly<Record<string, number>> = {}, tauFlag?: string): Policy {
  const program = compileFile(file).final;
  if (tauFlag && !program.params.some((p) => p.name === "tau")) throw new LlavaError("ZV6107", [`${tauFlag} needs a program with a 'tau' parameter; ${file} (program '${program.name}') has none`]);
  bindParams(program, params);
  return { program, params: { ...params } };
}

export interface Prompt {
  readonly ids: Int32Array;
  readonly image?: ImageInput;
}

/** The chat prompt for one (optional) image and a question, tokenized the way the HF processor does. */
export function buildPrompt(cfg: LlavaConfig, dir: string, tok: ChatTokenizer, text: string, imagePath?: string): Prompt {
  const content = imagePath ? [{ type: "image" as const }, { type: "text" as const, text }] : [{ type: "text" as const, text }];
  const rendered = tok.applyChatTemplate([{ role: "user", content }], true);
  // A template that writes the BOS itself must not get a second one from the post-processor.
  const withBos = tok.bosToken !== null && rendered.startsWith(tok.bosToken);
  const ids = tok.encode(rendered, { addSpecialTokens: !withBos });
  if (!imagePath) return { ids };
  const img = loadImage(imagePath);
  const pre = preprocess(img, loadProcessorConfig(dir), cfg);
  const grid = cfg.modelType === "llava_next" && cfg.imageGridPinpoints ? anyresGridShape(pre.imageSizes, cfg.imageGridPinpoints, cfg.vision.imageSize) : undefined;
  const image: ImageInput = { pixels: pre.pixelValues, shape: pre.shape, imageSize: pre.imageSizes, ...(grid ? { grid } : {}) };
  return { ids: expandImageTokens(ids, cfg.imageTokenIndex, [pre.numImageTokens]), image };
}

export interface LoadedModel {
  readonly cfg: LlavaConfig;
  readonly model: LlavaModel;
  readonly tok: ChatTokenizer;
  readonly loadMs: number;
}

export function loadModel(ops: ModelOps, dir: string, onProgress?: (done: number, total: number) => void): LoadedModel {
  const t0 = performance.now();
  const cfg = loadConfig(dir);
  const tok = loadTokenizer(dir);
  const store = openWeights(dir, { tieWordEmbeddings: cfg.text.tieWordEmbeddings });
  const model = LlavaModel.load(ops, cfg, store, dir, onProgress);
  return { cfg, model, tok, loadMs: performance.now() - t0 };
}

export interface RunReport {
  readonly backend: string;
  readonly mode: "dense" | "zipvl";
  readonly policy?: string;
  readonly answer: string;
  readonly result: GenerateResult;
}

export function runPrompt(m: LoadedModel, prompt: Prompt, opts: GenerateOptions, backend: string): RunReport {
  const result = m.model.generate(prompt.ids, prompt.image, opts);
  const base = { backend, mode: opts.policy ? ("zipvl" as const) : ("dense" as const), answer: m.tok.decode(result.tokens, true), result };
  return opts.policy ? { ...base, policy: opts.policy.program.name } : base;
}

/** Lines of a human-readable report (kept ratios, prefill time, decode rate). */
export function formatReport(r: RunReport): string[] {
  const g = r.result;
  const kept = g.layers.map((s) => (s.kept / s.n).toFixed(3));
  const avg = g.layers.reduce((a, s) => a + s.kept / s.n, 0) / Math.max(1, g.layers.length);
  const tps = g.decodeSteps > 0 ? (g.decodeSteps / g.decodeMs) * 1000 : 0;
  return [
    `${r.mode}${r.policy ? ` (${r.policy})` : ""} on ${r.backend}: ${g.promptTokens} prompt tokens, ${g.tokens.length} new (${g.stop})`,
    `  kept per layer: ${g.layers.map((s) => s.kept).join(" ")} of ${g.promptTokens} (ratios ${kept.join(" ")}; mean ${avg.toFixed(3)})`,
    `  prefill ${g.prefillMs.toFixed(1)} ms; decode ${g.decodeSteps} steps in ${g.decodeMs.toFixed(1)} ms (${tps.toFixed(1)} tokens/s)`,
  ];
}

export function reportJson(r: RunReport): Record<string, unknown> {
  const g = r.result;
  return {
    backend: r.backend, mode: r.mode, policy: r.policy ?? null, answer: r.answer, tokens: g.tokens, stop: g.stop,
    promptTokens: g.promptTokens,
    layers: g.layers.map((s) => ({ layer: s.layer, kept: s.kept, ratio: s.kept / s.n })),
    prefillMs: g.prefillMs, decodeMs: g.decodeMs, decodeSteps: g.decodeSteps,
    decodeTokensPerSecond: g.decodeSteps > 0 ? (g.decodeSteps / g.decodeMs) * 1000 : 0,
  };
}
