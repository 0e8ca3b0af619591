// `zipvl serve`'s cuda path on the mock driver and mock cuBLASLt (native/mock): the engine on the cuda ModelOps
// with the paged pool in device memory, the append kernel fed from the model's device tensors and the paged decode
// reading q / writing o in the model's head-major layout, concurrent requests batched, both page layouts, every
// page back in the pool. The mock records launches instead of running kernels, so answers are not checked here
// (bench/serve-gpu.ts does that on a GPU); dense prefill, since a ZipVL layer reads its kept count back.
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { nvccVersion } from "../src/backends/cuda/compile.ts";

const MOCK = resolve("native/mock/libcuda_mock.so");
const MOCK_LT = resolve("native/mock/libcublaslt_mock.so");
const ready = existsSync(MOCK) && existsSync(MOCK_LT) && existsSync(resolve("native/build/Release/zipvl_native.node")) && nvccVersion() !== null;
if (!ready) console.warn("NOTICE: mock libcuda/cuBLASLt, native addon or nvcc missing; the cuda serving host-path test is skipped");
process.env.ZIPVL_LIBCUDA = MOCK;
process.env.ZIPVL_LIBCUBLASLT = MOCK_LT;

describe.skipIf(!ready)("zipvl serve on the cuda ops (mock driver)", () => {
  it("batched decode over device pages, per-layer and per-head layouts", async () => {
    const { openCuda } = await import("../src/backends/cuda/executor.ts");
    const { parseProgram } = await import("../src/ir/parse.ts");
    const { verifyProgram } = await import("../src/ir/verify.ts");
    const { createCudaOpsWith } = await import("../src/model/cuda-ops.ts");
    const { writeRandomLlavaNext } = await import("../src/model/hf/index.ts");
    const { startServer } = await import("../src/serve/server.ts");
    const ctx = openCuda();
    const dir = mkdtempSync(join(tmpdir(), "zipvl-serve-mock-"));
    writeRandomLlavaNext(dir, { seed: 5, textHidden: 256, textHeads: 4, textKvHeads: 2, textIntermediate: 512 });
    // gemv off: the mock runs no kernels, so the fused one-row linear layers would leave the logits at whatever their
    // buffer held; the mock cuBLASLt computes the GEMMs (still over inputs no kernel wrote, so an EOS can come early).
    const ops = createCudaOpsWith(ctx, "bf16", verifyProgram(parseProgram(readFileSync("test/golden/dense.final.ir", "utf8"))), { gemv: false });
    for (const layout of ["per-layer", "per-head"] as const) {
      const srv = await startServer({ model: dir, ops, maxBatch: 4, maxQueue: 8, timeoutMs: 60_000, memoryBytes: 2 ** 28, layout, calibrationLengths: [64, 128, 256] }, { port: 0 });
      const ask = (t: string) => fetch(`http://127.0.0.1:${srv.port}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ messages: [{ role: "user", content: t }], max_tokens: 5 }) });
      const prompts = ["hello", "a longer prompt here", "x"];
      type Answer = { usage: { completion_tokens: number }; choices: { message: { content: string }; finish_reason: string }[] };
      const res = await Promise.all(prompts.map(ask));
      const together: string[] = [];
      for (const r of res) {
        expect(r.status).toBe(200);
        const j = (await r.json()) as Answer;
        // The mock runs no model kernel, so the logits are whatever the GEMM inputs' pooled buffers held, which
        // depends on how the requests were batched: an answer may meet EOS early, and then says so.
        const n = j.usage.completion_tokens;
        expect(n).toBeGreaterThanOrEqual(1);
        expect(n).toBeLessThanOrEqual(5);
        expect(["stop", "length"]).toContain(j.choices[0]!.finish_reason);
        if (n < 5) expect(j.choices[0]!.finish_reason).toBe("stop");
        together.push(j.choices[0]!.message.content);
      }
      expect(srv.scheduler.stats.maxBatch).toBeGreaterThan(1);
      // Greedy ids sampled on the device (the mock runs the argmax kernel; its attention kernels run nothing, so the
      // answers themselves are not comparable), steps served from the step kept in flight.
      expect(together).toHaveLength(prompts.length);
      expect(srv.engine.ahead!.stats.served).toBeGreaterThan(0);
      expect(srv.engine.pool.usedPages).toBe(0);
      await srv.close();
    }
    ops.dispose();
  });
});
