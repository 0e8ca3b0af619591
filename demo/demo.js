// Replays the launch plan in layer.json (recorded from the Node runtime's planProbe/planSelect/planAttention by
// demo/build.mjs) with navigator.gpu: same WGSL, same uniform bytes, same bind-group layouts, same grids. Then draws
// the selected tokens and compares every output with the reference interpreter's.
// Result for tests: window.__zipvl = { count, selected, maxErr, ok, ... } (or { skip: true, error } without WebGPU).

const $ = (id) => document.getElementById(id);
const log = (s) => { $("log").textContent += s + "\n"; };
const fromB64 = (s) => {
  const bin = atob(s);
  const u8 = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
  return u8;
};
const f32 = (s) => new Float32Array(fromB64(s).buffer);

function finish(result) {
  window.__zipvl = result;
  const st = $("status");
  if (result.error) {
    st.textContent = (result.skip ? "WebGPU unavailable: " : "error: ") + result.error;
    st.className = "bad";
  } else {
    st.textContent = result.ok ? "matches the reference interpreter" : "DOES NOT match the reference interpreter";
    st.className = result.ok ? "ok" : "bad";
  }
}

async function main() {
  const layer = await (await fetch("layer.json")).json();
  const { n, S } = layer.dims;
  if (!("gpu" in navigator)) return finish({ skip: true, error: "navigator.gpu is missing" });
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) return finish({ skip: true, error: "navigator.gpu.requestAdapter() returned null" });
  const info = adapter.info ?? {};
  const adapterName = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" ");
  log(`adapter: ${adapterName || "(no info)"}`);

  // The attention stage binds 9 storage buffers (the WebGPU default limit is 8): ask for what the plan needs.
  const need = Math.max(...layer.launch.pipelines.map((p) => p.bindings.filter((b) => b !== "uniform").length));
  if (adapter.limits.maxStorageBuffersPerShaderStage < need) {
    return finish({ error: `the adapter allows ${adapter.limits.maxStorageBuffersPerShaderStage} storage buffers per stage, the kernels need ${need}` });
  }
  const device = await adapter.requestDevice({ requiredLimits: { maxStorageBuffersPerShaderStage: need } });
  device.pushErrorScope("validation");
  const t0 = performance.now();

  // Shader modules (the generated WGSL) and pipelines with explicit layouts, as src/runtime/webgpu.ts makes them.
  const modules = {};
  for (const s of layer.shaders) {
    const module = device.createShaderModule({ code: s.code, label: s.name });
    const errs = (await module.getCompilationInfo()).messages.filter((m) => m.type === "error");
    if (errs.length) return finish({ error: `${s.name}: ${errs.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join("; ")}` });
    modules[s.stage] = module;
  }
  const layouts = new Map();
  const layout = (bindings) => {
    const key = bindings.join();
    if (!layouts.has(key)) {
      layouts.set(key, device.createBindGroupLayout({
        entries: bindings.map((type, binding) => ({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type } })),
      }));
    }
    return layouts.get(key);
  };
  const pipelines = await Promise.all(layer.launch.pipelines.map((p) => device.createComputePipelineAsync({
    label: p.entryPoint,
    layout: device.createPipelineLayout({ bindGroupLayouts: [layout(p.bindings)] }),
    compute: { module: modules[p.stage], entryPoint: p.entryPoint },
  })));
  const t1 = performance.now();

  // Buffers: inputs and uniforms from the plan; outputs and scratch poisoned with 0xFF (NaN / -1), like the runtime.
  const buffers = layer.launch.buffers.map((b) => {
    if (b.kind === "uniform") {
      const buf = device.createBuffer({ size: b.size, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: b.label });
      device.queue.writeBuffer(buf, 0, fromB64(b.init));
      return buf;
    }
    const buf = device.createBuffer({ size: b.size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, label: b.label });
    const bytes = b.init ? fromB64(b.init) : new Uint8Array(b.size).fill(0xff);
    const padded = new Uint8Array(b.size);
    padded.set(bytes.subarray(0, b.size));
    device.queue.writeBuffer(buf, 0, padded);
    return buf;
  });
  const bindGroups = layer.launch.bindGroups.map((g) => device.createBindGroup({
    layout: layout(g.bindings),
    entries: g.buffers.map((id, binding) => ({ binding, resource: { buffer: buffers[id] } })),
  }));

  // One compute pass: probe_rowstats, probe_colmass, select_main, sparse_attention.
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  for (const d of layer.launch.dispatches) {
    pass.setPipeline(pipelines[d.pipeline]);
    pass.setBindGroup(0, bindGroups[d.bindGroup]);
    if (d.x > 0 && d.y > 0) pass.dispatchWorkgroups(d.x, d.y);
  }
  pass.end();
  const names = Object.keys(layer.outputs);
  const staging = names.map((name) => {
    const src = buffers[layer.outputs[name]];
    const s = device.createBuffer({ size: src.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    enc.copyBufferToBuffer(src, 0, s, 0, src.size);
    return s;
  });
  device.queue.submit([enc.finish()]);
  await Promise.all(staging.map((s) => s.mapAsync(GPUMapMode.READ)));
  const out = Object.fromEntries(names.map((name, i) => [name, staging[i].getMappedRange().slice(0)]));
  const t2 = performance.now();
  const gpuError = await device.popErrorScope();
  if (gpuError) return finish({ error: `WebGPU validation: ${gpuError.message}` });

  // Compare with the interpreter.
  const count = Array.from(new Int32Array(out.count, 0, S));
  const order = new Int32Array(out.order, 0, S * n);
  const selected = Array.from(order.subarray(0, count[0]));
  const maxDiff = (got, want) => {
    let m = 0;
    for (let i = 0; i < want.length; i++) {
      const e = Math.abs(got[i] - want[i]);
      m = Number.isNaN(e) ? Infinity : Math.max(m, e);
    }
    return m;
  };
  const exp = layer.expected;
  const errors = {
    o: maxDiff(new Float32Array(out.o), f32(exp.o)),
    scores: maxDiff(new Float32Array(out.scores), f32(exp.scores)),
    norm_scores: maxDiff(new Float32Array(out.norm_scores), f32(exp.norm_scores)),
  };
  const maxErr = Math.max(errors.o, errors.scores, errors.norm_scores);
  const sameCount = count.length === exp.count.length && count.every((c, i) => c === exp.count[i]);
  const sameSelected = selected.length === exp.selected.length && selected.every((x, i) => x === exp.selected[i]);
  const ok = sameCount && sameSelected && maxErr < 1e-3;

  // Draw the n tokens.
  const strip = $("strip");
  const cols = Math.min(n, 128);
  strip.style.gridTemplateColumns = `repeat(${cols}, 1fr)`;
  const sel = new Set(selected);
  const probes = new Set(layer.probes);
  for (let j = 0; j < n; j++) {
    const c = document.createElement("div");
    c.className = (sel.has(j) ? "sel" : "") + (probes.has(j) ? " probe" : "");
    c.title = `token ${j}${sel.has(j) ? " (selected)" : ""}${probes.has(j) ? " (probe row)" : ""}`;
    strip.appendChild(c);
  }
  const rows = [
    ["program", `${layer.program} (${layer.source}), tau ${layer.params.tau}, ${layer.dims.m} probe rows`],
    ["shape", `Hq ${layer.dims.Hq}, Hkv ${layer.dims.Hkv}, n ${n}, d ${layer.dims.d}, f32`],
    ["kept tokens", `${count.join(", ")} of ${n} (interpreter: ${exp.count.join(", ")})`],
    ["kept ratio", (count[0] / n).toFixed(4)],
    ["selected = interpreter's", String(sameSelected)],
    ["max |o - ref|", errors.o.toExponential(3)],
    ["max |scores - ref|", errors.scores.toExponential(3)],
    ["max |norm_scores - ref|", errors.norm_scores.toExponential(3)],
    ["pipelines / run", `${(t1 - t0).toFixed(0)} ms / ${(t2 - t1).toFixed(0)} ms`],
  ];
  $("stats").innerHTML = rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("");
  finish({ count: count[0], counts: count, selected, maxErr, errors, ok, ratio: count[0] / n, adapter: adapterName,
    ms: { pipelines: t1 - t0, run: t2 - t1 } });
}

main().catch((e) => finish({ error: String(e?.stack ?? e) }));
