// Renders the CUDA kernels of a fused program: one thin handlebars template per kernel op, filled with the
// variant hooks (C expressions emitted from the IR), the dtype, the head dim and the schedule (config).
import { createHash } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import Handlebars from "handlebars";
import type { Expr } from "../../expr/ast.ts";
import { fail } from "../../diagnostics/diagnostic.ts";
import { getFunc, isExpr, type Node, type Program } from "../../ir/ir.ts";
import { impliesCausal } from "../../passes/simple.ts";
import { knobs } from "../../knobs.ts";
import { paramSlots, renderC, type Slots } from "../cstyle.ts";

export const TEMPLATE_DIR = knobs.templates ? join(knobs.templates, "cuda") : new URL("../../../templates/cuda/", import.meta.url).pathname;
export const INCLUDE_DIR = join(TEMPLATE_DIR, "include");
export const CUDA_HEAD_DIMS = [64, 80, 96, 128, 256] as const;
export type CudaDType = "f32" | "f16" | "bf16";
export const C_TYPE: Record<CudaDType, string> = { f32: "float", f16: "__half", bf16: "__nv_bfloat16" };
const ACTIVATION: Record<string, number> = { softmax: 0, sigmoid: 1, none: 2 };

export type Stage = "probe" | "select" | "sparse_attn" | "decode";
export const STAGE_OF_OP: Record<string, Stage> = { probe_score: "probe", select: "select", sparse_attn_compact: "sparse_attn", decode_attn: "decode" };

export interface KernelSource {
  readonly stage: Stage;
  /** The extern "C" entry (decode: `${name}_split` and `${name}_combine`). */
  readonly name: string;
  readonly source: string;
  readonly dtype: CudaDType;
  readonly headDim: number;
  readonly config: Readonly<Record<string, number>>;
}

const templates = new Map<string, Handlebars.TemplateDelegate>();
function template(stage: Stage): Handlebars.TemplateDelegate {
  let t = templates.get(stage);
  if (!t) {
    t = Handlebars.compile(readFileSync(join(TEMPLATE_DIR, `${stage}.cu.hbs`), "utf8"), { noEscape: true, strict: false });
    templates.set(stage, t);
  }
  return t;
}

/** Hash of every template and device-library file: part of the kernel cache key. */
export function templateHash(): string {
  const h = createHash("sha256");
  for (const dir of [TEMPLATE_DIR, INCLUDE_DIR]) {
    for (const f of readdirSync(dir).sort()) if (/\.(hbs|cuh)$/.test(f)) h.update(f).update(readFileSync(join(dir, f)));
  }
  return h.digest("hex").slice(0, 16);
}

const isTrue = (e: Expr): boolean => e.k === "bool" && e.v;
const isFalse = (e: Expr): boolean => e.k === "bool" && !e.v;
const isIdentity = (e: Expr): boolean => e.k === "var" && e.name === "s";

/** Exactly the causal mask (or no mask): the kernel may skip evaluating it per score. */
function trivialCausal(e: Expr): boolean {
  return isTrue(e) || (impliesCausal(e) && e.k === "bin" && e.op !== "&&");
}

export function kernelName(p: Program, stage: Stage, dtype: CudaDType, headDim: number): string {
  return `zv_${p.name.replace(/[^A-Za-z0-9_]/g, "_")}_${stage}_${dtype}_d${headDim}`;
}

function variantOf(nd: Node, slots: Slots, headDim: number) {
  // Ops without a mask (decode) see the always-true one.
  const e = (k: string): Expr => (nd.attrs[k] !== undefined && isExpr(nd.attrs[k]) ? nd.attrs[k] : { k: "bool", v: true, pos: 0 });
  const mask = e("mask");
  const causal = nd.attrs.causal === true;
  return {
    activation: ACTIVATION[(nd.attrs.activation as string | undefined) ?? "softmax"] ?? 0,
    probeCausal: causal,
    attnCausal: causal,
    attnMaskTrivial: trivialCausal(mask),
    scoreMod: nd.attrs.modifier !== undefined ? renderC(e("modifier"), slots, headDim) : "s",
    probeMask: nd.op === "probe_score" ? renderC(mask, slots, headDim) : "true",
    attnMask: nd.op === "sparse_attn_compact" ? renderC(mask, slots, headDim) : "true",
    // Empty when the rule is absent: the template then compiles the keepIf hook out.
    keepIf: nd.op === "select" && !isFalse(nd.attrs.keep_if as Expr) ? renderC(nd.attrs.keep_if as Expr, slots, headDim) : "",
  };
}

/** The CUDA kernel sources for every kernel op of a fused program at one dtype and head dim. */
export function renderKernels(p: Program, dtype: CudaDType, headDim: number, arch: 80 | 90, configs: Partial<Record<Stage, Record<string, number>>> = {}): KernelSource[] {
  if (!(CUDA_HEAD_DIMS as readonly number[]).includes(headDim)) fail("ZV2105", [headDim, "the cuda backend", CUDA_HEAD_DIMS.join(", ")]);
  const slots = paramSlots(p);
  const out: KernelSource[] = [];
  for (const fname of ["prefill", "decode"] as const) {
    for (const nd of getFunc(p, fname).body) {
      const stage = STAGE_OF_OP[nd.op];
      if (!stage) continue;
      checkSupported(nd);
      const name = kernelName(p, stage, dtype, headDim);
      const config = configs[stage] ?? {};
      const source = template(stage)({ kernelName: name, dtype: C_TYPE[dtype], headDim, arch, config, variant: variantOf(nd, slots, headDim) });
      out.push({ stage, name, source, dtype, headDim, config });
    }
  }
  return out;
}

/** Features the device library does not implement yet get a coded error naming them, never a wrong kernel. */
export function checkSupported(nd: Node): void {
  if (nd.op === "decode_attn" && !isIdentity(nd.attrs.modifier as Expr)) fail("ZV4002", ["the cuda backend", "score modifiers in decode()"]);
}
