// WebGPU runtime: adapter/device creation through the npm `webgpu` package (Dawn), content-keyed pipeline cache,
// error scopes turned into coded errors, buffer helpers and timestamp-query timing.
//
// THE LIFETIME TRAP (shared/ECOSYSTEM.md): the GPU object returned by `create()` must stay strongly reachable for
// as long as any device made from it lives, or V8 may collect it and Dawn aborts/segfaults/hangs. `holder` below
// keeps it (and the loaded module) for the whole process; nothing ever clears it.
import { createHash } from "node:crypto";
import type * as WebGpuModule from "webgpu";
import { NO_ADAPTER_HINT, WebGpuError } from "./webgpu-errors.ts";

export { WebGpuError } from "./webgpu-errors.ts";

/** GPUBufferUsage / GPUMapMode values from the WebGPU spec; Node has no such globals unless `globals` is installed. */
export const BufferUsage = {
  MAP_READ: 0x1,
  MAP_WRITE: 0x2,
  COPY_SRC: 0x4,
  COPY_DST: 0x8,
  UNIFORM: 0x40,
  STORAGE: 0x80,
  INDIRECT: 0x100,
  QUERY_RESOLVE: 0x200,
} as const;
const MAP_MODE_READ = 0x1;
const SHADER_STAGE_COMPUTE = 0x4;

type Dawn = typeof WebGpuModule;
/** Process-lifetime strong references (see the trap above). Never reset. */
const holder: { module: Dawn | null; gpu: GPU | null; devices: Set<ZvGpu> } = {
  module: null,
  gpu: null,
  devices: new Set(),
};

/** The limits the kernels' configs depend on; requested from the adapter so the device gets more than defaults. */
export interface ZvLimits {
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupSizeX: number;
  maxComputeWorkgroupsPerDimension: number;
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxStorageBuffersPerShaderStage: number;
}
const LIMIT_NAMES: readonly (keyof ZvLimits)[] = [
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxStorageBuffersPerShaderStage",
];

export interface ZvAdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** Software rasterizers (lavapipe/llvmpipe, SwiftShader): correctness only, never report their timings. */
  isSoftware: boolean;
  features: string[];
  subgroupMinSize: number | null;
  subgroupMaxSize: number | null;
}

export interface CreateWebGpuOptions {
  powerPreference?: GPUPowerPreference;
  /** Request 'shader-f16' when offered (default true). */
  f16?: boolean;
  /** Request 'timestamp-query' when offered (default true). */
  timestamps?: boolean;
  /** Dawn toggles passed to `create()`, e.g. ["enable-dawn-features=allow_unsafe_apis"]. */
  dawnFlags?: string[];
}

export type BindingKind = "uniform" | "storage" | "read-only-storage";

async function loadDawn(): Promise<Dawn> {
  if (holder.module) return holder.module;
  try {
    holder.module = await import("webgpu");
  } catch (cause) {
    throw new WebGpuError(
      "ZV3101",
      "the optional package `webgpu` (Dawn for Node, 0.6.2) is missing or failed to load; install it with " +
        "`npm install webgpu@0.6.2` (it is an optionalDependency of zipvl)",
      { cause },
    );
  }
  return holder.module;
}

