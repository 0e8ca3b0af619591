// The model kernels (templates/cuda/model.cu.hbs over include/zv_model.cuh, and the small-batch linear kernels of
// gemv.cu.hbs over zv_gemv.cuh): every dtype compiles with nvcc for
// sm_90a and sm_80 without spills, and the host's argument layouts (model-args.ts) match the device structs (g++).
import { execFile, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { nvccFlags, nvccVersion, parsePtxas, type Arch } from "../src/backends/cuda/compile.ts";
import { MODEL_ARG_LAYOUTS } from "../src/backends/cuda/model-args.ts";
import { MODEL_KERNELS, modelEntry, renderModelKernels } from "../src/backends/cuda/model-kernels.ts";
import { gemvEntries, gemvEntry, renderGemv } from "../src/backends/cuda/gemv.ts";
import { INCLUDE_DIR, type CudaDType } from "../src/backends/cuda/render.ts";
import { knobs } from "../src/knobs.ts";

const run = promisify(execFile);
const haveNvcc = nvccVersion() !== null;
const haveGxx = spawnSync("g++", ["--version"]).status === 0;
if (!haveNvcc) console.warn(`NOTICE: nvcc not found at ${knobs.nvcc}; the model-kernel compile test is skipped`);
if (!haveGxx) console.warn("NOTICE: g++ not found; the model argument-layout test is skipped");

describe.skipIf(!haveNvcc)("model kernels compile (nvcc)", () => {
  it("f32, f16 and bf16 for sm_90a and sm_80: every entry point, zero spills", async () => {
    const dir = mkdtempSync(join(tmpdir(), "zipvl-model-"));
    const jobs: { dtype: CudaDType; arch: Arch }[] = [];
    for (const dtype of ["f32", "f16", "bf16"] as const) for (const arch of [90, 80] as const) jobs.push({ dtype, arch });
    const compile = (what: "model" | "gemv") => Promise.all(jobs.map(async ({ dtype, arch }) => {
      const src = join(dir, `${what}_${dtype}_${arch}.cu`);
      writeFileSync(src, (what === "model" ? renderModelKernels(dtype) : renderGemv(dtype)).source);
      const { stdout, stderr } = await run(knobs.nvcc, [...nvccFlags(arch), "-cubin", "-Xptxas", "-v", "-o", `${src}.cubin`, src], { maxBuffer: 1 << 24 });
      return { dtype, arch, reports: parsePtxas(`${stdout}\n${stderr}`) };
    }));
    const [rows, gemvRows] = await Promise.all([compile("model"), compile("gemv")]);
    for (const r of gemvRows) {
      // The small-batch linear kernels: one entry per row count; 3 CTAs of 128 threads per SM fit (<= 168 registers).
      expect(r.reports.map((p) => p.kernel).sort()).toEqual(gemvEntries().map((e) => gemvEntry(r.dtype, e.m, e.r, e.ks)).sort());
      for (const p of r.reports) {
        console.log(`${p.kernel.padEnd(24)} sm_${r.arch}${r.arch === 90 ? "a" : " "} regs ${String(p.registers).padStart(3)} spill ${p.spillStores}/${p.spillLoads}`);
        expect(p.registers, `${p.kernel} sm_${r.arch} registers`).toBeLessThanOrEqual(168);
        expect(p.spillStores + p.spillLoads, `${p.kernel} sm_${r.arch} spills`).toBe(0);
      }
    }
    for (const r of rows) {
      const names = r.reports.map((p) => p.kernel).sort();
      expect(names).toEqual(MODEL_KERNELS.map((k) => modelEntry(k.name, r.dtype)).sort());
      for (const p of r.reports) {
        console.log(`${p.kernel.padEnd(24)} sm_${r.arch}${r.arch === 90 ? "a" : " "} regs ${String(p.registers).padStart(3)} spill ${p.spillStores}/${p.spillLoads}`);
        expect(p.spillStores, `${p.kernel} sm_${r.arch} spills`).toBe(0);
        expect(p.spillLoads, `${p.kernel} sm_${r.arch} spills`).toBe(0);
      }
    }
  });
});

describe.skipIf(!haveGxx)("model kernel argument blocks", () => {
  it("every field sits at 8 * its index and no field is missing", () => {
    const dir = mkdtempSync(join(tmpdir(), "zipvl-margs-"));
    const lines = Object.entries(MODEL_ARG_LAYOUTS).flatMap(([s, fields]) => [
      `  std::printf("%s size %zu\\n", "${s}", sizeof(${s}));`,
      ...fields.map((f) => `  std::printf("%s.%s %zu\\n", "${s}", "${f}", offsetof(${s}, ${f}));`),
    ]);
    writeFileSync(join(dir, "layout.cc"), `#include <cstddef>\n#include <cstdio>\n#include "zv_model_args.cuh"\nint main() {\n${lines.join("\n")}\n}\n`);
    const cc = spawnSync("g++", ["-std=c++17", "-I", INCLUDE_DIR, "-o", join(dir, "layout"), join(dir, "layout.cc")], { encoding: "utf8" });
    expect(cc.status, cc.stderr).toBe(0);
    const out = spawnSync(join(dir, "layout"), { encoding: "utf8" }).stdout;
    const got = new Map(out.trim().split("\n").map((l) => l.split(" ")).map(([k, ...v]) => [k!, Number(v.at(-1))]));
    for (const [s, fields] of Object.entries(MODEL_ARG_LAYOUTS)) {
      expect(got.get(s), `sizeof(${s}): a device field the host does not pack`).toBe(8 * fields.length);
      fields.forEach((f, i) => expect(got.get(`${s}.${f}`), `${s}.${f}`).toBe(8 * i));
    }
  });
});

describe("model buffer pool size classes", () => {
  it("a class holds the request with at most 1/16 slack above 1 MiB, and is its own class", async () => {
    const fc = (await import("fast-check")).default;
    const { sizeClass } = await import("../src/backends/cuda/model-pool.ts");
    fc.assert(fc.property(fc.integer({ min: 1, max: 2 ** 40 }), (b) => {
      const c = sizeClass(b);
      expect(c).toBeGreaterThanOrEqual(b);
      expect(c).toBeLessThanOrEqual(b <= 1 << 20 ? Math.max(b, 256) + 255 : b * (1 + 1 / 16));
      expect(sizeClass(c)).toBe(c);
    }));
    // A growing KV cache (one 10 KiB token row per step on 335 MB) stays in one class for many steps.
    const base = 40 * 32768 * 128 * 2;
    const classes = new Set(Array.from({ length: 64 }, (_, s) => sizeClass(base + s * 40 * 128 * 2)));
    expect(classes.size).toBeLessThanOrEqual(2);
  });
});
