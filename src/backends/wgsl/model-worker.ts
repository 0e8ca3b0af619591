// The WebGPU model ops' device thread. ModelOps is synchronous (the model reads logits and kept counts as host
// values), but WebGPU read-back is asynchronous: so the Dawn device lives in this worker, the main thread
// (src/model/webgpu-ops.ts) posts ops without waiting, and blocks (Atomics.wait) only where it needs a host value;
// this thread answers those on a MessagePort and wakes it. Ops run in message order; dispatches collect in one open
// command encoder that is submitted at a read, every FLUSH_EVERY dispatches, or at sync. The first error after a
// read is kept and reported at the next read (the main thread throws it there, with its code).
import { parentPort, workerData, type MessagePort } from "node:worker_threads";
import { createWebGpu, WebGpuError, type BindingKind, type ZvGpu } from "../../runtime/webgpu.ts";
import { packUniform, type UniformField } from "../../runtime/webgpu-data.ts";
import { decodeSplits, makeContext, planAttention, planDecode, planProbe, planSelect, type SelectOptions, type StagePlan, type WgslVariant, ZIPVL_WGSL_VARIANT } from "./stages.ts";
import { ModelKernels, type EltwiseEntry, type Recorder } from "./model-kernels.ts";

export interface SparseSpec {
  Hq: number; Hkv: number; n: number; d: number; probes: Int32Array; params: Float32Array;
  probeScale: number; attnScale: number; variants: { probe: WgslVariant; select: WgslVariant; attention: WgslVariant }; select: SelectOptions;
}
/** Requests, in order. `out` ids are chosen by the main thread; every op writes a new tensor. */
export type ModelRequest =
  | { t: "upload"; id: number; data: Float32Array }
  | { t: "free"; id: number }
  | { t: "linear"; out: number; x: number; w: number; bias: number | null; M: number; N: number; K: number }
  | { t: "norm"; kind: "rms_norm" | "layer_norm"; out: number; x: number; g: number; b: number | null; R: number; C: number; eps: number }
  | { t: "eltwise"; entry: EltwiseEntry; out: number; a: number; b: number | Float32Array | null; c: Float32Array | null; total: number; p: [number, number, number] }
  | { t: "embed"; out: number; table: number; ids: Int32Array; H: number }
  | { t: "copy"; out: number; floats: number; parts: [src: number, srcAt: number, dstAt: number, count: number][] }
  | { t: "attention"; out: number; q: number; k: number; v: number; Hq: number; Hkv: number; n: number; d: number; causal: boolean }
  | { t: "decode"; out: number; q: number; kc: number; vc: number; Hq: number; Hkv: number; rows: number; len: number; d: number }
  | { t: "sparse"; seq: number; q: number; k: number; v: number; o: number; kc: number; vc: number; spec: SparseSpec }
  | { t: "read"; seq: number; id: number; floats: number }
  | { t: "sync"; seq: number }
  | { t: "dispose"; seq: number };
export type ModelReply = { seq: number; data?: Float32Array; count?: number; error?: { code: string; message: string } };
export interface WorkerInit { control: SharedArrayBuffer; replies: MessagePort; dawnFlags: string[] }

const FLUSH_EVERY = 256;
const MAP_READ = 0x1, COPY_DST = 0x8;

class DeviceThread implements Recorder {
  readonly dev: ZvGpu;
  private readonly k: ModelKernels;
  private readonly tensors = new Map<number, GPUBuffer>();
  private enc: GPUCommandEncoder | null = null;
  private dispatches = 0;
  private readonly retired: GPUBuffer[] = []; // destroyed after the next submission (the open encoder may use them)
  private error: { code: string; message: string } | null = null;
  private readonly dummy: GPUBuffer;
  private readonly orders = new Map<number, [GPUBuffer, GPUBuffer]>();

  constructor(dev: ZvGpu) {
    this.dev = dev;
    this.k = new ModelKernels(dev);
    this.dummy = dev.buffer(16, "dummy");
  }