/** Creates a device with the adapter's own limits (not the WebGPU defaults) and the optional features we use. */
export async function createWebGpu(options: CreateWebGpuOptions = {}): Promise<ZvGpu> {
  const dawn = await loadDawn();
  holder.gpu ??= dawn.create(options.dawnFlags ?? []);
  const adapterOptions: GPURequestAdapterOptions = {};
  if (options.powerPreference) adapterOptions.powerPreference = options.powerPreference;
  const adapter = await holder.gpu.requestAdapter(adapterOptions);
  if (!adapter) throw new WebGpuError("ZV3102", NO_ADAPTER_HINT);
  const wanted: GPUFeatureName[] = [];
  if (options.f16 !== false && adapter.features.has("shader-f16")) wanted.push("shader-f16");
  if (options.timestamps !== false && adapter.features.has("timestamp-query")) wanted.push("timestamp-query");
  const requiredLimits: Record<string, number> = {};
  for (const name of LIMIT_NAMES) requiredLimits[name] = adapter.limits[name];
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures: wanted, requiredLimits });
  } catch (cause) {
    throw new WebGpuError("ZV3103", `requestDevice failed: ${String(cause)}`, { cause });
  }
  const limits = Object.fromEntries(LIMIT_NAMES.map((n) => [n, device.limits[n]])) as unknown as ZvLimits;
  const gpu = new ZvGpu(adapter, device, describeAdapter(adapter), limits);
  holder.devices.add(gpu);
  return gpu;
}

function describeAdapter(adapter: GPUAdapter): ZvAdapterInfo {
  const i = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
  const text = `${i.vendor} ${i.architecture} ${i.device} ${i.description}`.toLowerCase();
  return {
    vendor: i.vendor,
    architecture: i.architecture,
    device: i.device,
    description: i.description,
    isSoftware: /llvmpipe|lavapipe|swiftshader|software/.test(text),
    features: [...adapter.features].map(String).sort(),
    subgroupMinSize: i.subgroupMinSize ?? null,
    subgroupMaxSize: i.subgroupMaxSize ?? null,
  };
}

export class ZvGpu {
  readonly adapter: GPUAdapter;
  readonly device: GPUDevice;
  readonly info: ZvAdapterInfo;
  readonly limits: ZvLimits;
  readonly hasF16: boolean;
  readonly hasTimestamps: boolean;
  private lostInfo: string | null = null;
  private readonly pipelines = new Map<string, Promise<GPUComputePipeline>>();
  private readonly layouts = new Map<string, GPUBindGroupLayout>();

  constructor(adapter: GPUAdapter, device: GPUDevice, info: ZvAdapterInfo, limits: ZvLimits) {
    this.adapter = adapter;
    this.device = device;
    this.info = info;
    this.limits = limits;
    this.hasF16 = device.features.has("shader-f16");
    this.hasTimestamps = device.features.has("timestamp-query");
    void device.lost.then((l) => {
      this.lostInfo = `${l.reason}: ${l.message}`;
    });
  }

  private alive(): void {
    if (this.lostInfo !== null) throw new WebGpuError("ZV3103", `device lost (${this.lostInfo})`);
  }

  /** Explicit bind group layouts (not 'auto') so that a binding an entry point ignores is still accepted. */
  layout(bindings: readonly BindingKind[]): GPUBindGroupLayout {
    const key = bindings.join(",");
    let l = this.layouts.get(key);
    if (!l) {
      l = this.device.createBindGroupLayout({
        entries: bindings.map((type, binding) => ({ binding, visibility: SHADER_STAGE_COMPUTE, buffer: { type } })),
      });
      this.layouts.set(key, l);
    }
    return l;
  }

  /** Compiles (once per sha256 of WGSL + entry point + layout) and returns a compute pipeline. */
  pipeline(code: string, entryPoint: string, bindings: readonly BindingKind[]): Promise<GPUComputePipeline> {
    this.alive();
    const storageCount = bindings.filter((b) => b !== "uniform").length;
    if (storageCount > this.limits.maxStorageBuffersPerShaderStage) {
      throw new WebGpuError(
        "ZV3104",
        `${entryPoint} needs ${storageCount} storage buffers; adapter allows ${this.limits.maxStorageBuffersPerShaderStage}`,
      );
    }
    const key = contentKey(code, entryPoint, bindings.join(","));
    let p = this.pipelines.get(key);
    if (!p) {
      p = this.compile(code, entryPoint, bindings);
      this.pipelines.set(key, p);
      p.catch(() => this.pipelines.delete(key)); // a failed compile must not poison the cache
    }
    return p;
  }

