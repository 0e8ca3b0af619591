// The cuBLASLt GEMM path (native/src/cublaslt.cc + Blas in src/runtime/native.ts) on the mock driver and the mock
// cuBLASLt (native/mock/libcublaslt_mock.c), which runs the column-major matmul the addon describes on host-backed
// "device" memory: a wrong transpose, leading dimension or bias epilogue gives wrong numbers against the JS reference.
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { randomTensor } from "../src/io/random.ts";
import { tensorFromBytes, tensorToBytes } from "../src/io/safetensors.ts";
import { Blas, CudaDevice, toRuntimeError, type GemmDType, type RuntimeError } from "../src/runtime/native.ts";

const MOCK = resolve("native/mock/libcuda_mock.so");
const MOCK_LT = resolve("native/mock/libcublaslt_mock.so");
const ADDON = resolve("native/build/Release/zipvl_native.node");
const ready = existsSync(MOCK) && existsSync(MOCK_LT) && existsSync(ADDON);
if (!ready) console.warn("NOTICE: mock libcuda/libcublasLt or the native addon missing (node native/build.mjs); the GEMM test is skipped");

const ESZ: Record<GemmDType, number> = { f32: 4, f16: 2, bf16: 2 };
// One output rounding of the dtype plus f32 accumulation of K products.
const TOL: Record<GemmDType, number> = { f32: 1e-5, f16: 2e-3, bf16: 1.6e-2 };

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return (e as RuntimeError).code;
  }
  return "no error";
}

describe("cuBLASLt error mapping", () => {
  const raw = (message: string, props: Record<string, unknown>) => Object.assign(new Error(message), props);
  it("library, status and algorithm errors get their codes", () => {
    expect(toRuntimeError(raw("x", { cuName: "LIBCUBLASLT_NOT_FOUND" }), "blasInit").code).toBe("ZV3009");
    const st = toRuntimeError(raw("CUBLAS_STATUS_NOT_SUPPORTED (15) in cublasLtMatmul", { cuName: "CUBLAS_STATUS_NOT_SUPPORTED", cuResult: 15 }), "blasGemm");
    expect(st.code).toBe("ZV3010");
    expect(st.message).toContain("CUBLAS_STATUS_NOT_SUPPORTED (15) in cublasLtMatmul");
    expect(toRuntimeError(raw("x", { cuName: "CUBLASLT_NO_ALGO" }), "blasGemm").code).toBe("ZV3011");
  });
});

describe.skipIf(!ready)("cuBLASLt GEMM on the mock", () => {
  it("y = x w^T (+ bias) matches the JS reference for f32, f16 and bf16 over random shapes", () => {
    const dev = CudaDevice.open({ libcuda: MOCK });
    expect(codeOf(() => Blas.open(dev, { lib: "/nonexistent/libcublasLt.so.13" }))).toBe("ZV3009");
    const blas = Blas.open(dev, { lib: MOCK_LT });
    expect(blas.version).toBe(130000);
    const stream = dev.createStream();
    const before = blas.plans();
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 33 }), fc.integer({ min: 1, max: 40 }), fc.constantFrom<GemmDType>("f32", "f16", "bf16"), fc.boolean(), fc.nat(), (M, N, K, dtype, withBias, seed) => {
        const x = randomTensor(dtype, [M, K], seed);
        const w = randomTensor(dtype, [N, K], seed + 1);
        const b = randomTensor(dtype, [N], seed + 2);
        const xb = dev.upload(tensorToBytes(x));
        const wb = dev.upload(tensorToBytes(w));
        const bb = dev.upload(tensorToBytes(b));
        const yb = dev.alloc(M * N * ESZ[dtype]);
        blas.gemm(dtype, M, N, K, xb, wb, yb, { bias: withBias ? bb : null, stream });
        stream.synchronize();
        const y = tensorFromBytes(dtype, [M, N], yb.read(new Uint8Array(M * N * ESZ[dtype])));
        for (const buf of [xb, wb, bb, yb]) buf.free();
        for (let i = 0; i < M; i++)
          for (let j = 0; j < N; j++) {
            let ref = withBias ? b.data[j]! : 0;
            for (let k = 0; k < K; k++) ref += x.data[i * K + k]! * w.data[j * K + k]!;
            const got = y.data[i * N + j]!;
            expect(Math.abs(got - ref), `${dtype} M${M} N${N} K${K} (${i},${j})`).toBeLessThanOrEqual(TOL[dtype] * (Math.abs(ref) + Math.sqrt(K)));
          }
      }),
      { numRuns: 60 },
    );
    // Plans are cached: the same shape again adds none.
    const n = blas.plans();
    expect(n).toBeGreaterThan(before);
    const xb = dev.alloc(4 * 3 * 5);
    const wb = dev.alloc(4 * 7 * 5);
    const yb = dev.alloc(4 * 3 * 7);
    blas.gemm("f32", 3, 7, 5, xb, wb, yb);
    const m = blas.plans();
    blas.gemm("f32", 3, 7, 5, xb, wb, yb);
    expect(blas.plans()).toBe(m);
    // Misuse is caught on the host before the library sees it.
    expect(codeOf(() => blas.gemm("f32", 3, 8, 5, xb, wb, yb))).toBe("ZV3008");
    expect(codeOf(() => blas.gemm("bf16", 0, 7, 5, xb, wb, yb))).toBe("ZV3008");
    // A failing library call is ZV3010 with the status named.
    process.env.ZIPVL_MOCK_LT_FAIL = "1";
    try {
      blas.gemm("f32", 3, 7, 5, xb, wb, yb);
      expect.unreachable();
    } catch (e) {
      expect((e as RuntimeError).code).toBe("ZV3010");
      expect((e as Error).message).toContain("CUBLAS_STATUS_EXECUTION_FAILED (13) in cublasLtMatmul");
    } finally {
      delete process.env.ZIPVL_MOCK_LT_FAIL;
    }
    for (const buf of [xb, wb, yb]) buf.free();
    stream.destroy();
  });
});
