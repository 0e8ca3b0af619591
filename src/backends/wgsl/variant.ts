// WGSL variant hooks from the fused IR (the same expressions the CUDA backend renders as C). Each stage compiles
// its own shader, so the probe and attention stages get their own modifier and mask.
import type { Expr } from "../../expr/ast.ts";
import { fail } from "../../diagnostics/diagnostic.ts";
import type { Program } from "../../ir/ir.ts";
import { paramSlots, renderWgsl as renderExprWgsl } from "../cstyle.ts";
import { fusedNode } from "../plan.ts";
import type { WgslVariant } from "./stages.ts";

const ACTIVATION = { softmax: 0, sigmoid: 1, none: 2 } as const;
const BACKEND = "the webgpu backend";

export interface WgslVariants {
  readonly probe: WgslVariant;
  readonly select: WgslVariant;
  readonly attention: WgslVariant;
}

export function wgslVariants(p: Program, headDim: number): WgslVariants {
  const slots = paramSlots(p);
  const r = (e: unknown): string => renderExprWgsl(e as Expr, slots, headDim);
  const ps = fusedNode(p, "prefill", "probe_score", BACKEND);
  const sel = fusedNode(p, "prefill", "select", BACKEND);
  const sa = fusedNode(p, "prefill", "sparse_attn_compact", BACKEND);
  const dec = fusedNode(p, "decode", "decode_attn", BACKEND);
  const mod = dec.attrs.modifier as Expr;
  if (!(mod.k === "var" && mod.name === "s")) fail("ZV4002", [BACKEND, "score modifiers in decode()"]);
  // The WGSL radix count assumes non-negative column mass; raw scores (activation none) can be negative.
  if (sel.attrs.mode === "tau" && ps.attrs.activation === "none") fail("ZV4002", [BACKEND, "tau selection over raw (activation none) scores"]);
  const base: WgslVariant = {
    activation: ACTIVATION[ps.attrs.activation as keyof typeof ACTIVATION],
    probeCausal: ps.attrs.causal === true,
    attnCausal: sa.attrs.causal === true,
    scoreMod: "s",
    probeMask: "true",
    attnMask: "true",
  };
  return {
    probe: { ...base, scoreMod: r(ps.attrs.modifier), probeMask: r(ps.attrs.mask) },
    select: { ...base, keepIf: r(sel.attrs.keep_if) },
    attention: { ...base, scoreMod: r(sa.attrs.modifier), attnMask: r(sa.attrs.mask) },
  };
}
