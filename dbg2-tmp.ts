import { createWebGpu } from "./src/runtime/webgpu.ts";
import { makeContext, renderWgsl, STAGE_BINDINGS, STAGE_ENTRIES, type WgslStage } from "./src/backends/wgsl/stages.ts";
const dev = await createWebGpu();
const d = Number(process.argv[2] ?? 64);
const roll = process.argv[3] !== "unroll";
const ctx = makeContext(dev, { headDim: d, config: { rollLoops: roll } });
for (const st of ["probe", "select", "attention", "decode"] as WgslStage[]) {
  const code = renderWgsl(st, ctx);
  for (const entry of STAGE_ENTRIES[st]) {
    const t0 = performance.now();
    const p = await dev.pipeline(code, entry, STAGE_BINDINGS[st]);
    const bufs = STAGE_BINDINGS[st].map((k, i) => i === 0 ? dev.uniform(new Uint32Array([4, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]).buffer, "u") : dev.buffer(4096, "b"));
    const enc = dev.device.createCommandEncoder(); const pass = enc.beginComputePass(); pass.setPipeline(p); pass.setBindGroup(0, dev.bindGroup(STAGE_BINDINGS[st], bufs)); pass.dispatchWorkgroups(1, 1); pass.end();
    dev.device.queue.submit([enc.finish()]); await dev.device.queue.onSubmittedWorkDone();
    console.log(d, roll ? "rolled" : "unrolled", entry, (performance.now() - t0).toFixed(0), "ms");
  }
}
dev.destroy();