  private encoder(): GPUCommandEncoder {
    if (!this.enc) {
      this.dev.device.pushErrorScope("out-of-memory");
      this.dev.device.pushErrorScope("validation");
      this.enc = this.dev.device.createCommandEncoder();
    }
    return this.enc;
  }
  uniform(fields: readonly UniformField[]): GPUBuffer {
    const b = this.dev.uniform(packUniform(fields), "model.args");
    this.retired.push(b);
    return b;
  }
  dispatch(pipeline: GPUComputePipeline, bindings: readonly BindingKind[], buffers: readonly GPUBuffer[], x: number, y: number): void {
    const pass = this.encoder().beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, this.dev.bindGroup(bindings, buffers));
    if (x > 0 && y > 0) pass.dispatchWorkgroups(x, y);
    pass.end();
    this.dispatches++;
  }
  private plan(p: StagePlan): void {
    const pass = this.encoder().beginComputePass();
    p.record(pass);
    pass.end();
    this.dispatches++;
  }

  async flush(): Promise<void> {
    if (!this.enc) return;
    const enc = this.enc;
    this.enc = null;
    this.dispatches = 0;
    this.dev.device.queue.submit([enc.finish()]);
    const validation = await this.dev.device.popErrorScope();
    const oom = await this.dev.device.popErrorScope();
    for (const b of this.retired.splice(0)) b.destroy();
    const err = validation ?? oom;
    if (err) throw new WebGpuError("ZV3103", `model ops: ${err.message}`);
  }

  private get(id: number): GPUBuffer {
    const b = this.tensors.get(id);
    if (!b) throw new WebGpuError("ZV3103", `model ops: tensor #${id} is not on the device (freed, or its op failed)`);
    return b;
  }
  private create(id: number, floats: number, label: string): GPUBuffer {
    const b = this.dev.buffer(4 * floats, label);
    this.tensors.set(id, b);
    return b;
  }
  private scratch(bytes: number | ArrayBufferView, label: string): GPUBuffer {
    const b = this.dev.buffer(bytes, label);
    this.retired.push(b);
    return b;
  }
  private copy(src: GPUBuffer, srcFloat: number, dst: GPUBuffer, dstFloat: number, floats: number): void {
    if (floats > 0) this.encoder().copyBufferToBuffer(src, 4 * srcFloat, dst, 4 * dstFloat, 4 * floats);
  }
  /** The identity selection (order = 0..n-1, count = n): dense attention through the token-sparse kernel. */
  private identity(n: number): [GPUBuffer, GPUBuffer] {
    let o = this.orders.get(n);
    if (!o) {
      o = [this.dev.buffer(Int32Array.from({ length: n }, (_, i) => i), "order"), this.dev.buffer(Int32Array.of(n), "count")];
      this.orders.set(n, o);
    }
    return o;
  }

  async handle(m: Exclude<ModelRequest, { t: "dispose" }>, reply: (r: ModelReply) => void): Promise<void> {
    if (m.t === "read" || m.t === "sync" || m.t === "sparse") {
      try {
        if (this.error) throw this.error;
        reply({ seq: m.seq, ...(await this.answer(m)) });
      } catch (e) {
        const err = this.error ?? describe(e);
        this.error = null;
        reply({ seq: m.seq, error: err });
      }
      return;
    }
    if (m.t === "free") {
      const b = this.tensors.get(m.id);
      this.tensors.delete(m.id);
      if (b) this.retired.push(b);
      return;
    }
    if (this.error) return; // skipped until the error is reported
    try {
      await this.op(m);
      if (this.dispatches >= FLUSH_EVERY) await this.flush();
    } catch (e) {
      this.error = describe(e);
    }
  }

  private async answer(m: Extract<ModelRequest, { t: "read" | "sync" | "sparse" }>): Promise<Omit<ModelReply, "seq">> {
    if (m.t === "sync") {
      await this.flush();
      await this.dev.device.queue.onSubmittedWorkDone();
      return {};
    }
    if (m.t === "read") {
      const src = this.get(m.id);
      await this.flush();
      const [bytes] = await this.dev.read([src]);
      return { data: new Float32Array(bytes!, 0, m.floats) };
    }
    return { count: await this.sparse(m) };
  }

  private async op(m: Exclude<ModelRequest, { seq: number } | { t: "free" }>): Promise<void> {
    const k = this.k;
    switch (m.t) {
      case "upload":
        this.tensors.set(m.id, this.dev.buffer(m.data, "tensor"));
        return;
      case "linear":
        return k.linear(this, this.get(m.x), this.get(m.w), m.bias === null ? this.dummy : this.get(m.bias), this.create(m.out, m.M * m.N, "linear"), m.M, m.N, m.K, m.bias !== null);
      case "norm":
        return k.norm(this, m.kind, this.get(m.x), this.get(m.g), m.b === null ? this.dummy : this.get(m.b), this.create(m.out, m.R * m.C, m.kind), m.R, m.C, m.eps);
      case "eltwise": {
        const side = (x: number | Float32Array | null): GPUBuffer => (x === null ? this.dummy : typeof x === "number" ? this.get(x) : this.scratch(x, "table"));
        return k.eltwise(this, m.entry, [this.get(m.a), side(m.b), side(m.c), this.create(m.out, m.total, m.entry)], m.total, m.p);
      }
      case "embed":
        return k.embed(this, this.get(m.table), this.scratch(m.ids, "ids"), this.create(m.out, m.ids.length * m.H, "embed"), m.ids.length, m.H);
      case "copy": {
        const out = this.create(m.out, m.floats, "copy");
        for (const [src, at, to, count] of m.parts) this.copy(this.get(src), at, out, to, count);
        return;
      }
      case "attention": {
        const { Hq, Hkv, n, d } = m;
        const variant: WgslVariant = m.causal ? ZIPVL_WGSL_VARIANT : { ...ZIPVL_WGSL_VARIANT, attnCausal: false, attnMask: "true" };
        const ctx = makeContext(this.dev, { headDim: d, variant });
        const [order, count] = this.identity(n);
        const b = {
          params: this.dummy, q: this.get(m.q), k: this.get(m.k), v: this.get(m.v), o: this.create(m.out, Hq * n * d, "attention"),
          kCache: this.scratch(4 * Hkv * n * d, "k_scratch"), vCache: this.scratch(4 * Hkv * n * d, "v_scratch"), count, order,
        };
        this.plan(await planAttention(this.dev, ctx, { Hq, Hkv, n, scale: 1 / Math.sqrt(d), perKvHead: false }, b));
        return;
      }
      case "decode": {
        const { Hq, Hkv, rows, len, d } = m;
        const ctx = makeContext(this.dev, { headDim: d });
        const splits = decodeSplits(len, Hq, ctx.config.decodeWorkgroup);
        const out = this.create(m.out, Hq * rows * d, "decode");
        const q = this.get(m.q);
        const one = rows === 1;
        const qi = one ? q : this.scratch(4 * Hq * d, "decode.q");
        const oi = one ? out : this.scratch(4 * Hq * d, "decode.o");
        const b = {
          params: this.dummy, q: qi, kCache: this.get(m.kc), vCache: this.get(m.vc), o: oi,
          partO: this.scratch(4 * Hq * splits * d, "part_o"), partMl: this.scratch(8 * Hq * splits, "part_ml"), length: this.scratch(Int32Array.of(len), "length"),
        };
        const p = await planDecode(this.dev, ctx, { Hq, Hkv, capacity: len, scale: 1 / Math.sqrt(d), splits }, b);
        // q [Hq, rows, d]: one decode per row; rows > 1 gather row i of every head into [Hq, d] and scatter back.
        for (let i = 0; i < rows; i++) {
          if (!one) for (let h = 0; h < Hq; h++) this.copy(q, (h * rows + i) * d, qi, h * d, d);
          this.plan(p);
          if (!one) for (let h = 0; h < Hq; h++) this.copy(oi, h * d, out, (h * rows + i) * d, d);
        }
        return;
      }
    }
  }

  /** One policy prefill layer: probe, select, token-sparse attention on the GPU; the kept count is read once. */
  private async sparse(m: Extract<ModelRequest, { t: "sparse" }>): Promise<number> {
    const s = m.spec;
    const { Hq, Hkv, n, d } = s;
    const mProbes = s.probes.length;
    const ctxP = makeContext(this.dev, { headDim: d, variant: s.variants.probe });
    const ctxS = makeContext(this.dev, { headDim: 0, variant: s.variants.select });
    const ctxA = makeContext(this.dev, { headDim: d, variant: s.variants.attention });
    const B = {
      params: this.scratch(s.params.length > 0 ? s.params : new Float32Array(1), "P"), q: this.get(m.q), k: this.get(m.k), v: this.get(m.v),
      probes: this.scratch(s.probes, "probes"), colmass: this.scratch(4 * n, "colmass"), visible: this.scratch(4 * n, "visible"),
      rowstat: this.scratch(8 * Hq * mProbes, "rowstat"), normScores: this.scratch(4 * n, "norm_scores"), count: this.scratch(4, "count"),
      order: this.scratch(4 * n, "order"), o: this.create(m.o, Hq * n * d, "sparse.o"),
      kCache: this.scratch(4 * Hkv * n * d, "k_full"), vCache: this.scratch(4 * Hkv * n * d, "v_full"),
    };
    this.plan(await planProbe(this.dev, ctxP, { Hq, Hkv, n, m: mProbes, scale: s.probeScale, perKvHead: false }, B));
    this.plan(await planSelect(this.dev, ctxS, n, 1, s.select, B));
    this.plan(await planAttention(this.dev, ctxA, { Hq, Hkv, n, scale: s.attnScale, perKvHead: false }, B));
    // Read the count before the scratch buffers retire (flush destroys them after the submission).
    const countCopy = this.dev.buffer(4, "count.copy");
    this.copy(B.count, 0, countCopy, 0, 1);
    const kFull = B.kCache, vFull = B.vCache;
    this.retired.splice(this.retired.indexOf(kFull), 1);
    this.retired.splice(this.retired.indexOf(vFull), 1);
    await this.flush();
    const [bytes] = await this.dev.read([countCopy]);
    countCopy.destroy();
    const count = new Int32Array(bytes!)[0]!;
    if (!(count >= 1 && count <= n)) {
      kFull.destroy();
      vFull.destroy();
      throw new WebGpuError("ZV3103", `model ops: the device selected ${count} tokens of ${n}`);
    }
    // Compact caches [Hkv, count, d]: the first count rows of each KV head are the kept tokens (ascending).
    const kc = this.create(m.kc, Hkv * count * d, "k_cache"), vc = this.create(m.vc, Hkv * count * d, "v_cache");
    for (let kv = 0; kv < Hkv; kv++) {
      this.copy(kFull, kv * n * d, kc, kv * count * d, count * d);
      this.copy(vFull, kv * n * d, vc, kv * count * d, count * d);
    }
    this.retired.push(kFull, vFull);
    return count;
  }
}

