// WGSL backend: renders the thin templates in templates/wgsl (device logic in templates/wgsl/lib/*.wgsl) and runs the
// four ZipVL stages on a WebGPU device. Host arrays are f32/i32; f16 storage only where the adapter has shader-f16
// and the caller asks for it. Semantics: docs/SEMANTICS.md; bindings and uniform layouts: templates/wgsl/CONTRACT.md.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { knobs } from "../../knobs.ts";
import Handlebars from "handlebars";
import type { BindingKind, ZvGpu, ZvLimits } from "../../runtime/webgpu.ts";
import { fromF16, packUniform, toF16 } from "../../runtime/webgpu-data.ts";

export interface WgslVariant {
  activation: 0 | 1 | 2; // probe scoring: 0 softmax, 1 sigmoid, 2 none
  probeCausal: boolean;
  attnCausal: boolean;
  /** WGSL f32 expressions over s, q_pos, k_pos, n (i32) and P[i]. */
  scoreMod: string;
  probeMask: string;
  attnMask: string;
  /** Optional keep rule (WGSL bool over pos, n, P[i]); default false. */
  keepIf?: string;
}
export const ZIPVL_WGSL_VARIANT: WgslVariant = {
  activation: 0,
  probeCausal: true,
  attnCausal: true,
  scoreMod: "s",
  probeMask: "k_pos <= q_pos",
  attnMask: "k_pos <= q_pos",
};

/** The schedule (never the algorithm): workgroup sizes and tiles. chooseConfig() fits it to the adapter limits. */
export interface WgslConfig {
  probeWorkgroup: number; // power of two
  probeQChunk: number;
  selectWorkgroup: number; // power of two
  selectItems: number;
  attnBQ: number;
  attnBK: number;
  attnTPR: number; // divides headDim
  decodeWorkgroup: number;
  /** Keep constant-trip loops rolled (software adapters: JIT time); GPUs unroll. */
  rollLoops: boolean;
}
export type WgslStage = "probe" | "select" | "attention" | "decode";
export interface WgslContext {
  kernelName: string;
  headDim: number;
  useF16: boolean;
  config: WgslConfig;
  variant: Required<WgslVariant>;
}

const U: BindingKind = "uniform";
const R: BindingKind = "read-only-storage";
const W: BindingKind = "storage";
/** Binding i of group 0 for each stage (0 = uniform args, 1 = P); must match templates/wgsl/lib/*.wgsl. */
export const STAGE_BINDINGS: Record<WgslStage, readonly BindingKind[]> = {
  probe: [U, R, R, R, R, W, W, W], // args P q k probes colmass visible rowstat
  select: [U, R, R, R, W, W, W], // args P colmass visible norm_scores count order
  attention: [U, R, R, R, R, W, W, W, R, R], // args P q k v o k_cache v_cache count order
  decode: [U, R, R, R, R, W, W, W, R], // args P q k_cache v_cache o part_o part_ml length
};
export const STAGE_ENTRIES: Record<WgslStage, readonly string[]> = {
  probe: ["probe_rowstats", "probe_colmass"],
  select: ["select_main"],
  attention: ["sparse_attention"],
  decode: ["decode_partial", "decode_combine"],
};

const pow2Floor = (x: number): number => 2 ** Math.floor(Math.log2(Math.max(1, x)));

export function chooseConfig(limits: ZvLimits, headDim: number, software = false): WgslConfig {
  const inv = Math.min(limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupSizeX);
  const smem = limits.maxComputeWorkgroupStorageSize;
  const probeWorkgroup = pow2Floor(Math.min(64, inv));
  let probeQChunk = 16;
  while (probeQChunk > 1 && 4 * (probeQChunk * headDim + 2 * probeWorkgroup) > smem) probeQChunk >>= 1;
  let selectWorkgroup = pow2Floor(Math.min(256, inv));
  while (selectWorkgroup > 16 && 4 * (16 * selectWorkgroup + 256 + 2 * selectWorkgroup + 1) > smem) selectWorkgroup >>= 1;
  const tpr = [8, 4, 2, 1].find((t) => (headDim / 4) % t === 0) ?? 1; // lanes own vec4 chunks of the row
  // Largest tiles first; the 32-row tile needs > 32 KiB at d = 128 (H100: 48 KiB), software adapters take 16 x 16.
  const tiles: [number, number][] = [[32, 16], [16, 32], [16, 16], [8, 16], [8, 8], [4, 8], [2, 8], [1, 8]];
  const fits = ([bq, bk]: [number, number]): boolean => bk % tpr === 0 && bq * tpr <= inv && attnSmem(bq, bk, headDim) <= smem;
  const [attnBQ, attnBK] = tiles.find(fits) ?? [1, tpr];
  const decodeWorkgroup = pow2Floor(Math.min(Math.max(64, headDim), inv));
  return { probeWorkgroup, probeQChunk, selectWorkgroup, selectItems: 4, attnBQ, attnBK, attnTPR: tpr, decodeWorkgroup, rollLoops: software };
}

