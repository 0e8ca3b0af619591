// The model kernels (templates/cuda/model.cu.hbs over include/zv_model.cuh): rendering per dtype, compile + load
// through the content-keyed cache (compile.ts), and one launcher per kernel that owns its launch geometry.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import Handlebars from "handlebars";
import type { CudaDevice, CudaFunction, CudaModule, CudaStream, DeviceBuffer } from "../../runtime/native.ts";
import { compileKernel, type Arch, type CompiledKernel } from "./compile.ts";
import { C_TYPE, TEMPLATE_DIR, type CudaDType, type KernelSource } from "./render.ts";
import { ELT_KIND, MODEL_ARG_LAYOUTS, packModelArgs, type EltKind, type ModelArgStruct } from "./model-args.ts";

/** Every model kernel: name in zv_model.cuh (`${name}_kernel`), argument struct, threads per CTA. */
export const MODEL_KERNELS = [
  { name: "norm", args: "ZvNormArgs", threads: 256 },
  { name: "elt", args: "ZvEltArgs", threads: 256 },
  { name: "embed", args: "ZvEmbedArgs", threads: 256 },
  { name: "rope", args: "ZvRopeArgs", threads: 256 },
  { name: "heads", args: "ZvHeadsArgs", threads: 256 },
  { name: "attn", args: "ZvAttnArgs", threads: 128 },
  { name: "init", args: "ZvInitArgs", threads: 256 },
  { name: "argmax", args: "ZvArgmaxArgs", threads: 256 },
] as const satisfies readonly { name: string; args: ModelArgStruct; threads: number }[];
export type ModelKernelName = (typeof MODEL_KERNELS)[number]["name"];

const ATTN_WARPS = 4;
const MAX_ATTN_HEAD_DIM = 256;

let tpl: Handlebars.TemplateDelegate | undefined;
/** The CUDA source of every model kernel for one dtype; entry points are zv_model_<name>_<dtype>. */
export function renderModelKernels(dtype: CudaDType): { name: string; source: string } {
  tpl ??= Handlebars.compile(readFileSync(join(TEMPLATE_DIR, "model.cu.hbs"), "utf8"), { noEscape: true, strict: true });
  return { name: `zv_model_${dtype}`, source: tpl({ dtype: C_TYPE[dtype], suffix: dtype, kernels: MODEL_KERNELS }) };
}

export const modelEntry = (name: ModelKernelName, dtype: CudaDType): string => `zv_model_${name}_${dtype}`;

type Nvrtc = Parameters<typeof compileKernel>[2];

/** Launchers for one dtype on one stream. Arguments are device buffers; shapes are the caller's (cuda-ops checks). */
export class ModelKernels {
  readonly compiled: CompiledKernel;
  private readonly module: CudaModule;
  private readonly fns = new Map<ModelKernelName, CudaFunction>();
  private readonly gridCap: number;

  constructor(private readonly dev: CudaDevice, readonly dtype: CudaDType, arch: Arch, private readonly stream: CudaStream | null, nvrtc?: Nvrtc) {
    const src = renderModelKernels(dtype);
    // compile.ts reads only a source's name and text; the attention-stage fields do not apply to this module.
    const k = { stage: "probe", name: src.name, source: src.source, dtype, headDim: 0, config: {} } satisfies KernelSource;
    this.compiled = compileKernel(k, arch, nvrtc);
    this.module = dev.loadModule(this.compiled.cubin);
    for (const kn of MODEL_KERNELS) this.fns.set(kn.name, this.module.getFunction(modelEntry(kn.name, dtype)));
    this.gridCap = Math.max(1, dev.info.smCount) * 32;
  }

  private run(name: ModelKernelName, grid: readonly [number, number, number], block: number, args: ArrayBuffer): void {
    this.dev.launch(this.fns.get(name)!, { grid, block: [block, 1, 1], stream: this.stream }, args);
  }
  private flat(count: number): [number, number, number] {
    return [Math.max(1, Math.min(Math.ceil(count / 256), this.gridCap)), 1, 1];
  }