  private async compile(code: string, entryPoint: string, bindings: readonly BindingKind[]): Promise<GPUComputePipeline> {
    const { device } = this;
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ code, label: entryPoint });
    const info = await module.getCompilationInfo();
    const scopeError = await device.popErrorScope();
    const errors = info.messages.filter((m) => m.type === "error");
    if (errors.length > 0 || scopeError) {
      const lines = code.split("\n");
      const text = errors.map((m) => `  ${m.lineNum}:${m.linePos} ${m.message}\n    | ${lines[m.lineNum - 1] ?? ""}`);
      throw new WebGpuError("ZV3103", `WGSL for ${entryPoint} failed to compile:\n${text.join("\n") || scopeError?.message}`);
    }
    const layout = device.createPipelineLayout({ bindGroupLayouts: [this.layout(bindings)] });
    try {
      return await device.createComputePipelineAsync({ layout, compute: { module, entryPoint }, label: entryPoint });
    } catch (cause) {
      throw new WebGpuError("ZV3103", `pipeline ${entryPoint} rejected: ${String(cause)}`, { cause });
    }
  }

  /** Shader compile diagnostics only (for compile-check tests and tooling). */
  async compileMessages(code: string): Promise<GPUCompilationMessage[]> {
    this.device.pushErrorScope("validation"); // keep Dawn from printing the error as uncaptured
    const m = this.device.createShaderModule({ code });
    const messages = [...(await m.getCompilationInfo()).messages];
    await this.device.popErrorScope();
    return messages;
  }

  checkSize(bytes: number, what: string): void {
    if (bytes > this.limits.maxStorageBufferBindingSize || bytes > this.limits.maxBufferSize) {
      throw new WebGpuError(
        "ZV3104",
        `${what} needs ${bytes} bytes; adapter allows ${Math.min(this.limits.maxStorageBufferBindingSize, this.limits.maxBufferSize)} per binding`,
      );
    }
  }

  /** A storage buffer holding `data` (or `bytes` zero bytes). Sizes round up to 4 (WebGPU copy alignment). */
  buffer(data: ArrayBufferView | number, label: string, extraUsage = 0): GPUBuffer {
    this.alive();
    const bytes = typeof data === "number" ? data : data.byteLength;
    this.checkSize(bytes, label);
    const size = Math.max(4, Math.ceil(bytes / 4) * 4);
    const usage = BufferUsage.STORAGE | BufferUsage.COPY_SRC | BufferUsage.COPY_DST | extraUsage;
    const buf = this.device.createBuffer({ size, usage, label, mappedAtCreation: typeof data !== "number" });
    if (typeof data !== "number") {
      new Uint8Array(buf.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      buf.unmap();
    }
    return buf;
  }

  /** queue.writeBuffer with the byte count padded to 4 (f16 data of odd length). */
  write(buf: GPUBuffer, data: ArrayBufferView): void {
    const bytes = Math.min(buf.size, Math.ceil(data.byteLength / 4) * 4);
    const padded = new Uint8Array(bytes);
    padded.set(new Uint8Array(data.buffer, data.byteOffset, Math.min(data.byteLength, bytes)));
    this.device.queue.writeBuffer(buf, 0, padded);
  }

  uniform(bytes: ArrayBuffer, label: string): GPUBuffer {
    const buf = this.device.createBuffer({ size: bytes.byteLength, usage: BufferUsage.UNIFORM | BufferUsage.COPY_DST, label });
    this.device.queue.writeBuffer(buf, 0, bytes);
    return buf;
  }

  /** Fills a buffer with 0xFF bytes: NaN as f32 and f16, -1 as i32, so unwritten outputs cannot pass a test. */
  poison(buf: GPUBuffer): void {
    this.device.queue.writeBuffer(buf, 0, new Uint8Array(buf.size).fill(0xff));
  }

  bindGroup(bindings: readonly BindingKind[], buffers: readonly GPUBuffer[]): GPUBindGroup {
    return this.device.createBindGroup({
      layout: this.layout(bindings),
      entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
  }

  /** Copies the buffers to staging memory in one submission and returns byte copies (in the same order). */
  async read(buffers: readonly GPUBuffer[]): Promise<ArrayBuffer[]> {
    this.alive();
    const enc = this.device.createCommandEncoder();
    const staging = buffers.map((b) => {
      const s = this.device.createBuffer({ size: b.size, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
      enc.copyBufferToBuffer(b, 0, s, 0, b.size);
      return s;
    });
    this.device.queue.submit([enc.finish()]);
    await Promise.all(staging.map((s) => s.mapAsync(MAP_MODE_READ)));
    return staging.map((s) => {
      const copy = s.getMappedRange().slice(0);
      s.unmap();
      s.destroy();
      return copy;
    });
  }

  /** Runs `fn` inside validation + out-of-memory error scopes; a captured error becomes ZV3103. */
  async checked<T>(what: string, fn: () => T | Promise<T>): Promise<T> {
    this.alive();
    this.device.pushErrorScope("out-of-memory");
    this.device.pushErrorScope("validation");
    let result: T;
    try {
      result = await fn();
    } finally {
      const validation = await this.device.popErrorScope();
      const oom = await this.device.popErrorScope();
      const err = validation ?? oom;
      if (err) throw new WebGpuError("ZV3103", `${what}: ${err.message}`);
    }
    this.alive();
    return result;
  }

  /** A timestamp-query timer for `passes` compute passes; null when the device lacks 'timestamp-query'. */
  timer(passes: number): PassTimer | null {
    return this.hasTimestamps ? new PassTimer(this.device, passes) : null;
  }

  destroy(): void {
    holder.devices.delete(this);
    this.device.destroy(); // the GPU object itself stays in `holder` (see the lifetime trap)
  }
}

/** Begin/end timestamps around each compute pass; `ms()` resolves them into per-pass milliseconds. */
export class PassTimer {
  private readonly device: GPUDevice;
  private readonly set: GPUQuerySet;
  private readonly resolveBuf: GPUBuffer;
  readonly passes: number;
  constructor(device: GPUDevice, passes: number) {
    this.device = device;
    this.passes = passes;
    this.set = device.createQuerySet({ type: "timestamp", count: 2 * passes });
    this.resolveBuf = device.createBuffer({
      size: 16 * passes,
      usage: BufferUsage.QUERY_RESOLVE | BufferUsage.COPY_SRC,
    });
  }
  writes(pass: number): GPUComputePassTimestampWrites {
    return { querySet: this.set, beginningOfPassWriteIndex: 2 * pass, endOfPassWriteIndex: 2 * pass + 1 };
  }
  resolve(enc: GPUCommandEncoder): void {
    enc.resolveQuerySet(this.set, 0, 2 * this.passes, this.resolveBuf, 0);
  }
  /** Per-pass durations in ms of the last resolved submission. */
  async ms(): Promise<number[]> {
    const staging = this.device.createBuffer({ size: 16 * this.passes, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(this.resolveBuf, 0, staging, 0, 16 * this.passes);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(MAP_MODE_READ);
    const t = new BigInt64Array(staging.getMappedRange().slice(0));
    staging.unmap();
    staging.destroy();
    const out: number[] = [];
    for (let p = 0; p < this.passes; p++) out.push(Number((t[2 * p + 1] ?? 0n) - (t[2 * p] ?? 0n)) / 1e6);
    return out;
  }
  destroy(): void {
    this.set.destroy();
    this.resolveBuf.destroy();
  }
}

export function contentKey(...parts: string[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p).update("\0");
  return h.digest("hex");
}

/** Shared lazily-created device for callers that do not manage their own (tests, bench). */
let shared: Promise<ZvGpu> | null = null;
export function sharedWebGpu(options: CreateWebGpuOptions = {}): Promise<ZvGpu> {
  shared ??= createWebGpu(options);
  shared.catch(() => {
    shared = null;
  });
  return shared;
}