/** Workgroup bytes of sparse_attention (lib/attention.wgsl: q/k rows padded by one vec4, scores by one float). */
const attnSmem = (bq: number, bk: number, d: number): number => 4 * ((bq + bk) * (d + 4) + bk * d + bq * (bk + 1) + bq + bk);

// ---- rendering ------------------------------------------------------------------------------------------------
// Bundled runners (bench/wgsl-check.ts) live outside the tree: ZIPVL_TEMPLATES points at templates/ (as for cuda).
const TEMPLATE_DIR = knobs.templates ? pathToFileURL(join(knobs.templates, "wgsl") + "/") : new URL("../../../templates/wgsl/", import.meta.url);
const LIB_NAMES = ["common", "probe", "select", "attention", "decode"] as const;
let renderers: { lib: Record<string, string>; stage: Record<WgslStage, HandlebarsTemplateDelegate> } | null = null;

function loadRenderers(): NonNullable<typeof renderers> {
  if (renderers) return renderers;
  const read = (p: string): string => readFileSync(new URL(p, TEMPLATE_DIR), "utf8");
  const hb = Handlebars.create();
  hb.registerPartial("prelude", read("prelude.wgsl.hbs"));
  hb.registerPartial("hooks", read("hooks.wgsl.hbs"));
  const lib = Object.fromEntries(LIB_NAMES.map((n) => [n, read(`lib/${n}.wgsl`)]));
  const compile = (s: WgslStage): HandlebarsTemplateDelegate => hb.compile(read(`${s}.wgsl.hbs`), { strict: true });
  renderers = {
    lib,
    stage: { probe: compile("probe"), select: compile("select"), attention: compile("attention"), decode: compile("decode") },
  };
  return renderers;
}

/** Renders one stage's WGSL module. Unused context is canonicalized away so equal code hits the pipeline cache. */
export function renderWgsl(stage: WgslStage, ctx: WgslContext): string {
  const r = loadRenderers();
  let c = ctx;
  if (stage === "select") {
    const keepIf = ctx.variant.keepIf;
    c = { ...ctx, headDim: 0, useF16: false, variant: { ...CANONICAL_HOOKS, keepIf } };
  } else if (stage === "decode") {
    c = { ...ctx, variant: { ...CANONICAL_HOOKS, keepIf: "false" } };
  }
  return r.stage[stage]({ ...c, lib: r.lib });
}
const CANONICAL_HOOKS: Required<WgslVariant> = { ...ZIPVL_WGSL_VARIANT, probeMask: "true", attnMask: "true", keepIf: "false" };

export function makeContext(dev: ZvGpu, o: { headDim: number; useF16?: boolean; variant?: WgslVariant; config?: Partial<WgslConfig>; kernelName?: string }): WgslContext {
  const variant: Required<WgslVariant> = { keepIf: "false", ...(o.variant ?? ZIPVL_WGSL_VARIANT) };
  const config = { ...chooseConfig(dev.limits, o.headDim, dev.info.isSoftware), ...o.config };
  if (o.headDim > 0 && (o.headDim % 4 !== 0 || (o.headDim / 4) % config.attnTPR !== 0 || config.attnBK % config.attnTPR !== 0)) {
    throw new RangeError(`headDim ${o.headDim} must be a multiple of 4, and attnTPR ${config.attnTPR} must divide headDim / 4 and attnBK ${config.attnBK}`);
  }
  return { kernelName: o.kernelName ?? "zipvl", headDim: o.headDim, useF16: o.useF16 === true && dev.hasF16, config, variant };
}

