// The one narrow interface every backend sits behind. Code generators turn the fused IR into kernel sources;
// executors run a program's function on host tensors (the cpu executor is the interpreter).
import type { Tensor } from "../io/tensor.ts";
import type { Program } from "../ir/ir.ts";

export interface GeneratedFile {
  /** File name relative to the output directory. */
  readonly path: string;
  readonly contents: string | Uint8Array;
}

export interface CodegenOptions {
  /** Extra files (cubins, PTX) when a toolchain is present; sources only otherwise. */
  readonly build?: boolean;
  /** Instantiations to emit (kernels are specialized per dtype and head dim). */
  readonly dtypes?: readonly ("f32" | "f16" | "bf16")[];
  readonly headDims?: readonly number[];
}

export interface CodegenTarget {
  readonly name: "cuda" | "wgsl";
  generate(p: Program, opts: CodegenOptions): Promise<readonly GeneratedFile[]>;
}

export interface ExecOptions {
  readonly params?: Readonly<Record<string, number>>;
  readonly layer?: number;
}

export interface Executor {
  readonly name: "cpu" | "cuda" | "webgpu";
  run(p: Program, fname: "prefill" | "decode", inputs: ReadonlyMap<string, Tensor>, opts: ExecOptions): Promise<Map<string, Tensor>>;
  dispose?(): void;
}
