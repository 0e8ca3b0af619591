// WGSL backend vs the float64 interpreter's stage semantics (src/interp/kernels.ts), on a real WebGPU
// adapter (software Vulkan in CI: see .ci/install-vulkan.sh). Outputs are poisoned (NaN / -1) before every dispatch.
// The properties live in test/support/wgsl-props.ts, shared with the GPU-host runner bench/wgsl-check.ts.
// Without an adapter every test is skipped with a console.warn, never passed silently.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  decode, makeContext, probeScores, renderWgsl, select, sparseAttention, STAGE_BINDINGS, STAGE_ENTRIES,
  type SelectOptions, type WgslStage,
} from "../src/backends/wgsl/stages.ts";
import { createPrefillChain } from "../src/runtime/webgpu-prefill.ts";
import { createWebGpu, WebGpuError, type ZvGpu } from "../src/runtime/webgpu.ts";
import {
  attentionProperty, decodeProperty, probeProperty, rng, RUNS, selectProperty, sortedSubset, uniform, VARIANTS,
} from "./support/wgsl-props.ts";

async function tryDevice(): Promise<ZvGpu | null> {
  try {
    return await createWebGpu();
  } catch (e) {
    if (e instanceof WebGpuError && (e.code === "ZV3101" || e.code === "ZV3102")) {
      console.warn(`\n[wgsl.test] SKIPPING all WebGPU tests: ${e.message}\n`);
      return null;
    }
    throw e;
  }
}
const dev = await tryDevice();
if (dev) console.info(`[wgsl.test] adapter: ${dev.info.description}; f16=${dev.hasF16} timestamps=${dev.hasTimestamps}`);
const gpu = (): ZvGpu => dev!;

// ---- tests ---------------------------------------------------------------------------------------------------------
describe.skipIf(!dev)("WGSL kernels on WebGPU", () => {
  it("every rendered stage compiles for every head dim (f32 and, if offered, f16) and variant", async () => {
    const stages: WgslStage[] = ["probe", "select", "attention", "decode"];
    for (const headDim of [64, 80, 96, 128]) for (const useF16 of dev!.hasF16 ? [false, true] : [false]) for (const v of VARIANTS) {
      const ctx = makeContext(gpu(), { headDim, useF16, variant: v.wgsl });
      for (const st of stages) {
        const code = renderWgsl(st, ctx);
        const errors = (await gpu().compileMessages(code)).filter((m) => m.type === "error");
        expect(errors.map((e) => `${st} d=${headDim} f16=${useF16} ${e.lineNum}: ${e.message}`)).toEqual([]);
        // Pipelines (bindings vs the explicit layout) once per stage and head dim: SwiftShader JITs at creation.
        if (v === VARIANTS[0] && !useF16) for (const entry of STAGE_ENTRIES[st]) await gpu().pipeline(code, entry, STAGE_BINDINGS[st]);
      }
    }
  });

  it("a WGSL compile error is ZV3103 with the compiler's message", async () => {
    const bad = "@compute @workgroup_size(1) fn main() { let x: i32 = 1.5; }";
    const err = await gpu().pipeline(bad, "main", ["uniform"]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WebGpuError);
    expect((err as WebGpuError).code).toBe("ZV3103");
    expect((err as WebGpuError).message).toMatch(/abstract-float|i32/);
  });

  it("probe scoring matches the interpreter", async () => {
    await fc.assert(probeProperty(gpu), { numRuns: RUNS.probe });
  });

  it("selection matches the interpreter (count by mode, keep rules, ties to the smaller position)", async () => {
    await fc.assert(selectProperty(gpu), { numRuns: RUNS.select });
  });

  it("selection edge cases: keep-one, keep-all, everything forced, ratio rounding, tau = 1", async () => {
    const n = 50, colmass = Float32Array.from({ length: n }, (_, j) => (j === 17 ? 100 : 0.001)), visible = new Float32Array(n).fill(1);
    const base = { colmass, visible, n, S: 1, normalizer: "none", pool: { kind: "none", size: 1 }, keepFirst: 0, keepLast: 0 } as const;
    const one = await select(gpu(), { ...base, mode: "tau", amount: 0.5 });
    expect([one.count[0], one.order[0]]).toEqual([1, 17]);
    const all = await select(gpu(), { ...base, mode: "all", amount: 0 });
    expect([all.count[0], Array.from(all.order)]).toEqual([n, Array.from({ length: n }, (_, j) => j)]);
    const forcedAll = await select(gpu(), { ...base, mode: "budget", amount: 1, keepFirst: 30, keepLast: 30 });
    expect(forcedAll.count[0]).toBe(n);
    const ratio = await select(gpu(), { ...base, n: 10, colmass: colmass.subarray(0, 10), visible: visible.subarray(0, 10), mode: "ratio", amount: 0.3 });
    expect(ratio.count[0]).toBe(3); // 0.3 * 10 = 3.0000000000000004 in f64 must not round up to 4
    const tau1 = await select(gpu(), { ...base, colmass: colmass.map((x, j) => (j % 3 ? x : 0)), mode: "tau", amount: 1 });
    expect(tau1.count[0]).toBe(n - Math.ceil(n / 3)); // tau = 1 keeps exactly the positive-mass tokens
  });

  it("token-sparse attention matches the interpreter (gather, compaction, zero rows)", async () => {
    await fc.assert(attentionProperty(gpu), { numRuns: RUNS.attention });
  });

  it("split-KV decode matches the interpreter", async () => {
    await fc.assert(decodeProperty(gpu), { numRuns: RUNS.decode });
  });

  it("the GPU-resident chain (count never read back) equals the stage-by-stage API", async () => {
    for (const [n, d, Hkv, g] of [[257, 64, 2, 2], [100, 128, 1, 4]] as const) {
      const r = rng(n), Hq = Hkv * g, m = 40, scale = 1 / Math.sqrt(d);
      const data = { q: uniform(r, Hq * n * d), k: uniform(r, Hkv * n * d), v: uniform(r, Hkv * n * d), probes: sortedSubset(r, n, m), decodeQ: uniform(r, Hq * d) };
      const sel: SelectOptions = { mode: "tau", amount: 0.9, normalizer: "visible", pool: { kind: "none", size: 1 }, keepFirst: 1, keepLast: 1 };
      const chain = await createPrefillChain(gpu(), { Hq, Hkv, n, d, m, scale, perKvHead: false, select: sel, decode: true });
      chain.upload(data);
      await chain.run();
      const out = await chain.read();
      const times = await chain.time(2);
      chain.destroy();
      expect(Object.keys(times)).toEqual(["probe", "select", "attention", "decode", "total"]);
      const pr = await probeScores(gpu(), { ...data, Hq, Hkv, n, d, scale, perKvHead: false });
      const se = await select(gpu(), { ...pr, ...sel, n, S: 1 });
      const at = await sparseAttention(gpu(), { ...data, ...se, Hq, Hkv, n, d, scale, perKvHead: false });
      const de = await decode(gpu(), { q: data.decodeQ, kCache: at.kCache, vCache: at.vCache, length: se.count[0]!, Hq, Hkv, d, scale });
      expect(out.colmass).toEqual(pr.colmass);
      expect([out.count, out.order]).toEqual([se.count, se.order]);
      expect(out.o).toEqual(at.o);
      expect(out.decodeO).toEqual(de.o);
    }
  });
});