async function kernels(dev: ZvGpu, stage: WgslStage, ctx: WgslContext): Promise<GPUComputePipeline[]> {
  const code = renderWgsl(stage, ctx);
  return Promise.all(STAGE_ENTRIES[stage].map((e) => dev.pipeline(code, e, STAGE_BINDINGS[stage])));
}

// ---- stage plans: pipelines + bind groups + grid, recorded into a compute pass ------------------------------------
/** A stage ready to record: dispatches in order (each dispatch sees the previous one's writes). */
export interface StagePlan {
  record(pass: GPUComputePassEncoder): void;
}
type Dispatch = [GPUComputePipeline, GPUBindGroup, number, number];
const plan = (dispatches: Dispatch[]): StagePlan => ({
  record(pass) {
    for (const [p, bg, x, y] of dispatches) {
      pass.setPipeline(p);
      pass.setBindGroup(0, bg);
      if (x > 0 && y > 0) pass.dispatchWorkgroups(x, y);
    }
  },
});

export interface ProbeDims { Hq: number; Hkv: number; n: number; m: number; scale: number; perKvHead: boolean }
export interface ProbeBuffers { params: GPUBuffer; q: GPUBuffer; k: GPUBuffer; probes: GPUBuffer; colmass: GPUBuffer; visible: GPUBuffer; rowstat: GPUBuffer }
export async function planProbe(dev: ZvGpu, ctx: WgslContext, dim: ProbeDims, b: ProbeBuffers): Promise<StagePlan> {
  const [rowstats, colmass] = (await kernels(dev, "probe", ctx)) as [GPUComputePipeline, GPUComputePipeline];
  const sets = dim.perKvHead ? dim.Hkv : 1;
  const u = dev.uniform(packUniform([["u32", dim.n], ["u32", dim.m], ["u32", dim.Hq], ["u32", dim.Hkv], ["u32", dim.perKvHead ? 1 : 0], ["f32", dim.scale]]), "probe.args");
  const bg = dev.bindGroup(STAGE_BINDINGS.probe, [u, b.params, b.q, b.k, b.probes, b.colmass, b.visible, b.rowstat]);
  const d: Dispatch[] = [];
  if (ctx.variant.activation === 0) d.push([rowstats, bg, dim.m, dim.Hq]);
  d.push([colmass, bg, Math.ceil(dim.n / ctx.config.probeWorkgroup), sets]);
  return plan(d);
}

export type SelectMode = "tau" | "ratio" | "budget" | "all";
export type Normalizer = "visible" | "n_minus_j" | "none";
export interface SelectOptions {
  mode: SelectMode;
  amount: number;
  normalizer: Normalizer;
  pool: { kind: "none" | "max" | "avg"; size: number };
  keepFirst: number;
  keepLast: number;
}
/** Fixed counts are computed here in f64, exactly as docs/SEMANTICS.md (f32 on the device could round differently). */
export function fixedCount(mode: SelectMode, amount: number, n: number): number {
  if (mode === "ratio") return Math.max(1, Math.ceil(amount * n - 1e-9)); // 0.3 * 10 = 3.0000000000000004 -> 3
  if (mode === "budget") return Math.min(n, Math.max(1, Math.floor(amount)));
  return n; // "all"; unused for "tau"
}
export interface SelectBuffers { params: GPUBuffer; colmass: GPUBuffer; visible: GPUBuffer; normScores: GPUBuffer; count: GPUBuffer; order: GPUBuffer }
export async function planSelect(dev: ZvGpu, ctx: WgslContext, n: number, S: number, o: SelectOptions, b: SelectBuffers): Promise<StagePlan> {
  const [main] = (await kernels(dev, "select", ctx)) as [GPUComputePipeline];
  const modes: Record<SelectMode, number> = { tau: 0, ratio: 1, budget: 2, all: 3 };
  const norms: Record<Normalizer, number> = { visible: 0, n_minus_j: 1, none: 2 };
  const pools = { none: 0, max: 1, avg: 2 } as const;
  const u = dev.uniform(
    packUniform([
      ["u32", n], ["u32", S], ["u32", modes[o.mode]], ["u32", norms[o.normalizer]],
      ["u32", pools[o.pool.kind]], ["u32", Math.max(1, o.pool.size)], ["u32", o.keepFirst], ["u32", o.keepLast],
      ["f32", o.amount], ["u32", fixedCount(o.mode, o.amount, n)],
    ]),
    "select.args",
  );
  return plan([[main, dev.bindGroup(STAGE_BINDINGS.select, [u, b.params, b.colmass, b.visible, b.normScores, b.count, b.order]), S, 1]]);
}

