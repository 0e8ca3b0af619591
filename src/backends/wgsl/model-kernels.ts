// The model ops' WGSL kernels (linear, norms, elementwise, index kernels, embedding): rendering of the thin template
// templates/wgsl/model/model.wgsl.hbs over the hand-written library templates/wgsl/model/lib/*.wgsl, their
// pipelines, and the dispatches they record. Attention reuses the ZipVL stages (stages.ts). Host side of the
// worker in model-worker.ts; all buffers are f32 (ids i32).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import Handlebars from "handlebars";
import { knobs } from "../../knobs.ts";
import type { BindingKind, ZvGpu } from "../../runtime/webgpu.ts";
import type { UniformField } from "../../runtime/webgpu-data.ts";

export type ModelFamily = "gemm" | "norm" | "eltwise" | "embed";
export interface ModelConfig {
  /** GEMM micro-tile per thread (the workgroup tile is 16 x gemmTile square). */
  gemmTile: number;
  gemmBK: number;
  normWorkgroup: number; // power of two
  elementWorkgroup: number;
}
export const DEFAULT_MODEL_CONFIG: ModelConfig = { gemmTile: 4, gemmBK: 16, normWorkgroup: 256, elementWorkgroup: 256 };

const U: BindingKind = "uniform";
const R: BindingKind = "read-only-storage";
const W: BindingKind = "storage";
export const MODEL_BINDINGS: Record<ModelFamily, readonly BindingKind[]> = {
  gemm: [U, R, R, R, W], // args x w bias y
  norm: [U, R, R, R, W], // args x g b y
  eltwise: [U, R, R, R, W], // args a b c out
  embed: [U, R, R, W], // args table ids out
};
export type EltwiseEntry = "add" | "add_rows" | "silu_mul" | "act_gelu" | "act_gelu_tanh" | "act_quick_gelu" | "act_silu" | "to_heads" | "from_heads" | "rope";

const TEMPLATE_DIR = knobs.templates ? pathToFileURL(join(knobs.templates, "wgsl", "model") + "/") : new URL("../../../templates/wgsl/model/", import.meta.url);
let template: HandlebarsTemplateDelegate | null = null;
const libs = new Map<ModelFamily, string>();

export function renderModelWgsl(family: ModelFamily, config: ModelConfig = DEFAULT_MODEL_CONFIG): string {
  template ??= Handlebars.create().compile(readFileSync(new URL("model.wgsl.hbs", TEMPLATE_DIR), "utf8"), { strict: true });
  let lib = libs.get(family);
  if (lib === undefined) {
    lib = readFileSync(new URL(`lib/${family}.wgsl`, TEMPLATE_DIR), "utf8");
    libs.set(family, lib);
  }
  return template({ family, config, lib });
}

/** Where dispatches go: the worker's open command encoder (one compute pass per dispatch keeps writes ordered). */
export interface Recorder {
  readonly dev: ZvGpu;
  /** A uniform buffer that lives until the next submission. */
  uniform(fields: readonly UniformField[]): GPUBuffer;
  dispatch(pipeline: GPUComputePipeline, bindings: readonly BindingKind[], buffers: readonly GPUBuffer[], x: number, y: number): void;
}

/** A 2-D grid of workgroups covering `groups` (at most 65535 per dimension). */
export function grid(groups: number): [number, number] {
  const x = Math.max(1, Math.min(groups, 65535));
  return [x, Math.ceil(groups / x)];
}

export class ModelKernels {
  private readonly dev: ZvGpu;
  private readonly config: ModelConfig;
  constructor(dev: ZvGpu, config: Partial<ModelConfig> = {}) {
    this.dev = dev;
    this.config = { ...DEFAULT_MODEL_CONFIG, ...config };
  }

  private pipeline(family: ModelFamily, entry: string): Promise<GPUComputePipeline> {
    return this.dev.pipeline(renderModelWgsl(family, this.config), entry, MODEL_BINDINGS[family]);
  }

  /** y [M, N] = x [M, K] w [N, K]^T + bias (bias may be a dummy when hasBias is false). */
  async linear(r: Recorder, x: GPUBuffer, w: GPUBuffer, bias: GPUBuffer, y: GPUBuffer, M: number, N: number, K: number, hasBias: boolean): Promise<void> {
    const p = await this.pipeline("gemm", "linear");
    const tile = 16 * this.config.gemmTile;
    const u = r.uniform([["u32", M], ["u32", N], ["u32", K], ["u32", hasBias ? 1 : 0]]);
    r.dispatch(p, MODEL_BINDINGS.gemm, [u, x, w, bias, y], Math.ceil(N / tile), Math.ceil(M / tile));
  }

  async norm(r: Recorder, kind: "rms_norm" | "layer_norm", x: GPUBuffer, g: GPUBuffer, b: GPUBuffer, y: GPUBuffer, R: number, C: number, eps: number): Promise<void> {
    const p = await this.pipeline("norm", kind);
    const u = r.uniform([["u32", R], ["u32", C], ["f32", eps]]);
    r.dispatch(p, MODEL_BINDINGS.norm, [u, x, g, b, y], ...grid(R));
  }

  /** out[total] from a, b, c by `entry`; p0..p2 are the entry's dims (see lib/eltwise.wgsl). */
  async eltwise(r: Recorder, entry: EltwiseEntry, bufs: [GPUBuffer, GPUBuffer, GPUBuffer, GPUBuffer], total: number, p: [number, number, number] = [0, 0, 0]): Promise<void> {
    const pl = await this.pipeline("eltwise", entry);
    const u = r.uniform([["u32", total], ["u32", p[0]], ["u32", p[1]], ["u32", p[2]]]);
    r.dispatch(pl, MODEL_BINDINGS.eltwise, [u, ...bufs], ...grid(Math.ceil(total / this.config.elementWorkgroup)));
  }

  async embed(r: Recorder, table: GPUBuffer, ids: GPUBuffer, out: GPUBuffer, rows: number, H: number): Promise<void> {
    const p = await this.pipeline("embed", "embed");
    const u = r.uniform([["u32", rows * H], ["u32", H]]);
    r.dispatch(p, MODEL_BINDINGS.embed, [u, table, ids, out], ...grid(Math.ceil((rows * H) / this.config.elementWorkgroup)));
  }
}