  /** kind 0 RMSNorm (b unused), 1 LayerNorm. */
  norm(x: DeviceBuffer, w: DeviceBuffer, b: DeviceBuffer | null, y: DeviceBuffer, rows: number, cols: number, kind: 0 | 1, eps: number): void {
    this.run("norm", [rows, 1, 1], 256, packModelArgs("ZvNormArgs", { x, w, b, y, rows: { i64: rows }, cols: { i64: cols }, kind: { i64: kind }, eps: { f64: eps } }));
  }
  elt(kind: EltKind, a: DeviceBuffer | bigint, b: DeviceBuffer | bigint | null, y: DeviceBuffer | bigint, count: number, cols = 1, brows = 1): void {
    this.run("elt", this.flat(count), 256, packModelArgs("ZvEltArgs", { a, b, y, count: { i64: count }, kind: { i64: ELT_KIND[kind] }, cols: { i64: cols }, brows: { i64: brows } }));
  }
  embed(table: DeviceBuffer, ids: DeviceBuffer, y: DeviceBuffer, nids: number, H: number, V: number): void {
    this.run("embed", [nids, 1, 1], 256, packModelArgs("ZvEmbedArgs", { table, ids, y, nids: { i64: nids }, H: { i64: H }, V: { i64: V } }));
  }
  /** Greedy ids of logits x [rows, V] into ids, and into copy + slot * stride where copy is given (slot: a device
   *  int read when the kernel runs, so a captured step writes where the host points it each replay). */
  argmax(x: DeviceBuffer, ids: DeviceBuffer | bigint, rows: number, V: number, copy?: { base: DeviceBuffer | bigint; slot: DeviceBuffer | bigint; stride: number }): void {
    this.run("argmax", [rows, 1, 1], 256, packModelArgs("ZvArgmaxArgs", { x, ids, copy: copy?.base ?? null, slot: copy?.slot ?? null, rows: { i64: rows }, V: { i64: V }, stride: { i64: copy?.stride ?? 0 } }));
  }
  rope(x: DeviceBuffer, y: DeviceBuffer, positions: DeviceBuffer, invFreq: DeviceBuffer, H: number, n: number, d: number, scale: number): void {
    this.run("rope", this.flat(H * n * (d / 2)), 256, packModelArgs("ZvRopeArgs", { x, y, positions, inv_freq: invFreq, H: { i64: H }, n: { i64: n }, d: { i64: d }, scale: { f64: scale } }));
  }
  /** dir 0: [n, H*d] -> [H, n, d]; 1: back. */
  heads(x: DeviceBuffer, y: DeviceBuffer, n: number, H: number, d: number, dir: 0 | 1): void {
    this.run("heads", this.flat(n * H * d), 256, packModelArgs("ZvHeadsArgs", { x, y, n: { i64: n }, H: { i64: H }, d: { i64: d }, dir: { i64: dir } }));
  }
  attn(q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer, o: DeviceBuffer, dims: { Hq: number; Hkv: number; nq: number; nk: number; d: number }, causal: boolean, scale: number): void {
    if (dims.d > MAX_ATTN_HEAD_DIM) throw new RangeError(`dense attention kernel: head dim ${dims.d} > ${MAX_ATTN_HEAD_DIM}`);
    const { Hq, Hkv, nq, nk, d } = dims;
    this.run("attn", [Math.ceil(nq / ATTN_WARPS), Hq, 1], 32 * ATTN_WARPS, packModelArgs("ZvAttnArgs", {
      q, k, v, o, Hq: { i64: Hq }, Hkv: { i64: Hkv }, nq: { i64: nq }, nk: { i64: nk }, d: { i64: d }, causal: { i64: causal ? 1 : 0 }, scale: { f64: scale },
    }));
  }
  init(y: DeviceBuffer, count: number, seed: number, std: number): void {
    this.run("init", this.flat(count), 256, packModelArgs("ZvInitArgs", { y, count: { i64: count }, seed: { i64: seed }, std: { f64: std } }));
  }
  unload(): void {
    this.module.unload();
  }
}

export { MODEL_ARG_LAYOUTS };