export interface AttnDims { Hq: number; Hkv: number; n: number; scale: number; perKvHead: boolean }
export interface AttnBuffers { params: GPUBuffer; q: GPUBuffer; k: GPUBuffer; v: GPUBuffer; o: GPUBuffer; kCache: GPUBuffer; vCache: GPUBuffer; count: GPUBuffer; order: GPUBuffer }
export async function planAttention(dev: ZvGpu, ctx: WgslContext, dim: AttnDims, b: AttnBuffers): Promise<StagePlan> {
  const [main] = (await kernels(dev, "attention", ctx)) as [GPUComputePipeline];
  const u = dev.uniform(packUniform([["u32", dim.n], ["u32", dim.Hq], ["u32", dim.Hkv], ["u32", dim.perKvHead ? 1 : 0], ["f32", dim.scale]]), "attention.args");
  const bg = dev.bindGroup(STAGE_BINDINGS.attention, [u, b.params, b.q, b.k, b.v, b.o, b.kCache, b.vCache, b.count, b.order]);
  return plan([[main, bg, Math.ceil(dim.n / ctx.config.attnBQ), dim.Hq]]);
}

export interface DecodeDims { Hq: number; Hkv: number; capacity: number; scale: number; splits: number }
export interface DecodeBuffers { params: GPUBuffer; q: GPUBuffer; kCache: GPUBuffer; vCache: GPUBuffer; o: GPUBuffer; partO: GPUBuffer; partMl: GPUBuffer; length: GPUBuffer }
/** Splits so that splits x Hq workgroups cover the GPU (~256) without splits shorter than one tile of keys. */
export const decodeSplits = (capacity: number, Hq: number, wg: number): number =>
  Math.max(1, Math.min(Math.ceil(capacity / wg), Math.ceil(256 / Hq), 64));
export async function planDecode(dev: ZvGpu, ctx: WgslContext, dim: DecodeDims, b: DecodeBuffers): Promise<StagePlan> {
  const [partial, combine] = (await kernels(dev, "decode", ctx)) as [GPUComputePipeline, GPUComputePipeline];
  const u = dev.uniform(packUniform([["u32", dim.capacity], ["u32", dim.Hq], ["u32", dim.Hkv], ["u32", dim.splits], ["f32", dim.scale]]), "decode.args");
  const bg = dev.bindGroup(STAGE_BINDINGS.decode, [u, b.params, b.q, b.kCache, b.vCache, b.o, b.partO, b.partMl, b.length]);
  return plan([[partial, bg, dim.splits, dim.Hq], [combine, bg, dim.Hq, 1]]);
}

// ---- host-array API ----------------------------------------------------------------------------------------------
/** Uploads/downloads tensor data in the context's storage type (f16 bits or f32). */
export const elemUpload = (dev: ZvGpu, ctx: WgslContext, a: Float32Array, label: string): GPUBuffer =>
  dev.buffer(ctx.useF16 ? toF16(a) : a, label);
export const elemOutput = (dev: ZvGpu, ctx: WgslContext, length: number, label: string): GPUBuffer => {
  const b = dev.buffer(length * (ctx.useF16 ? 2 : 4), label);
  dev.poison(b);
  return b;
};
export const elemDecode = (ctx: WgslContext, bytes: ArrayBuffer, length: number): Float32Array =>
  ctx.useF16 ? fromF16(new Uint16Array(bytes), length) : new Float32Array(bytes, 0, length);
const output = (dev: ZvGpu, bytes: number, label: string): GPUBuffer => {
  const b = dev.buffer(bytes, label);
  dev.poison(b);
  return b;
};
const paramsBuffer = (dev: ZvGpu, params?: Float32Array): GPUBuffer => dev.buffer(params && params.length > 0 ? params : new Float32Array(1), "P");

