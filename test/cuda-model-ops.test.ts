// The CUDA ModelOps (src/model/cuda-ops.ts) on the mock driver + mock cuBLASLt: model kernels are really compiled
// (nvcc) and launched, and the mock records each launch, so this checks launch geometry and argument-block sizes;
// the GEMM, uploads, conversions and copies run for real on host-backed "device" memory and are checked by value.
// Numerics of the kernels themselves are checked on the GPU (test/gpu/model-ops.test.ts, bench/model-gpu-check.ts).
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { nvccVersion } from "../src/backends/cuda/compile.ts";
import { MODEL_ARG_LAYOUTS } from "../src/backends/cuda/model-args.ts";

const MOCK = resolve("native/mock/libcuda_mock.so");
const MOCK_LT = resolve("native/mock/libcublaslt_mock.so");
const ready = existsSync(MOCK) && existsSync(MOCK_LT) && existsSync(resolve("native/build/Release/zipvl_native.node")) && nvccVersion() !== null;
if (!ready) console.warn("NOTICE: mock libcuda/libcublasLt, the native addon or nvcc missing; the cuda-ops mock test is skipped");
process.env.ZIPVL_LIBCUDA = MOCK;
process.env.ZIPVL_LIBCUBLASLT = MOCK_LT;

const codeOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return "no error";
};

