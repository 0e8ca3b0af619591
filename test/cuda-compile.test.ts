// Every generated CUDA kernel compiles with nvcc for sm_90a and sm_80 (this machine has nvcc but no GPU).
// Reports registers and spills per kernel; spills in the main tensor-core configs fail the test.
import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { compileFile } from "../src/driver.ts";
import { nvccFlags, nvccVersion, parsePtxas, type Arch, type PtxasReport } from "../src/backends/cuda/compile.ts";
import { renderKernels, CUDA_HEAD_DIMS, type CudaDType, type KernelSource } from "../src/backends/cuda/render.ts";
import { defaultConfig } from "../src/backends/cuda/schedule.ts";
import { knobs } from "../src/knobs.ts";
import { ZipvlError } from "../src/diagnostics/diagnostic.ts";

const run = promisify(execFile);
const haveNvcc = nvccVersion() !== null;
if (!haveNvcc) console.warn(`NOTICE: nvcc not found at ${knobs.nvcc}; CUDA compile tests are skipped`);

const configs = (dtype: CudaDType, d: number, arch: Arch) => ({
  probe: defaultConfig("probe", dtype, d, arch), select: defaultConfig("select", dtype, d, arch),
  sparse_attn: defaultConfig("sparse_attn", dtype, d, arch), decode: defaultConfig("decode", dtype, d, arch),
});

async function compileAll(jobs: { k: KernelSource; arch: Arch }[]): Promise<{ k: KernelSource; arch: Arch; reports: PtxasReport[] }[]> {
  const dir = mkdtempSync(join(tmpdir(), "zipvl-cc-"));
  const results: { k: KernelSource; arch: Arch; reports: PtxasReport[] }[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const job = jobs[next++]!;
      const src = join(dir, `${job.k.name}.sm${job.arch}.cu`);
      writeFileSync(src, job.k.source);
      const { stdout, stderr } = await run(knobs.nvcc, [...nvccFlags(job.arch), "-cubin", "-Xptxas", "-v", "-o", `${src}.cubin`, src], { maxBuffer: 1 << 24 });
      results.push({ ...job, reports: parsePtxas(`${stdout}\n${stderr}`) });
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, cpus().length) }, worker));
  return results;
}

function table(rows: { k: KernelSource; arch: Arch; reports: PtxasReport[] }[]): string {
  return rows
    .flatMap((r) => r.reports.map((p) => `${p.kernel.padEnd(44)} sm_${r.arch}${r.arch === 90 ? "a" : " "} regs ${String(p.registers).padStart(3)} spill ${p.spillStores}/${p.spillLoads} stack ${p.stackBytes}`))
    .join("\n");
}

describe.skipIf(!haveNvcc)("CUDA kernels compile (nvcc)", () => {
  it("every kernel of every shipped program, bf16 head dim 128, sm_90a and sm_80", async () => {
    const jobs = [];
    for (const f of ["dsl/zipvl.ts", "dsl/variants/dense.ts", "dsl/variants/topk-ratio.ts", "dsl/variants/h2o.ts", "dsl/variants/snapkv.ts"]) {
      const p = compileFile(f).final;
      for (const arch of [90, 80] as const) for (const k of renderKernels(p, "bf16", 128, arch, configs("bf16", 128, arch))) jobs.push({ k, arch });
    }
    const rows = await compileAll(jobs);
    console.log(table(rows));
    expect(rows.length).toBe(jobs.length);
    for (const r of rows) for (const p of r.reports) expect(p.spillStores, `${p.kernel} sm_${r.arch} spills`).toBe(0);
  });

  it("the paper's program for every dtype and head dim on sm_90a", async () => {
    const p = compileFile("dsl/zipvl.ts").final;
    const jobs = [];
    for (const dtype of ["bf16", "f16", "f32"] as const) for (const d of CUDA_HEAD_DIMS) for (const k of renderKernels(p, dtype, d, 90, configs(dtype, d, 90))) jobs.push({ k, arch: 90 as const });
    const rows = await compileAll(jobs);
    console.log(table(rows));
    expect(rows.length).toBe(jobs.length);
    // Tensor-core configs up to d = 128 must not spill (d = 256 and the f32 SIMT fallback are reported only).
    for (const r of rows) if (r.k.dtype !== "f32" && r.k.headDim <= 128) for (const p of r.reports) expect(p.spillStores, `${p.kernel} spills`).toBe(0);
  });

  it("the tensor-core decode (config mma: 1) compiles without spills on sm_90a and sm_80", async () => {
    const p = compileFile("dsl/zipvl.ts").final;
    const jobs = [];
    for (const [dtype, d, arch] of [["bf16", 128, 90], ["bf16", 128, 80], ["f16", 80, 80]] as const) {
      const cfg = { ...configs(dtype, d, arch), decode: { ...defaultConfig("decode", dtype, d, arch), mma: 1 } };
      const k = renderKernels(p, dtype, d, arch, cfg).find((x) => x.stage === "decode")!;
      expect(k.source).toMatch(/DecodeConfig<[^>]*, 1>/);
      jobs.push({ k, arch });
    }
    const rows = await compileAll(jobs);
    console.log(table(rows));
    expect(rows.length).toBe(jobs.length);
    for (const r of rows) for (const rep of r.reports) expect(rep.spillStores, `${rep.kernel} sm_${r.arch} spills`).toBe(0);
  });

  it("keepIf rules (FastV) compile into the selection kernel", async () => {
    const p = compileFile("dsl/variants/fastv.ts").final;
    const ks = renderKernels(p, "bf16", 128, 90, configs("bf16", 128, 90));
    const sel = ks.find((k) => k.stage === "select")!;
    expect(sel.source).toContain("kKeepIf = true");
    expect(sel.source).toMatch(/pos < P\[\d\]/);
    const rows = await compileAll(ks.map((k) => ({ k, arch: 90 as const })));
    for (const r of rows) for (const rep of r.reports) expect(rep.spillStores, `${rep.kernel} spills`).toBe(0);
  });

  it("a feature the device library lacks is a coded error, not a wrong kernel", () => {
    const p = compileFile("test/programs/gaps/decode-softcap.ts").final;
    let err: unknown;
    try {
      renderKernels(p, "bf16", 128, 90);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ZipvlError);
    expect((err as ZipvlError).code).toBe("ZV4002");
    expect(() => renderKernels(compileFile("dsl/zipvl.ts").final, "bf16", 72, 90)).toThrow(/ZV2105/);
  });
});