export function expectLength(name: string, a: { length: number }, want: number): void {
  if (a.length !== want) throw new RangeError(`${name} has ${a.length} elements, expected ${want}`);
}

/** Records the plans into one compute pass, submits, reads `outs` back and destroys `owned`. */
async function runAndRead(dev: ZvGpu, what: string, plans: StagePlan[], outs: GPUBuffer[], owned: GPUBuffer[]): Promise<ArrayBuffer[]> {
  try {
    return await dev.checked(what, async () => {
      const enc = dev.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      for (const p of plans) p.record(pass);
      pass.end();
      dev.device.queue.submit([enc.finish()]);
      return dev.read(outs);
    });
  } finally {
    for (const b of owned) b.destroy();
  }
}

/** Options every stage call takes: user parameters P, variant hooks, f16 storage request, config overrides. */
export interface WgslStageOptions { params?: Float32Array; variant?: WgslVariant; useF16?: boolean; config?: Partial<WgslConfig> }
export interface ProbeScoresArgs extends WgslStageOptions {
  q: Float32Array; k: Float32Array; probes: Int32Array;
  Hq: number; Hkv: number; n: number; d: number; m?: number; scale: number; perKvHead: boolean;
}
export async function probeScores(dev: ZvGpu, a: ProbeScoresArgs): Promise<{ colmass: Float32Array; visible: Float32Array }> {
  const m = a.m ?? a.probes.length;
  expectLength("q", a.q, a.Hq * a.n * a.d);
  expectLength("k", a.k, a.Hkv * a.n * a.d);
  expectLength("probes", a.probes, m);
  // probe_colmass binary-searches the probes and rowstat is indexed by row: ascending unique positions only.
  a.probes.forEach((p, i) => {
    if (p < 0 || p >= a.n || (i > 0 && p <= a.probes[i - 1]!)) throw new RangeError(`probes must be ascending, unique, in [0, n): probes[${i}] = ${p}`);
  });
  const ctx = makeContext(dev, { headDim: a.d, ...opt(a) });
  const S = a.perKvHead ? a.Hkv : 1;
  const b: ProbeBuffers = {
    params: paramsBuffer(dev, a.params), q: elemUpload(dev, ctx, a.q, "q"), k: elemUpload(dev, ctx, a.k, "k"),
    probes: dev.buffer(a.probes, "probes"), colmass: output(dev, 4 * S * a.n, "colmass"),
    visible: output(dev, 4 * a.n, "visible"), rowstat: output(dev, 8 * a.Hq * m, "rowstat"),
  };
  const p = await planProbe(dev, ctx, { ...a, m }, b);
  const [cm, vis] = await runAndRead(dev, "probeScores", [p], [b.colmass, b.visible], Object.values(b));
  return { colmass: new Float32Array(cm!, 0, S * a.n), visible: new Float32Array(vis!, 0, a.n) };
}

export interface SelectArgs extends SelectOptions {
  colmass: Float32Array; visible: Float32Array; n: number; S: number;
  params?: Float32Array; variant?: WgslVariant; config?: Partial<WgslConfig>;
}
export async function select(dev: ZvGpu, a: SelectArgs): Promise<{ normScores: Float32Array; count: Int32Array; order: Int32Array }> {
  expectLength("colmass", a.colmass, a.S * a.n);
  expectLength("visible", a.visible, a.n);
  const ctx = makeContext(dev, { headDim: 0, ...opt(a) });
  const b: SelectBuffers = {
    params: paramsBuffer(dev, a.params), colmass: dev.buffer(a.colmass, "colmass"), visible: dev.buffer(a.visible, "visible"),
    normScores: output(dev, 4 * a.S * a.n, "norm_scores"), count: output(dev, 4 * a.S, "count"), order: output(dev, 4 * a.S * a.n, "order"),
  };
  const p = await planSelect(dev, ctx, a.n, a.S, a, b);
  const [ns, cnt, ord] = await runAndRead(dev, "select", [p], [b.normScores, b.count, b.order], Object.values(b));
  return { normScores: new Float32Array(ns!, 0, a.S * a.n), count: new Int32Array(cnt!, 0, a.S), order: new Int32Array(ord!, 0, a.S * a.n) };
}

