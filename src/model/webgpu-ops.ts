// ModelOps on WebGPU (Dawn). The device lives in a worker thread (src/backends/wgsl/model-worker.ts) because
// ModelOps is synchronous and WebGPU read-back is not: ops are posted without waiting and run in order there;
// toF32, sparsePrefill (its kept count) and sync block this thread (Atomics.wait) until the worker answers.
// Kernels: a tiled f32 GEMM for linear and generated WGSL for the rest (templates/wgsl/model), dense and decode
// attention through the ZipVL WGSL stages, sparsePrefill through the WGSL probe/select/attention plans. Weights
// arrive as bf16/f16/f32 bytes and are converted to f32 here before upload (the H100's Dawn adapter has no
// shader-f16). Shapes are checked here, synchronously; device errors surface, with their code, at the next read.
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from "node:worker_threads";
import { paramSlots, slotValues } from "../backends/cstyle.ts";
import { planPrefill } from "../backends/plan.ts";
import { wgslVariants } from "../backends/wgsl/variant.ts";
import type { SelectOptions } from "../backends/wgsl/stages.ts";
import type { ModelReply, ModelRequest, SparseSpec, WorkerInit } from "../backends/wgsl/model-worker.ts";
import type { Tensor } from "../io/tensor.ts";
import { WebGpuError } from "../runtime/webgpu-errors.ts";
import { hostToF32 } from "./cpu-ops.ts";
import { LlavaError } from "./errors.ts";
import { concatKvOps } from "./kv-cache.ts";
import type { DKvCache, DTensor, ModelOps, OpsFactory, Policy, SparseLayerResult } from "./ops.ts";

interface GpuTensor extends DTensor {
  readonly id: number;
}
const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
const internal = (msg: string): never => {
  throw new Error(`internal: ${msg}`);
};
const dims2 = (x: DTensor, what: string): [number, number] =>
  x.shape.length === 2 ? (x.shape as [number, number]) : internal(`${what} needs a 2-D tensor, got [${x.shape.join(",")}]`);
const dims3 = (x: DTensor, what: string): [number, number, number] =>
  x.shape.length === 3 ? (x.shape as [number, number, number]) : internal(`${what} needs [H, n, d], got [${x.shape.join(",")}]`);
const sameShape = (a: DTensor, b: DTensor, what: string): void => {
  if (a.shape.join() !== b.shape.join()) internal(`${what} [${a.shape.join(",")}] with [${b.shape.join(",")}]`);
};
/** Head dims the WGSL attention kernels take (vec4 rows). */
const checkHeadDim = (d: number, what: string): void => {
  if (d % 4 !== 0) throw new LlavaError("ZV6103", [`${what} with head dim ${d} on the webgpu backend`, "the WGSL attention kernels need a head dim that is a multiple of 4"]);
};
const WAIT_MS = 600_000;

/** How the worker is started: through tsx when the sources are TypeScript (the CLI, vitest), plainly when bundled. */
function workerUrl(): URL {
  const entry = new URL("../backends/wgsl/model-worker.ts", import.meta.url);
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve("tsx/esm/api").replace(/index\.cjs$/, "index.mjs")).href;
  const code = `import { register } from ${JSON.stringify(tsx)}; register(); await import(${JSON.stringify(entry.href)});`;
  return new URL(`data:text/javascript,${encodeURIComponent(code)}`);
}

export class WebgpuOps implements ModelOps {
  readonly name = "webgpu" as const;
  readonly dtype = "f32" as const;
  readonly adapter: string;
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly control: Int32Array;
  private nextId = 1;
  private seq = 0;
  private disposed = false;

  private constructor(worker: Worker, port: MessagePort, control: Int32Array, adapter: string) {
    this.worker = worker;
    this.port = port;
    this.control = control;
    this.adapter = adapter;
  }

  static async create(dawnFlags: string[] = []): Promise<WebgpuOps> {
    const control = new Int32Array(new SharedArrayBuffer(4));
    const { port1, port2 } = new MessageChannel();
    const init: WorkerInit = { control: control.buffer as SharedArrayBuffer, replies: port2, dawnFlags };
    const worker = new Worker(workerUrl(), { workerData: init, transferList: [port2] });
    const first = await new Promise<{ t: string; adapter?: string; error?: { code: string; message: string } }>((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
      worker.once("exit", (c) => reject(new WebGpuError("ZV3103", `the WebGPU device thread exited (code ${c}) before it was ready`)));
    });
    worker.removeAllListeners("exit");
    worker.removeAllListeners("error");
    worker.unref(); // a model that never calls dispose() must not keep the process alive
    port1.unref();
    if (first.t !== "ready") {
      await worker.terminate();
      const e = first.error ?? { code: "ZV3103", message: "the WebGPU device thread failed to start" };
      throw new WebGpuError(e.code as "ZV3102", e.message.replace(/^ZV\d{4}: /, ""));
    }
    return new WebgpuOps(worker, port1, control, first.adapter ?? "");
  }

