// Builds the static ZipVL WebGPU demo into demo/dist/: index.html, demo.js and layer.json.
//
// layer.json carries the generated WGSL of one ZipVL layer (dsl/zipvl.ts at head dim 64, exactly what
// `zipvl compile --target wgsl` writes), random q/k/v, and a *recorded launch plan*: the Node runtime's own
// planProbe/planSelect/planAttention (src/backends/wgsl/stages.ts) are run here against a recording device, so the
// uniform bytes (packUniform), the bind-group layouts (STAGE_BINDINGS), the entry points and the grids the page
// replays are the runtime's, byte for byte, not a re-implementation. (stages.ts itself cannot be bundled for the
// browser: it reads the templates with node:fs and renders them with handlebars.) The expected outputs come from the
// float64 reference interpreter.
//
// Run: npx tsx demo/build.mjs [--out DIR] [--n 256] [--seed 1] [--q-scale 3] [--roll]      (imports the TypeScript sources, hence tsx)
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { compileFile } from "../src/driver.ts";
import { renderProgramWgsl } from "../src/backends/wgsl/target.ts";
import { planAttention, planProbe, planSelect, renderWgsl, STAGE_BINDINGS } from "../src/backends/wgsl/stages.ts";
import { planPrefill } from "../src/backends/plan.ts";
import { paramSlots, slotValues } from "../src/backends/cstyle.ts";
import { randomTensor } from "../src/io/random.ts";
import { interpret } from "../src/interp/run.ts";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "..");

const b64 = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("base64");

/** A stand-in for ZvGpu that records what the planners ask for instead of creating GPU objects. */
function recordingDevice(codeToStage) {
  const buffers = [];
  const bindGroups = [];
  const pipelines = [];
  const dispatches = [];
  const dev = {
    buffers, bindGroups, pipelines, dispatches,
    /** Not a ZvGpu method: the demo declares its storage buffers itself (role = input name, output name or scratch). */
    storage(label, bytes, init) {
      const buf = { id: buffers.length, kind: "storage", label, size: Math.max(4, Math.ceil(bytes / 4) * 4), init: init ?? null };
      buffers.push(buf);
      return buf;
    },
    uniform(bytes, label) {
      const buf = { id: buffers.length, kind: "uniform", label, size: bytes.byteLength, init: Buffer.from(bytes).toString("base64") };
      buffers.push(buf);
      return buf;
    },
    bindGroup(bindings, bufs) {
      const bg = { id: bindGroups.length, bindings: [...bindings], buffers: bufs.map((b) => b.id) };
      bindGroups.push(bg);
      return bg;
    },
    async pipeline(code, entryPoint, bindings) {
      const stage = codeToStage.get(code);
      if (!stage) throw new Error(`internal: the planner rendered WGSL that differs from the generated ${entryPoint} module`);
      let p = pipelines.find((x) => x.stage === stage && x.entryPoint === entryPoint);
      if (!p) {
        p = { id: pipelines.length, stage, entryPoint, bindings: [...bindings] };
        pipelines.push(p);
      }
      return p;
    },
  };
  const pass = {
    cur: { pipeline: -1, bindGroup: -1 },
    setPipeline(p) { this.cur.pipeline = p.id; },
    setBindGroup(_i, bg) { this.cur.bindGroup = bg.id; },
    dispatchWorkgroups(x, y = 1) { dispatches.push({ pipeline: this.cur.pipeline, bindGroup: this.cur.bindGroup, x, y }); },
  };
  return { dev, pass };
}

/**
 * Builds the demo. Returns the layer description (also written to outDir/layer.json).
 * @param {{ outDir?: string, Hq?: number, Hkv?: number, n?: number, d?: number, seed?: number, qScale?: number, rollLoops?: boolean }} o
 */
