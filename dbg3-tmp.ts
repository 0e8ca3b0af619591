import { createWebGpu } from "./src/runtime/webgpu.ts";
const dev = await createWebGpu();
const wg = Number(process.argv[2] ?? 64);
const code = `@group(0) @binding(0) var<uniform> u: vec4<u32>;
@group(0) @binding(1) var<storage, read_write> b: array<f32>;
var<workgroup> sh: array<f32, ${wg}>;
@compute @workgroup_size(${wg}) fn main(@builtin(local_invocation_index) t: u32) {
  sh[t] = b[t]; workgroupBarrier();
  var acc = 0.0; for (var i = 0u; i < u.x; i++) { acc += sh[(t + i) % ${wg}u] * 2.0; workgroupBarrier(); }
  b[t] = acc;
}`;
const t0 = performance.now();
const p = await dev.pipeline(code, "main", ["uniform", "storage"]);
const bufs = [dev.uniform(new Uint32Array([4, 1, 1, 0]).buffer, "u"), dev.buffer(4096, "b")];
const enc = dev.device.createCommandEncoder(); const pass = enc.beginComputePass(); pass.setPipeline(p); pass.setBindGroup(0, dev.bindGroup(["uniform", "storage"], bufs)); pass.dispatchWorkgroups(1, 1); pass.end();
dev.device.queue.submit([enc.finish()]); await dev.device.queue.onSubmittedWorkDone();
console.log(wg, "trivial pipeline+dispatch ms", (performance.now() - t0).toFixed(0));
dev.destroy();
