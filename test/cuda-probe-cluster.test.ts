// The probe kernel's key split over a thread-block cluster (sm_90, config `cluster`): geometry, the tuner's space,
// the rendered attribute, and nvcc builds (zero spills on sm_90a; a clear error when asked for on sm_80). The GPU
// checks are test/cuda/harness_probe_select_decode.cu (cluster cases) and bench/gpu-check.ts (cluster configs).
import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { compileFile } from "../src/driver.ts";
import { nvccFlags, nvccVersion, parsePtxas, type Arch } from "../src/backends/cuda/compile.ts";
import { renderKernels, type CudaDType } from "../src/backends/cuda/render.ts";
import { defaultConfig, probeCluster, probeGeometry, type Config } from "../src/backends/cuda/schedule.ts";
import { CUDA_PRESETS, cudaSpace } from "../src/tune/space.ts";
import type { TuneShape } from "../src/tune/shapes.ts";
import { knobs } from "../src/knobs.ts";

const run = promisify(execFile);
const haveNvcc = nvccVersion() !== null;
const zipvl = compileFile("dsl/zipvl.ts").final;
const probeSource = (dtype: CudaDType, d: number, arch: Arch, config: Config): string =>
  renderKernels(zipvl, dtype, d, arch, { probe: config }).find((k) => k.stage === "probe")!.source;

describe("probe cluster: schedule, space and rendering", () => {
  const dims = { Hq: 40, Hkv: 40, n: 2880, d: 128, m: 128, S: 1 };

  it("grid.x is row blocks times the cluster size; no cluster key means 1", () => {
    const base = defaultConfig("probe", "bf16", 128, 90);
    expect(probeCluster(base)).toBe(1);
    expect(probeGeometry(base, "bf16", dims).grid).toEqual([8, 40, 1]); // 128 rows / 16
    for (const cluster of [2, 4, 8]) {
      const g = probeGeometry({ ...base, cluster }, "bf16", dims);
      expect(g.grid).toEqual([8 * cluster, 40, 1]);
      expect(g.grid[0] % cluster).toBe(0);
    }
    // GQA, rows not a multiple of BM (4 * 13 = 52 rows -> 4 row blocks of 16), f32 row blocks of rowsF32.
    expect(probeGeometry({ ...base, cluster: 8 }, "bf16", { ...dims, Hq: 8, Hkv: 2, m: 13 }).grid).toEqual([32, 2, 1]);
    expect(probeGeometry({ ...defaultConfig("probe", "f32", 64, 90), cluster: 4 }, "f32", { ...dims, m: 20 }).grid).toEqual([8, 40, 1]);
  });

  it("the tuner varies cluster on sm_90 only, writing 1 as no key (the fallback's form)", () => {
    const shape: TuneShape = { dtype: "bf16", d: 128, Hq: 40, gqa: 1, n: 2880, kept: 0.3 };
    const s90 = cudaSpace("probe", shape, CUDA_PRESETS.sm90!);
    const s80 = cudaSpace("probe", shape, CUDA_PRESETS.sm80!);
    expect(s90.configs[0]).toEqual(defaultConfig("probe", "bf16", 128, 90));
    expect(new Set(s90.configs.map((c) => c.cluster))).toEqual(new Set([undefined, 2, 4, 8]));
    expect(s90.configs.some((c) => c.cluster === 1)).toBe(false);
    expect(s80.configs.every((c) => c.cluster === undefined)).toBe(true);
    // mTiles 4 only rides with a cluster of 4 or 8 (it cuts the row blocks four-fold).
    expect(s90.configs.filter((c) => c.mTiles === 4).every((c) => (c.cluster ?? 1) >= 4)).toBe(true);
    expect(s90.configs.some((c) => c.mTiles === 4)).toBe(true);
  });

  it("the kernel carries __cluster_dims__ only for cluster > 1", () => {
    const base = defaultConfig("probe", "bf16", 128, 90);
    expect(probeSource("bf16", 128, 90, base)).toContain("#define ZV_PROBE_CLUSTER 1\n");
    const src = probeSource("bf16", 128, 90, { ...base, cluster: 4 });
    expect(src).toContain("#define ZV_PROBE_CLUSTER 4\n");
    expect(src).toContain("__cluster_dims__(ZV_PROBE_CLUSTER, 1, 1)");
    expect(src).toMatch(/ProbeConfig<__nv_bfloat16, 128, 8,\s+1,\s+2,\s+16,\s+2,\s+4>/);
  });
});

describe.skipIf(!haveNvcc)("probe cluster: nvcc", () => {
  const compile = async (src: string, arch: Arch): Promise<{ ok: boolean; log: string }> => {
    const dir = mkdtempSync(join(tmpdir(), "zipvl-probe-cl-"));
    writeFileSync(join(dir, "k.cu"), src);
    try {
      const { stdout, stderr } = await run(knobs.nvcc, [...nvccFlags(arch), "-cubin", "-Xptxas", "-v", "-o", join(dir, "k.cubin"), join(dir, "k.cu")], { maxBuffer: 1 << 24 });
      return { ok: true, log: `${stdout}\n${stderr}` };
    } catch (e) {
      const x = e as { stdout?: string; stderr?: string };
      return { ok: false, log: `${x.stdout ?? ""}\n${x.stderr ?? ""}` };
    }
  };

  it("sm_90a builds without spills (bf16 d128 clusters 2 and 8, f16 d80 cluster 4, f32 d64 cluster 8)", async () => {
    const jobs: [CudaDType, number, number][] = [["bf16", 128, 2], ["bf16", 128, 8], ["f16", 80, 4], ["f32", 64, 8]];
    const results = await Promise.all(jobs.map(([dt, d, cluster]) => compile(probeSource(dt, d, 90, { ...defaultConfig("probe", dt, d, 90), cluster }), 90)));
    results.forEach((r, i) => {
      expect(r.ok, `${jobs[i]!.join(" ")}: ${r.log.slice(0, 800)}`).toBe(true);
      const reps = parsePtxas(r.log);
      expect(reps.length).toBe(1);
      console.log(`probe ${jobs[i]!.join(" ")} sm_90a: regs ${reps[0]!.registers} spill ${reps[0]!.spillStores}/${reps[0]!.spillLoads}`);
      expect(reps[0]!.spillStores, `${jobs[i]!.join(" ")} spills`).toBe(0);
      expect(reps[0]!.spillLoads, `${jobs[i]!.join(" ")} spills`).toBe(0);
    });
  }, 120_000);

  it("cluster > 1 for sm_80 stops at the preprocessor with a message naming the config", async () => {
    const r = await compile(probeSource("bf16", 128, 80, { ...defaultConfig("probe", "bf16", 128, 80), cluster: 2 }), 80);
    expect(r.ok).toBe(false);
    expect(r.log).toContain("probe config cluster > 1 needs arch 90");
  }, 60_000);
});