  // ---- plumbing -------------------------------------------------------------------------------------------------
  private post(m: ModelRequest): void {
    if (this.disposed) internal("webgpu ops used after dispose()");
    this.worker.postMessage(m);
  }
  private tensor(shape: readonly number[]): GpuTensor {
    return { shape: Object.freeze([...shape]), id: this.nextId++ };
  }
  private id(x: DTensor): number {
    const id = (x as GpuTensor).id;
    return typeof id === "number" ? id : internal("a tensor of another backend reached the webgpu ops");
  }
  /** Posts a request that answers, and blocks until the answer arrives. */
  private ask(make: (seq: number) => ModelRequest): ModelReply {
    const seq = ++this.seq;
    this.post(make(seq));
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const got = receiveMessageOnPort(this.port);
      if (got) {
        const r = got.message as ModelReply;
        if (r.seq !== seq) continue;
        if (r.error) {
          const code = /^ZV\d{4}$/.test(r.error.code) ? r.error.code : "ZV3103";
          if (code.startsWith("ZV31")) throw new WebGpuError(code as "ZV3103", r.error.message.replace(/^ZV\d{4}: /, ""));
          throw Object.assign(new Error(r.error.message), { code });
        }
        return r;
      }
      const now = Atomics.load(this.control, 0);
      if (now >= seq) Atomics.wait(this.control, 0, now, 5); // answered; the message is on its way
      else if (Atomics.wait(this.control, 0, now, Math.max(1, deadline - Date.now())) === "timed-out" && Date.now() >= deadline) {
        throw new WebGpuError("ZV3103", `the WebGPU device thread did not answer within ${WAIT_MS / 1000} s`);
      }
    }
  }

  // ---- ModelOps ---------------------------------------------------------------------------------------------------
  upload(w: Parameters<ModelOps["upload"]>[0]): DTensor {
    const data = hostToF32(w);
    const t = this.tensor(w.shape);
    this.post({ t: "upload", id: t.id, data });
    return t;
  }
  fromF32(shape: readonly number[], data: Float32Array): DTensor {
    if (numel(shape) !== data.length) internal(`[${shape.join(",")}] needs ${numel(shape)} values, got ${data.length}`);
    const t = this.tensor(shape);
    this.post({ t: "upload", id: t.id, data: Float32Array.from(data) });
    return t;
  }
  toF32(x: DTensor): Float32Array {
    const floats = numel(x.shape);
    const r = this.ask((seq) => ({ t: "read", seq, id: this.id(x), floats }));
    return r.data ?? new Float32Array(0);
  }
  free(x: DTensor): void {
    if (!this.disposed) this.post({ t: "free", id: this.id(x) });
  }

  linear(x: DTensor, w: DTensor, bias?: DTensor): DTensor {
    const [M, K] = dims2(x, "linear");
    const [N, K2] = dims2(w, "linear");
    if (K !== K2 || (bias && numel(bias.shape) !== N)) internal(`linear [${M},${K}] x [${N},${K2}]^T + [${bias?.shape.join(",") ?? ""}]`);
    const t = this.tensor([M, N]);
    this.post({ t: "linear", out: t.id, x: this.id(x), w: this.id(w), bias: bias ? this.id(bias) : null, M, N, K });
    return t;
  }
  embed(table: DTensor, ids: Int32Array): DTensor {
    const [V, H] = dims2(table, "embed");
    for (const id of ids) if (!(id >= 0 && id < V)) throw new LlavaError("ZV6109", [`token id ${id} is outside the vocabulary [0, ${V})`]);
    const t = this.tensor([ids.length, H]);
    this.post({ t: "embed", out: t.id, table: this.id(table), ids: Int32Array.from(ids), H });
    return t;
  }
  private norm(kind: "rms_norm" | "layer_norm", x: DTensor, w: DTensor, b: DTensor | null, eps: number): DTensor {
    const [R, C] = dims2(x, kind);
    if (numel(w.shape) !== C || (b && numel(b.shape) !== C)) internal(`${kind} of [${R},${C}] with weight [${w.shape.join(",")}]`);
    const t = this.tensor([R, C]);
    this.post({ t: "norm", kind, out: t.id, x: this.id(x), g: this.id(w), b: b ? this.id(b) : null, R, C, eps });
    return t;
  }
  rmsNorm(x: DTensor, w: DTensor, eps: number): DTensor {
    return this.norm("rms_norm", x, w, null, eps);
  }
  layerNorm(x: DTensor, w: DTensor, b: DTensor, eps: number): DTensor {
    return this.norm("layer_norm", x, w, b, eps);
  }
  private elementwise(entry: Extract<ModelRequest, { t: "eltwise" }>["entry"], shape: readonly number[], a: DTensor, b: DTensor | Float32Array | null = null, c: Float32Array | null = null, p: [number, number, number] = [0, 0, 0]): DTensor {
    const t = this.tensor(shape);
    this.post({ t: "eltwise", entry, out: t.id, a: this.id(a), b: b === null || b instanceof Float32Array ? b : this.id(b), c, total: numel(shape), p });
    return t;
  }
  add(a: DTensor, b: DTensor): DTensor {
    sameShape(a, b, "add");
    return this.elementwise("add", a.shape, a, b);
  }
  siluMul(gate: DTensor, up: DTensor): DTensor {
    sameShape(gate, up, "siluMul");
    return this.elementwise("silu_mul", gate.shape, gate, up);
  }
  act(x: DTensor, kind: "gelu" | "quick_gelu" | "gelu_tanh" | "silu"): DTensor {
    const entries = { gelu: "act_gelu", quick_gelu: "act_quick_gelu", gelu_tanh: "act_gelu_tanh", silu: "act_silu" } as const;
    const entry = entries[kind] ?? internal(`activation ${String(kind)}`);
    return this.elementwise(entry, x.shape, x);
  }
  addRows(x: DTensor, row: DTensor): DTensor {
    const [R, C] = dims2(x, "addRows");
    const len = numel(row.shape);
    if (len !== C && len !== R * C) internal(`addRows [${x.shape.join(",")}] + [${row.shape.join(",")}]`);
    return this.elementwise("add_rows", [R, C], x, row, null, [Math.max(1, len), 0, 0]);
  }
  sliceRows(x: DTensor, start: number, end: number): DTensor {
    const [R, C] = dims2(x, "sliceRows");
    if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && end <= R && start <= end)) internal(`rows [${start}, ${end}) of ${R}`);
    const t = this.tensor([end - start, C]);
    this.post({ t: "copy", out: t.id, floats: (end - start) * C, parts: [[this.id(x), start * C, 0, (end - start) * C]] });
    return t;
  }
  concatRows(xs: readonly DTensor[]): DTensor {
    if (xs.length === 0) internal("concatRows of nothing");
    const C = dims2(xs[0]!, "concatRows")[1];
    const parts: [number, number, number, number][] = [];
    let at = 0;
    for (const x of xs) {
      const [r, c] = dims2(x, "concatRows");
      if (c !== C) internal(`concatRows of [${x.shape.join(",")}] with ${C} columns`);
      parts.push([this.id(x), 0, at, r * C]);
      at += r * C;
    }
    const t = this.tensor([at / Math.max(1, C), C]);
    this.post({ t: "copy", out: t.id, floats: at, parts });
    return t;
  }
  toHeads(x: DTensor, heads: number): DTensor {
    const [n, HD] = dims2(x, "toHeads");
    if (!(heads > 0 && HD % heads === 0)) internal(`toHeads of [${n},${HD}] into ${heads} heads`);
    const d = HD / heads;
    return this.elementwise("to_heads", [heads, n, d], x, null, null, [heads, n, d]);
  }
  fromHeads(x: DTensor): DTensor {
    const [H, n, d] = dims3(x, "fromHeads");
    return this.elementwise("from_heads", [n, H * d], x, null, null, [H, n, d]);
  }
  rope(x: DTensor, positions: Int32Array, invFreq: Float32Array, scale: number): DTensor {
    const [, n, d] = dims3(x, "rope");
    const half = d / 2;
    if (d % 2 !== 0 || positions.length !== n || invFreq.length !== half) internal(`rope of [${x.shape.join(",")}] with ${positions.length} positions, ${invFreq.length} frequencies`);
    // HF: the angle in f32 (positions x inv_freq), cos/sin of it in f32, times attention_scaling.
    const cos = new Float32Array(n * half), sin = new Float32Array(n * half);
    for (let t = 0; t < n; t++) {
      for (let i = 0; i < half; i++) {
        const ang = Math.fround(positions[t]! * invFreq[i]!);
        cos[t * half + i] = Math.fround(Math.cos(ang)) * scale;
        sin[t * half + i] = Math.fround(Math.sin(ang)) * scale;
      }
    }
    return this.elementwise("rope", x.shape, x, cos, sin, [0, n, d]);
  }

  attention(q: DTensor, k: DTensor, v: DTensor, causal: boolean): DTensor {
    const [Hq, n, d] = dims3(q, "attention");
    const [Hkv, nk, dk] = dims3(k, "attention");
    sameShape(k, v, "attention k/v");
    if (nk !== n || dk !== d || Hq % Hkv !== 0) internal(`attention q [${q.shape.join(",")}] k [${k.shape.join(",")}]`);
    checkHeadDim(d, "attention");
    const t = this.tensor([Hq, n, d]);
    this.post({ t: "attention", out: t.id, q: this.id(q), k: this.id(k), v: this.id(v), Hq, Hkv, n, d, causal });
    return t;
  }
  decodeAttention(q: DTensor, kCache: DTensor, vCache: DTensor): DTensor {
    const [Hq, rows, d] = dims3(q, "decodeAttention");
    const [Hkv, len, dk] = dims3(kCache, "decodeAttention");
    sameShape(kCache, vCache, "decodeAttention caches");
    if (dk !== d || Hq % Hkv !== 0 || len < 1) internal(`decode q [${q.shape.join(",")}] cache [${kCache.shape.join(",")}]`);
    checkHeadDim(d, "decode attention");
    const t = this.tensor([Hq, rows, d]);
    this.post({ t: "decode", out: t.id, q: this.id(q), kc: this.id(kCache), vc: this.id(vCache), Hq, Hkv, rows, len, d });
    return t;
  }
  sparsePrefill(policy: Policy, layer: number, q: DTensor, k: DTensor, v: DTensor): SparseLayerResult {
    const p = policy.program;
    // Shapes are all the plan reads: the host never holds q/k/v.
    const shapeOnly = (x: DTensor): Tensor => ({ dtype: "f32", shape: x.shape, data: new Float64Array(0) });
    const plan = planPrefill(p, new Map([["q", shapeOnly(q)], ["k", shapeOnly(k)], ["v", shapeOnly(v)]]), { params: policy.params, layer }, "the webgpu model ops");
    if (plan.perKvHead) throw new LlavaError("ZV6107", [`program '${p.name}' selects per KV head; the model needs one set per layer`]);
    const { Hq, Hkv, n, d } = plan.b;
    checkHeadDim(d, "sparse prefill");
    const sl = plan.select;
    const spec: SparseSpec = {
      Hq, Hkv, n, d, probes: plan.probes, params: Float32Array.from(slotValues(paramSlots(p), plan.b.env)),
      probeScale: plan.probe.scale, attnScale: plan.attn.scale, variants: wgslVariants(p, d),
      select: {
        mode: sl.mode as SelectOptions["mode"], amount: sl.amount, normalizer: plan.probe.normalizer as SelectOptions["normalizer"],
        pool: { kind: sl.pool as SelectOptions["pool"]["kind"], size: sl.poolSize }, keepFirst: sl.keepFirst, keepLast: sl.keepLast,
      },
    };
    const o = this.tensor([Hq, n, d]);
    const ids = { o: o.id, kc: this.nextId++, vc: this.nextId++ };
    const r = this.ask((seq) => ({ t: "sparse", seq, q: this.id(q), k: this.id(k), v: this.id(v), ...ids, spec }));
    const count = r.count ?? internal("sparse prefill answered without a count");
    return { o, kCache: { shape: Object.freeze([Hkv, count, d]), id: ids.kc } as GpuTensor, vCache: { shape: Object.freeze([Hkv, count, d]), id: ids.vc } as GpuTensor, count };
  }

  // KV caches: regrown by concatenation here (the WGSL decode kernel takes a capacity stride; the worker does not
  // pass one yet).
  private readonly kv = concatKvOps(this, internal);
  createKvCache(heads: number, d: number, capacity: number): DKvCache {
    return this.kv.createKvCache(heads, d, capacity);
  }
  appendKv(cache: DKvCache, k: DTensor, v: DTensor): void {
    this.kv.appendKv(cache, k, v);
  }
  decodeAttentionKv(q: DTensor, cache: DKvCache): DTensor {
    return this.kv.decodeAttentionKv(q, cache);
  }
  readKv(cache: DKvCache): { k: DTensor; v: DTensor } {
    return this.kv.readKv(cache);
  }
  freeKv(cache: DKvCache): void {
    if (!this.disposed) this.kv.freeKv(cache);
  }

  sync(): void {
    this.ask((seq) => ({ t: "sync", seq }));
  }
  /** Waits until the device thread has destroyed the device (the process may exit right after). */
  dispose(): void {
    if (this.disposed) return;
    try {
      this.ask((seq) => ({ t: "dispose", seq }));
    } catch {
      // a device that is already lost has nothing left to release
    } finally {
      this.disposed = true;
    }
  }
}

/** The factory the CLI loads (src/model/session.ts): f32 compute only. `dawnFlags` e.g. disable_robustness. */
export const createWebgpuOps: OpsFactory = async (opts = {}) => {
  if (opts.dtype && opts.dtype !== "f32") throw new LlavaError("ZV6103", [`dtype ${opts.dtype} on the webgpu backend`, "the webgpu ops compute in f32"]);
  return WebgpuOps.create();
};