describe.skipIf(!ready)("cuda ops on the mock driver", () => {
  it("values of the host-visible paths, launch geometry of the kernels, coded errors", async () => {
    const { openCuda } = await import("../src/backends/cuda/executor.ts");
    const { createCudaOpsWith } = await import("../src/model/cuda-ops.ts");
    const { compileFile } = await import("../src/driver.ts");
    const ctx = openCuda();
    const ops = createCudaOpsWith(ctx, "bf16", compileFile("dsl/variants/dense.ts").final);
    const dev = ctx.dev;
    const last = () => dev.mockLastLaunch()!;
    const argsOf = (s: keyof typeof MODEL_ARG_LAYOUTS) => 8 * MODEL_ARG_LAYOUTS[s].length;

    // bf16 round trip (values exactly representable) and an f32 weight converted on upload.
    const xs = Float32Array.from({ length: 12 }, (_, i) => (i - 5) * 0.25);
    const x = ops.fromF32([3, 4], xs);
    expect(Array.from(ops.toF32(x))).toEqual(Array.from(xs));
    const wf = Float32Array.from({ length: 20 }, (_, i) => ((i * 7) % 11) / 8 - 0.5);
    const w = ops.upload({ dtype: "f32", shape: [5, 4], bytes: new Uint8Array(wf.buffer) });
    const b = ops.fromF32([5], Float32Array.of(1, 2, 3, 4, 5));
    // linear through (mock) cuBLASLt: y = x w^T + b, checked by value.
    const y = ops.linear(x, w, b);
    expect(y.shape).toEqual([3, 5]);
    const got = ops.toF32(y);
    for (let i = 0; i < 3; i++)
      for (let j = 0; j < 5; j++) {
        let ref = j + 1;
        for (let c = 0; c < 4; c++) ref += xs[i * 4 + c]! * wf[j * 4 + c]!;
        expect(Math.abs(got[i * 5 + j]! - ref)).toBeLessThanOrEqual(0.02 * Math.abs(ref) + 1e-6);
      }
    // Row norms: one CTA of 256 threads per row.
    const g = ops.fromF32([4], Float32Array.of(1, 1, 1, 1));
    ops.free(ops.rmsNorm(x, g, 1e-6));
    expect(last()).toMatchObject({ grid: [3, 1, 1], block: [256, 1, 1], argsBytes: argsOf("ZvNormArgs") });
    ops.free(ops.layerNorm(x, g, g, 1e-5));
    expect(last()).toMatchObject({ grid: [3, 1, 1], argsBytes: argsOf("ZvNormArgs") });
    // Elementwise: grid-stride over the elements.
    ops.free(ops.act(x, "quick_gelu"));
    expect(last()).toMatchObject({ grid: [1, 1, 1], block: [256, 1, 1], argsBytes: argsOf("ZvEltArgs") });
    const big = ops.fromF32([40, 100], new Float32Array(4000));
    ops.free(ops.siluMul(big, big));
    expect(last().grid).toEqual([Math.ceil(4000 / 256), 1, 1]);
    // Slices and concatenation are copy launches (the mock runs no kernel: their values are checked on the GPU).
    const s = ops.sliceRows(x, 1, 3);
    expect(s.shape).toEqual([2, 4]);
    expect(last()).toMatchObject({ grid: [1, 1, 1], argsBytes: argsOf("ZvEltArgs") });
    const before = last().launches;
    ops.free(ops.concatRows([x, s, x]));
    expect(last().launches - before).toBe(3);
    // Heads, RoPE, attention geometry.
    const hx = ops.fromF32([5, 2 * 64], new Float32Array(640));
    const h = ops.toHeads(hx, 2);
    expect(h.shape).toEqual([2, 5, 64]);
    expect(last()).toMatchObject({ argsBytes: argsOf("ZvHeadsArgs") });
    const inv = Float32Array.from({ length: 32 }, (_, i) => 10000 ** (-i / 32));
    ops.free(ops.rope(h, Int32Array.from([0, 1, 2, 3, 4]), inv, 1));
    expect(last()).toMatchObject({ grid: [Math.ceil((2 * 5 * 32) / 256), 1, 1], argsBytes: argsOf("ZvRopeArgs") }); // one thread per rotated pair
    ops.free(ops.attention(h, h, h, false));
    expect(last()).toMatchObject({ grid: [2, 2, 1], block: [128, 1, 1], argsBytes: argsOf("ZvAttnArgs") });
    const q1 = ops.fromF32([2, 3, 64], new Float32Array(384));
    ops.free(ops.decodeAttention(q1, h, h)); // t = 3 rows: the dense kernel, no mask
    expect(last()).toMatchObject({ grid: [1, 2, 1], argsBytes: argsOf("ZvAttnArgs") });
    ops.free(ops.embed(w, Int32Array.of(4, 0, 2)));
    expect(last()).toMatchObject({ grid: [3, 1, 1], argsBytes: argsOf("ZvEmbedArgs") });

    // Coded errors: shapes, foreign tensors, use after free, bad token ids.
    expect(codeOf(() => ops.add(x, y))).toBe("ZV6201");
    expect(codeOf(() => ops.linear(x, y))).toBe("ZV6201");
    expect(codeOf(() => ops.sliceRows(x, 2, 4))).toBe("ZV6201");
    expect(codeOf(() => ops.add({ shape: [3, 4] }, x))).toBe("ZV6201");
    expect(codeOf(() => ops.embed(w, Int32Array.of(5)))).toBe("ZV6109");
    ops.free(s);
    ops.free(s); // idempotent
    expect(codeOf(() => ops.toF32(s))).toBe("ZV6201");
    const wide = ops.fromF32([1, 3, 512], new Float32Array(1536));
    expect(codeOf(() => ops.attention(wide, wide, wide, false))).toBe("ZV6202");
    for (const t of [x, w, b, y, g, big, hx, h, q1, wide]) ops.free(t);
    ops.dispose();
    ctx.dispose();
  });

  it("a device-resident prefill layer reads q/k/v in place and hands o and the caches over", async () => {
    const { openCuda } = await import("../src/backends/cuda/executor.ts");
    const { CudaPrefill } = await import("../src/backends/cuda/pipeline.ts");
    const { ARG_LAYOUTS } = await import("../src/backends/cuda/args.ts");
    const { compileFile } = await import("../src/driver.ts");
    const ctx = openCuda();
    const dev = ctx.dev;
    const p = compileFile("dsl/zipvl.ts").final;
    const [Hq, Hkv, n, d] = [8, 2, 300, 64];
    const q = dev.alloc(Hq * n * d * 2), k = dev.alloc(Hkv * n * d * 2), v = dev.alloc(Hkv * n * d * 2);
    const used = dev.memInfo().total - dev.memInfo().free;
    const run = CudaPrefill.onDevice(dev, p, { q, k, v }, { Hq, Hkv, n, d, dtype: "bf16" }, ctx.kernels(p, "bf16", d), {});
    const before = dev.mockLastLaunch()?.launches ?? 0;
    run.poison();
    run.enqueue();
    const last = dev.mockLastLaunch()!;
    expect(last.launches - before).toBe(3); // the same three kernels as the host path, nothing uploaded
    expect(last.grid).toEqual([Math.ceil(n / 128), Hq, 1]);
    expect(last.argsBytes).toBe(8 * ARG_LAYOUTS.ZvSparseArgs.length);
    const out = run.takeDevice();
    expect(Array.from(out.count)).toEqual([-1]); // the poisoned count: the mock runs no kernel, the read-back is real
    run.free();
    // o and the caches survive the pipeline's free(); the inputs were never the pipeline's to free.
    expect([out.o.bytes, out.kFull.bytes, out.vFull.bytes]).toEqual([Hq * n * d * 2, Hkv * n * d * 2, Hkv * n * d * 2]);
    for (const buf of [out.o, out.kFull, out.vFull, q, k, v]) expect(buf.released).toBe(false);
    out.o.write(Uint16Array.of(7));
    expect(out.o.read(new Uint16Array(1))[0]).toBe(7);
    for (const buf of [out.o, out.kFull, out.vFull]) buf.free();
    expect(dev.memInfo().total - dev.memInfo().free).toBe(used); // everything else the layer allocated is freed
    for (const buf of [q, k, v]) buf.free();
    ctx.dispose();
  });

  it("decode over capacity caches: no device allocation, host sync or synchronous copy in a step; regrowth doubles", async () => {
    const { openCuda } = await import("../src/backends/cuda/executor.ts");
    const { createCudaOpsWith } = await import("../src/model/cuda-ops.ts");
    const { compileFile } = await import("../src/driver.ts");
    const { DeviceBuffer, CudaStream } = await import("../src/runtime/native.ts");
    const { LlavaModel } = await import("../src/model/llava.ts");
    const { concatKvCache } = await import("../src/model/kv-cache.ts");
    const { decodeStep, prefill } = await import("../src/model/text.ts");
    const { TEXT } = await import("../src/model/weights.ts");
    const { sourceOf, TINY, tinyWeights } = await import("./support/tiny-llava.ts");
    const ctx = openCuda();
    const dev = ctx.dev;
    const ops = createCudaOpsWith(ctx, "bf16", compileFile("dsl/variants/dense.ts").final);
    // Head dim 64: the fused decode kernels' path (the tiny test model's 4 would take the dense fallback).
    const cfg = { ...TINY, text: { ...TINY.text, hiddenSize: 128, numHeads: 4, numKvHeads: 2, headDim: 64, intermediateSize: 64 } };
    const model = LlavaModel.load(ops, cfg, sourceOf(tinyWeights(cfg)), "<memory>");
    const ids = Int32Array.from([1, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    // Counters over every path to the driver that allocates or waits.
    const count = { alloc: 0, read: 0, sync: 0, syncWrite: 0 };
    const alloc = dev.alloc.bind(dev);
    dev.alloc = (b: number) => (count.alloc++, alloc(b));
    const devSync = dev.synchronize.bind(dev);
    dev.synchronize = () => (count.sync++, devSync());
    const { read, write } = DeviceBuffer.prototype;
    const { synchronize } = CudaStream.prototype;
    DeviceBuffer.prototype.read = function (this: InstanceType<typeof DeviceBuffer>, ...a: Parameters<typeof read>) {
      count.read++;
      return read.apply(this, a);
    } as typeof read;
    DeviceBuffer.prototype.write = function (this: InstanceType<typeof DeviceBuffer>, ...a: Parameters<typeof write>) {
      if (!a[2]) count.syncWrite++;
      return write.apply(this, a);
    };
    CudaStream.prototype.synchronize = function (this: InstanceType<typeof CudaStream>) {
      count.sync++;
      return synchronize.apply(this);
    };
    const launches = () => dev.mockLastLaunch()!.launches;
    try {
      const steps = (kv: "reserved" | "concat", reserve: number, n: number) => {
        const pre = prefill(ops, cfg.text, model.weights, model.embed(ids), undefined, { reserve, ...(kv === "concat" ? { kvCache: (k, v) => concatKvCache(ops, k, v) } : {}) });
        ops.free(pre.last);
        const per: { alloc: number; read: number; sync: number; syncWrite: number; launches: number; capacity: number }[] = [];
        for (let s = 0; s < n; s++) {
          const before = { ...count, launches: launches() };
          const e = ops.embed(model.weights.get(`${TEXT}embed_tokens.weight`), Int32Array.of(3 + s));
          const h = decodeStep(ops, cfg.text, model.weights, e, ids.length + s, pre.caches);
          ops.free(e);
          ops.free(h);
          per.push({
            alloc: count.alloc - before.alloc, read: count.read - before.read, sync: count.sync - before.sync, syncWrite: count.syncWrite - before.syncWrite,
            launches: launches() - before.launches, capacity: pre.caches[0]!.capacity,
          });
        }
        expect(pre.caches.map((c) => c.len)).toEqual([ids.length + n, ids.length + n]);
        for (const c of pre.caches) c.free();
        return per;
      };
      // Reserved for 4 new tokens: the first step may create the decode workspace and fill the pool; every later
      // step allocates nothing, reads nothing back and never waits for the device.
      const reserved = steps("reserved", 4, 4);
      expect(reserved.map((r) => r.capacity)).toEqual([14, 14, 14, 14]);
      for (const r of reserved.slice(1)) expect(r).toMatchObject({ alloc: 0, read: 0, sync: 0, syncWrite: 0 });
      // Per layer: 2 strided appends + split + combine; the rest of the layer is the same on both paths.
      const concat = steps("concat", 0, 4);
      for (const r of concat.slice(1)) expect(r).toMatchObject({ read: 0, sync: 0, syncWrite: 0 });
      // The concatenating cache copies each layer's k and v three times per step: 5 launches (fromHeads of the cache
      // and of the new row, 2 concat copies, toHeads) where the capacity cache has one strided copy.
      expect(concat[1]!.launches - reserved[1]!.launches).toBe(cfg.text.numLayers * 2 * (5 - 1));
      // No reserve: the first append regrows 10 -> 20 rows (doubling); the steps after it allocate nothing.
      const grown = steps("reserved", 0, 3);
      expect(grown.map((r) => r.capacity)).toEqual([20, 20, 20]);
      for (const r of grown.slice(1)) expect(r).toMatchObject({ alloc: 0, read: 0, sync: 0, syncWrite: 0 });
      // Coded errors: a cache of the wrong shape, use after freeKv.
      const c = ops.createKvCache(2, 64, 4);
      const x = ops.fromF32([3, 1, 64], new Float32Array(192));
      expect(codeOf(() => ops.appendKv(c, x, x))).toBe("ZV6201");
      ops.freeKv(c);
      const y = ops.fromF32([2, 1, 64], new Float32Array(128));
      expect(codeOf(() => ops.appendKv(c, y, y))).toBe("ZV6201");
      ops.free(x);
      ops.free(y);
    } finally {
      Object.assign(DeviceBuffer.prototype, { read, write });
      CudaStream.prototype.synchronize = synchronize;
      model.dispose();
      ops.dispose();
      ctx.dispose();
    }
  });
});
