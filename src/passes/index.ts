// The ordered, named pass list (Triton's stages, tinygrad's rewrite list). Every pass maps a verified program to a
// verified program with the same interpreter results; `--dump-after NAME` prints the IR after any of them.
import { fail } from "../diagnostics/diagnostic.ts";
import type { Program } from "../ir/ir.ts";
import { verifyProgram } from "../ir/verify.ts";
import { fuseProbeScoring, fuseSelection, fuseSparseAttention } from "./fuse.ts";
import { mapFuncs, type FuncPass } from "./rewrite.ts";
import { detectCausal, eliminateDeadCode, foldConstants } from "./simple.ts";

export interface Pass {
  readonly name: string;
  readonly doc: string;
  readonly run: FuncPass;
}

export const PASSES: readonly Pass[] = [
  { name: "fold-constants", doc: "fold constant sub-expressions and x*1, x+0 identities", run: foldConstants },
  { name: "detect-causal", doc: "mark masks that imply k_pos <= q_pos so kernels can skip key tiles", run: detectCausal },
  { name: "fuse-probe-scoring", doc: "probe_attn + col_mass + norm_divisor -> probe_score (1 kernel)", run: fuseProbeScoring },
  { name: "fuse-selection", doc: "normalize, pool, count, keep rules, top-k -> select (1 kernel)", run: fuseSelection },
  { name: "fuse-sparse-attention", doc: "sparse_attn + K/V compaction -> sparse_attn_compact (1 kernel)", run: fuseSparseAttention },
  { name: "eliminate-dead-code", doc: "drop values no output needs", run: eliminateDeadCode },
];

export const PASS_NAMES = PASSES.map((p) => p.name);

export function checkPassName(name: string): void {
  if (name !== "input" && !PASS_NAMES.includes(name)) fail("ZV1303", [name, ["input", ...PASS_NAMES].join(", ")]);
}

/** Runs the pipeline; `onStage` sees the program after every pass ("input" first). Stops after `until` if given. */
export function runPasses(p: Program, onStage?: (name: string, p: Program) => void, until?: string): Program {
  if (until) checkPassName(until);
  onStage?.("input", p);
  if (until === "input") return p;
  let cur = p;
  for (const pass of PASSES) {
    cur = verifyProgram(mapFuncs(cur, pass.run));
    onStage?.(pass.name, cur);
    if (pass.name === until) break;
  }
  return cur;
}
