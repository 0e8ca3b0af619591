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
});