export async function buildDemo(o = {}) {
  const outDir = resolve(o.outDir ?? join(HERE, "dist"));
  const Hq = o.Hq ?? 4, Hkv = o.Hkv ?? 2, n = o.n ?? 256, d = o.d ?? 64, seed = o.seed ?? 1;
  // q ~ N(0, qScale^2): a larger scale gives peakier attention, so tau keeps fewer tokens (more to see in the strip).
  const qScale = o.qScale ?? 3;
  const program = compileFile(join(ROOT, "dsl/zipvl.ts")).final;

  // The generated WGSL (what `zipvl compile --target wgsl` writes for head dim d).
  let shaders = renderProgramWgsl(program, d).filter((s) => s.stage !== "decode");
  if (o.rollLoops) {
    // Software adapters JIT rolled loops much faster (templates/wgsl/CONTRACT.md, rollLoops); same kernels otherwise.
    shaders = shaders.map((s) => {
      const ctx = { ...s.ctx, config: { ...s.ctx.config, rollLoops: true } };
      return { ...s, ctx, code: renderWgsl(s.stage, ctx) };
    });
  }
  const byStage = Object.fromEntries(shaders.map((s) => [s.stage, s]));
  const codeToStage = new Map(shaders.map((s) => [renderWgsl(s.stage, s.ctx), s.stage]));

  // Inputs and the host-side knobs (probe rows, scales, selection options), as the webgpu executor computes them.
  const q = randomTensor("f32", [Hq, n, d], seed, { scale: qScale });
  const k = randomTensor("f32", [Hkv, n, d], seed + 1);
  const v = randomTensor("f32", [Hkv, n, d], seed + 2);
  const inputs = new Map([["q", q], ["k", k], ["v", v]]);
  const plan = planPrefill(program, inputs, {}, "the demo");
  const { probes, S, perKvHead } = plan;
  const m = probes.length;
  const params = Float32Array.from(slotValues(paramSlots(program), plan.b.env));

  // Record the runtime's launch plan: probe -> select -> attention, one compute pass.
  const { dev, pass } = recordingDevice(codeToStage);
  const f32 = (t) => Float32Array.from(t.data);
  const P = dev.storage("P", params.byteLength, b64(params.length > 0 ? params : new Float32Array(1)));
  const qb = dev.storage("q", 4 * q.data.length, b64(f32(q)));
  const kb = dev.storage("k", 4 * k.data.length, b64(f32(k)));
  const vb = dev.storage("v", 4 * v.data.length, b64(f32(v)));
  const pb = dev.storage("probes", 4 * m, b64(probes));
  const colmass = dev.storage("scores", 4 * S * n);
  const visible = dev.storage("visible", 4 * n);
  const rowstat = dev.storage("rowstat", 8 * Hq * m);
  const normScores = dev.storage("norm_scores", 4 * S * n);
  const count = dev.storage("count", 4 * S);
  const order = dev.storage("order", 4 * S * n);
  const ob = dev.storage("o", 4 * Hq * n * d);
  const kCache = dev.storage("k_cache_full", 4 * Hkv * n * d);
  const vCache = dev.storage("v_cache_full", 4 * Hkv * n * d);
  const sl = plan.select;
  const plans = [
    await planProbe(dev, byStage.probe.ctx, { Hq, Hkv, n, m, scale: plan.probe.scale, perKvHead },
      { params: P, q: qb, k: kb, probes: pb, colmass, visible, rowstat }),
    await planSelect(dev, byStage.select.ctx, n, S,
      { mode: sl.mode, amount: sl.amount, normalizer: plan.probe.normalizer, pool: { kind: sl.pool, size: sl.poolSize }, keepFirst: sl.keepFirst, keepLast: sl.keepLast },
      { params: P, colmass, visible, normScores, count, order }),
    await planAttention(dev, byStage.attention.ctx, { Hq, Hkv, n, scale: plan.attn.scale, perKvHead },
      { params: P, q: qb, k: kb, v: vb, o: ob, kCache, vCache, count, order }),
  ];
  for (const p of plans) p.record(pass);

  // Expected outputs: the float64 reference interpreter (rounded to f32 outputs).
  const ref = interpret(program, "prefill", inputs);
  const arr = (name) => Array.from(ref.get(name).data);
  const expected = {
    count: arr("count"),
    selected: arr("selected"),
    scores: b64(Float32Array.from(ref.get("scores").data)),
    norm_scores: b64(Float32Array.from(ref.get("norm_scores").data)),
    o: b64(Float32Array.from(ref.get("o").data)),
  };

  const layer = {
    program: program.name,
    source: "dsl/zipvl.ts",
    dims: { Hq, Hkv, n, d, m, S },
    seed, qScale,
    params: Object.fromEntries(program.params.map((p) => [p.name, plan.b.env[p.name]])),
    paramSlots: paramSlots(program).names,
    probes: Array.from(probes),
    select: { mode: sl.mode, amount: sl.amount, normalizer: plan.probe.normalizer, keepFirst: sl.keepFirst, keepLast: sl.keepLast },
    scale: { probe: plan.probe.scale, attention: plan.attn.scale },
    shaders: shaders.map((s) => ({ stage: s.stage, name: s.name, code: s.code, config: s.ctx.config })),
    launch: { buffers: dev.buffers, bindGroups: dev.bindGroups, pipelines: dev.pipelines, dispatches: dev.dispatches },
    outputs: { scores: colmass.id, norm_scores: normScores.id, count: count.id, order: order.id, o: ob.id },
    expected,
  };
  // Sanity: every bind group matches its stage's declared layout.
  for (const p of dev.pipelines) if (p.bindings.join() !== STAGE_BINDINGS[p.stage].join()) throw new Error(`internal: ${p.stage} bindings`);

  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, "layer.json"), JSON.stringify(layer));
  copyFileSync(join(HERE, "index.html"), join(outDir, "index.html"));
  copyFileSync(join(HERE, "demo.js"), join(outDir, "demo.js"));
  return { outDir, layer };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const val = (flag) => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const opts = { rollLoops: args.includes("--roll") };
  if (val("--out")) opts.outDir = val("--out");
  if (val("--n")) opts.n = Number(val("--n"));
  if (val("--seed")) opts.seed = Number(val("--seed"));
  if (val("--q-scale")) opts.qScale = Number(val("--q-scale"));
  const { outDir, layer } = await buildDemo(opts);
  console.log(`wrote ${outDir} (${layer.program}: Hq ${layer.dims.Hq}, Hkv ${layer.dims.Hkv}, n ${layer.dims.n}, d ${layer.dims.d}, ` +
    `${layer.dims.m} probe rows; interpreter keeps ${layer.expected.count.join(",")} of ${layer.dims.n})`);
}