function describe(e: unknown): { code: string; message: string } {
  const code = (e as { code?: unknown }).code;
  const message = e instanceof Error ? e.message : String(e);
  return { code: typeof code === "string" && /^ZV\d{4}$/.test(code) ? code : "ZV3103", message };
}

async function main(): Promise<void> {
  const init = workerData as WorkerInit;
  const control = new Int32Array(init.control);
  const port = init.replies;
  let dev: ZvGpu;
  try {
    dev = await createWebGpu({ dawnFlags: init.dawnFlags, f16: false });
  } catch (e) {
    parentPort!.postMessage({ t: "init-error", error: describe(e) });
    return;
  }
  const thread = new DeviceThread(dev);
  parentPort!.postMessage({ t: "ready", adapter: dev.info.description, software: dev.info.isSoftware });
  const reply = (r: ModelReply): void => {
    port.postMessage(r);
    Atomics.store(control, 0, r.seq);
    Atomics.notify(control, 0);
  };
  let queue = Promise.resolve();
  parentPort!.on("message", (m: ModelRequest) => {
    if (m.t === "dispose") {
      // Answered only once the device is destroyed: the main thread may exit right after, and a Dawn call cut off by
      // worker termination aborts the process (napi_throw while terminating). Then the thread ends on its own.
      queue = queue.then(async () => {
        await thread.flush().catch(() => {});
        dev.destroy();
        reply({ seq: m.seq });
        parentPort!.close();
      });
      return;
    }
    queue = queue.then(() => thread.handle(m, reply));
  });
}

await main();
