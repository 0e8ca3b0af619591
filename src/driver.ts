// The compiler driver: program file -> checked IR -> passes. Shared by the CLI, the tests and the runtimes.
import { loadProgram } from "./frontend/evaluate.ts";
import { lowerProgram } from "./frontend/lower.ts";
import type { Program } from "./ir/ir.ts";
import { runPasses } from "./passes/index.ts";

export interface Compiled {
  readonly file: string;
  /** IR as the front end produced it. */
  readonly input: Program;
  /** IR after the last pass (or after `until`). */
  readonly final: Program;
}

export function compileFile(file: string, opts: { until?: string; onStage?: (pass: string, p: Program) => void } = {}): Compiled {
  const input = lowerProgram(loadProgram(file));
  const final = runPasses(input, opts.onStage, opts.until);
  return { file, input, final };
}

export function compileSource(file: string, text: string): Compiled {
  const input = lowerProgram(loadProgram(file, text));
  return { file, input, final: runPasses(input) };
}