export interface SparseAttentionArgs extends WgslStageOptions {
  q: Float32Array; k: Float32Array; v: Float32Array; order: Int32Array; count: Int32Array;
  Hq: number; Hkv: number; n: number; d: number; scale: number; perKvHead: boolean;
}
export async function sparseAttention(dev: ZvGpu, a: SparseAttentionArgs): Promise<{ o: Float32Array; kCache: Float32Array; vCache: Float32Array }> {
  const S = a.perKvHead ? a.Hkv : 1;
  expectLength("q", a.q, a.Hq * a.n * a.d);
  expectLength("k", a.k, a.Hkv * a.n * a.d);
  expectLength("v", a.v, a.Hkv * a.n * a.d);
  expectLength("order", a.order, S * a.n);
  expectLength("count", a.count, S);
  const ctx = makeContext(dev, { headDim: a.d, ...opt(a) });
  const kvLen = a.Hkv * a.n * a.d;
  const b: AttnBuffers = {
    params: paramsBuffer(dev, a.params), q: elemUpload(dev, ctx, a.q, "q"), k: elemUpload(dev, ctx, a.k, "k"),
    v: elemUpload(dev, ctx, a.v, "v"), o: elemOutput(dev, ctx, a.Hq * a.n * a.d, "o"),
    kCache: elemOutput(dev, ctx, kvLen, "k_cache"), vCache: elemOutput(dev, ctx, kvLen, "v_cache"),
    count: dev.buffer(a.count, "count"), order: dev.buffer(a.order, "order"),
  };
  const p = await planAttention(dev, ctx, a, b);
  const [o, kc, vc] = await runAndRead(dev, "sparseAttention", [p], [b.o, b.kCache, b.vCache], Object.values(b));
  return { o: elemDecode(ctx, o!, a.Hq * a.n * a.d), kCache: elemDecode(ctx, kc!, kvLen), vCache: elemDecode(ctx, vc!, kvLen) };
}

export interface DecodeStageArgs extends WgslStageOptions {
  q: Float32Array; kCache: Float32Array; vCache: Float32Array; length: number;
  Hq: number; Hkv: number; d: number; scale: number; splits?: number;
}
export async function decode(dev: ZvGpu, a: DecodeStageArgs): Promise<{ o: Float32Array }> {
  expectLength("q", a.q, a.Hq * a.d);
  const capacity = a.kCache.length / (a.Hkv * a.d);
  if (!Number.isInteger(capacity) || a.vCache.length !== a.kCache.length) throw new RangeError("kCache/vCache must be [Hkv, capacity, d]");
  const ctx = makeContext(dev, { headDim: a.d, ...opt(a) });
  const splits = a.splits ?? decodeSplits(capacity, a.Hq, ctx.config.decodeWorkgroup);
  const b: DecodeBuffers = {
    params: paramsBuffer(dev, a.params), q: elemUpload(dev, ctx, a.q, "q"), kCache: elemUpload(dev, ctx, a.kCache, "k_cache"),
    vCache: elemUpload(dev, ctx, a.vCache, "v_cache"), o: elemOutput(dev, ctx, a.Hq * a.d, "o"),
    partO: output(dev, 4 * a.Hq * splits * a.d, "part_o"), partMl: output(dev, 8 * a.Hq * splits, "part_ml"),
    length: dev.buffer(new Int32Array([a.length]), "length"),
  };
  const p = await planDecode(dev, ctx, { Hq: a.Hq, Hkv: a.Hkv, capacity, scale: a.scale, splits }, b);
  const [o] = await runAndRead(dev, "decode", [p], [b.o], Object.values(b));
  return { o: elemDecode(ctx, o!, a.Hq * a.d) };
}

/** Copies the optional context fields that are present (exactOptionalPropertyTypes forbids passing undefined). */
export function opt(a: { variant?: WgslVariant; useF16?: boolean; config?: Partial<WgslConfig> }): { variant?: WgslVariant; useF16?: boolean; config?: Partial<WgslConfig> } {
  const o: { variant?: WgslVariant; useF16?: boolean; config?: Partial<WgslConfig> } = {};
  if (a.variant) o.variant = a.variant;
  if (a.useF16 !== undefined) o.useF16 = a.useF16;
  if (a.config) o.config = a.config;
  return o;
}

