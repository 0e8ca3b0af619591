// zipvl tune's bookkeeping without a GPU: shapes and buckets, config spaces pruned before compiling, the search
// (failures and wrong outputs score Infinity, the budget, the fallback), and records written/read/ignored.
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { main } from "../src/cli/main.ts";
import { bucketOf, parseShapes, type TuneShape } from "../src/tune/shapes.ts";
import { CUDA_PRESETS, cudaSpace, wgslSpace, type CudaLimits } from "../src/tune/space.ts";
import { compareOutputs, search, taskConfigId, type Harness, type Task } from "../src/tune/search.ts";
import { loadRecord, lookup, recordFile, setNoticeSink, writeRecord, type RecordEntry, type RecordKey } from "../src/tune/records.ts";
import { chooseConfig } from "../src/backends/wgsl/stages.ts";
import { progress } from "../src/tune/progress.ts";

const shape: TuneShape = { n: 8192, kept: 0.3, d: 128, gqa: 1, dtype: "bf16", Hq: 40 };

describe("shapes and buckets", () => {
  it("--shapes is a cross product over the defaults, with coded errors", () => {
    const s = parseShapes("n=2880,32768:kept=0.1,0.5:gqa=1,8");
    expect(s).toHaveLength(8);
    expect(s.every((x) => x.d === 128 && x.Hq === 40 && x.dtype === "bf16")).toBe(true);
    expect(() => parseShapes("m=3")).toThrow(/ZV8007.*'m'/);
    expect(() => parseShapes("n=abc")).toThrow(/ZV8001.*bad n 'abc'/);
    expect(() => parseShapes("gqa=3")).toThrow(/ZV8001.*bad gqa/); // 40 heads are not a multiple of 3
    expect(() => parseShapes("dtype=f64")).toThrow(/ZV8001/);
  });

  it("buckets name only what a stage depends on", () => {
    expect(bucketOf("probe", shape)).toBe("bf16/d128/g1/n<=16k/*");
    expect(bucketOf("select", shape)).toBe("*/*/*/n<=16k/*");
    expect(bucketOf("sparse_attn", shape)).toBe("bf16/d128/g1/n<=16k/k<=50%");
    expect(bucketOf("sparse_attn", { ...shape, kept: 0.7, n: 70000 })).toBe("bf16/d128/g1/n>64k/k<=100%");
    expect(bucketOf("decode", shape)).toBe("bf16/d128/g1/cache-n<=4k/*"); // round(0.3 * 8192) = 2458 cached tokens
  });
});

describe("config spaces are pruned before compiling", () => {
  const H100 = CUDA_PRESETS.sm90!;
  it("every surviving sparse attention config satisfies the device library's static_asserts and the limits", () => {
    const sp = cudaSpace("sparse_attn", shape, H100);
    expect(sp.configs[0]).toEqual({ BM: 128, BN: 64, warps: 8, minBlocks: 2, wgmma: 1 }); // the fallback first
    expect(sp.configs.length).toBeGreaterThan(5);
    for (const c of sp.configs.slice(1)) {
      const threads = 32 * c.warps!;
      if (c.wgmma === 1) expect(c.BM === 16 * c.warps! && c.warps! % 4 === 0 && [64, 128, 256].includes(c.BN!)).toBe(true);
      else expect(c.BM! % (16 * c.warps!) === 0 && (c.BN! * 8) % threads === 0 && (c.BM! * 8) % threads === 0).toBe(true);
      const smem = (c.BM! + 2 * c.BN!) * (c.wgmma === 1 ? 128 : 136) * 2;
      expect(smem + 16 * c.BN!).toBeLessThanOrEqual(H100.maxSharedPerBlockOptin);
      expect(threads * c.minBlocks!).toBeLessThanOrEqual(2048);
    }
    expect(sp.total).toBe(sp.configs.length + Object.values(sp.pruned).reduce((a, b) => a + b, 0));
  });

  it("a smaller card loses the configs that do not fit its shared memory or registers", () => {
    const small: CudaLimits = { ...H100, name: "small", maxSharedPerBlockOptin: 64 * 1024, maxSharedPerSM: 100 * 1024 };
    const big = cudaSpace("sparse_attn", shape, H100);
    const sp = cudaSpace("sparse_attn", shape, small);
    expect(sp.pruned["shared memory per block"]).toBeGreaterThan(0);
    expect(sp.configs.length).toBeLessThan(big.configs.length);
    const dec = cudaSpace("decode", { ...shape, d: 256 }, H100); // o[16 warps][4][256] floats = 64 KiB static
    expect(dec.pruned["static shared memory"]).toBeGreaterThan(0);
    expect(dec.configs.some((c) => c.warps === 16)).toBe(false);
    expect(cudaSpace("select", shape, H100).configs.map((c) => c.threads)).toEqual([1024, 128, 256, 512]);
    expect(cudaSpace("probe", shape, H100).pruned.registers).toBeGreaterThan(0);
  });

  it("WGSL workgroup sizes and tiles are pruned with the adapter's limits", () => {
    const L = { maxComputeWorkgroupStorageSize: 16384, maxComputeInvocationsPerWorkgroup: 128, maxComputeWorkgroupSizeX: 128, maxComputeWorkgroupsPerDimension: 65535 };
    const fb = chooseConfig(L as never, 64);
    const sp = wgslSpace("attention", 64, L, fb);
    expect(sp.configs[0]).toEqual({ attnBQ: fb.attnBQ, attnBK: fb.attnBK, attnTPR: fb.attnTPR });
    for (const c of sp.configs) {
      expect(c.attnBQ! * c.attnTPR!).toBeLessThanOrEqual(128);
      expect(4 * ((c.attnBQ! + c.attnBK!) * 68 + c.attnBK! * 64 + c.attnBQ! * (c.attnBK! + 1) + c.attnBQ! + c.attnBK!)).toBeLessThanOrEqual(16384);
    }
    expect(sp.pruned["workgroup storage"]).toBeGreaterThan(0);
    expect(wgslSpace("decode", 64, L, fb).configs.every((c) => c.decodeWorkgroup! <= 128)).toBe(true);
  });
});

/** A fake harness: configs with `fail` throw, `wrong` return other output, `bad` fail to compile; ms = cfg.ms. */
function fakeHarness(opts: { fallbackFails?: boolean } = {}): Harness<Record<string, number>> {
  return {
    timed: "fake",
    tolerance: () => 1e-3,
    async prepare(tasks) {
      const m = new Map<string, string>();
      for (const t of tasks) for (const c of t.space.configs) if (c.bad) m.set(taskConfigId(t, c), "nvcc: static_assert failed");
      return m;
    },
    async measure(_t, c) {
      if (c.fail || (opts.fallbackFails && c.fallback)) throw new Error("CUDA_ERROR_LAUNCH_FAILED\nmore");
      return { ms: c.ms!, outputs: new Map<string, Float32Array | Int32Array>([["o", Float32Array.of(1, 2, c.wrong ? 9 : 3)], ["count", Int32Array.of(7)]]) };
    },
  };
}
const task = (configs: Record<string, number>[]): Task<Record<string, number>> => ({ stage: "sparse_attn", bucket: "b", shape, space: { configs, total: configs.length + 3, pruned: { registers: 3 } } });

describe("the search", () => {
  it("scores failing, wrong and uncompilable configs Infinity and never aborts; the fastest verified config wins", async () => {
    const lines: string[] = [];
    const [r] = await search([task([{ fallback: 1, ms: 5 }, { fail: 1, ms: 0.1 }, { wrong: 1, ms: 0.2 }, { bad: 1, ms: 0.3 }, { ms: 4 }, { ms: 3 }])], fakeHarness(), { budgetS: 100, write: (s) => void lines.push(s), tty: false });
    expect(r!.trials.map((t) => t.verdict)).toEqual(["ok", "failed", "wrong output", "compile failed", "ok", "ok"]);
    expect(r!.trials.slice(1, 4).every((t) => t.ms === Infinity)).toBe(true);
    expect(r!.trials[1]!.why).toBe("CUDA_ERROR_LAUNCH_FAILED");
    expect(r!.trials[2]!.why).toMatch(/o\[2\] = 9, fallback gives 3/);
    expect(r!.entry).toMatchObject({ config: { ms: 3 }, ms: 3, fallbackMs: 5, candidates: 6, failed: 3, pruned: 3 });
    expect(lines.at(-1)).toMatch(/6\/6 100%/);
  });

  it("keeps the fallback when nothing beats it, and gives a bucket whose fallback fails no record", async () => {
    const [a, b] = await search([task([{ fallback: 1, ms: 1 }, { ms: 2 }]), task([{ fallback: 1, ms: 1 }, { ms: 2 }])].map((t, i) => ({ ...t, bucket: `b${i}` })), {
      ...fakeHarness(), measure: async (t, c) => (t.bucket === "b1" && c.fallback ? Promise.reject(new Error("boom")) : fakeHarness().measure(t, c)),
    }, { budgetS: 100, write: () => {} });
    expect(a!.entry!.config).toEqual({ fallback: 1, ms: 1 });
    expect(b!.entry).toBeNull();
    expect(b!.error).toBe("boom");
  });

  it("stops measuring when the budget is spent (the rest are skipped, the best so far is kept)", async () => {
    let clock = 0;
    const h = fakeHarness();
    const slow: Harness<Record<string, number>> = { ...h, measure: async (t, c) => ((clock += 1000), h.measure(t, c)) };
    const [r] = await search([task([{ fallback: 1, ms: 5 }, { ms: 4 }, { ms: 3 }, { ms: 2 }])], slow, { budgetS: 1.5, now: () => clock, write: () => {} });
    expect(r!.trials.map((t) => t.verdict)).toEqual(["ok", "ok", "skipped (budget)", "skipped (budget)"]);
    expect(r!.entry!.ms).toBe(4);
    expect(r!.entry!.candidates).toBe(2);
  });

  it("compares outputs within tolerance; NaN bytes on both sides match, integers must be equal", () => {
    const ref = new Map<string, Float32Array | Int32Array>([["o", Float32Array.of(1, NaN, 100)], ["c", Int32Array.of(3)]]);
    expect(compareOutputs(ref, new Map<string, Float32Array | Int32Array>([["o", Float32Array.of(1.0005, NaN, 100.05)], ["c", Int32Array.of(3)]]), 1e-3)).toBeNull();
    expect(compareOutputs(ref, new Map<string, Float32Array | Int32Array>([["o", Float32Array.of(1, 0, 100)], ["c", Int32Array.of(3)]]), 1e-3)).toMatch(/o\[1\]/);
    expect(compareOutputs(ref, new Map<string, Float32Array | Int32Array>([["o", Float32Array.of(1, NaN, 100)], ["c", Int32Array.of(4)]]), 1e-3)).toMatch(/c\[0\] = 4/);
    expect(compareOutputs(ref, new Map([["o", Float32Array.of(1)]]), 1e-3)).toMatch(/o: length 1/);
  });

  it("the progress bar shows an ETA", () => {
    let t = 0;
    const out: string[] = [];
    const p = progress("tune", 4, (s) => void out.push(s), false, () => t);
    t = 10_000;
    p.tick("a");
    expect(out[0]).toMatch(/1\/4 25% elapsed 10s ETA 30s a/);
  });
});

describe("records", () => {
  const key: RecordKey = { backend: "cuda", device: "NVIDIA H200", cc: "9.0", driver: "13000", toolchain: "nvcc 13.0.48", library: "abc" };
  const entry = (stage: string, bucket: string, config: Record<string, number>): RecordEntry => ({ stage, bucket, config, ms: 1, fallbackMs: 2, candidates: 3, failed: 0, pruned: 0, shape, timed: "t" });

  it("are written per GPU, merged, read back and used for the running shape's buckets", () => {
    const dir = mkdtempSync(join(tmpdir(), "zipvl-tune-"));
    setNoticeSink(() => {});
    const path = writeRecord(key, "topk_ratio", [entry("sparse_attn", "bf16/d128/g1/n<=16k/k<=50%", { BM: 64, BN: 64, warps: 4, minBlocks: 2, wgmma: 1 })], dir);
    expect(path).toBe(join(dir, "cuda-nvidia-h200-sm90.json"));
    writeRecord(key, "topk_ratio", [entry("decode", "bf16/d128/g1/cache-n<=4k/*", { warps: 8, splitScale: 2 })], dir);
    setNoticeSink(() => {});
    expect(loadRecord(key, dir)!.entries).toHaveLength(2);
    expect(lookup(key, "decode", "bf16/d128/g1/cache-n<=4k/*", dir)).toEqual({ warps: 8, splitScale: 2 });
    expect(lookup(key, "sparse_attn", "bf16/d128/g1/n<=16k/k<=50%", dir)).toEqual({ BM: 64, BN: 64, warps: 4, minBlocks: 2, wgmma: 1 });
  });

  it("stale, foreign and unreadable records are ignored with one notice each", () => {
    const dir = mkdtempSync(join(tmpdir(), "zipvl-tune-"));
    writeRecord(key, "p", [entry("select", "*/*/*/n<=4k/*", { threads: 512 })], dir);
    const notices: string[] = [];
    setNoticeSink((l) => void notices.push(l));
    const stale = { ...key, toolchain: "nvcc 13.1.0" };
    expect(lookup(stale, "select", "*/*/*/n<=4k/*", dir)).toBeUndefined();
    expect(lookup(stale, "select", "*/*/*/n<=4k/*", dir)).toBeUndefined();
    expect(notices).toHaveLength(1);
    expect(notices[0]).toMatch(/ignoring tuning record .*cuda-nvidia-h200-sm90.json: stale: toolchain nvcc 13.0.48 \(now nvcc 13.1.0\)/);
    // A record copied from another card under this card's file name is foreign.
    const h100 = { ...key, device: "NVIDIA H100 80GB HBM3" };
    writeFileSync(recordFile(h100, dir), readFileSync(recordFile(key, dir)));
    expect(lookup(h100, "select", "*/*/*/n<=4k/*", dir)).toBeUndefined();
    expect(notices[1]).toMatch(/made for NVIDIA H200 \(cc 9.0\), this is NVIDIA H100 80GB HBM3/);
    const other = { ...key, device: "NVIDIA A100" };
    writeFileSync(recordFile(other, dir), "{ not json");
    expect(lookup(other, "select", "*/*/*/n<=4k/*", dir)).toBeUndefined();
    expect(notices[2]).toMatch(/not valid: not JSON/);
    expect(notices).toHaveLength(3);
    setNoticeSink(() => {});
  });
});

describe("zipvl tune CLI", () => {
  async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = "";
    let err = "";
    const code = await main(argv, (s) => void (out += s + "\n"), (s) => void (err += s + "\n"));
    return { code, out, err };
  }
  it("--dry-run lists buckets and candidate counts after pruning without a GPU", async () => {
    const r = await run("tune", "--dry-run", "--arch", "sm80", "--shapes", "n=2880,32768:gqa=1");
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/limits of sm_80 preset/);
    expect(r.out).toMatch(/sparse_attn +bf16\/d128\/g1\/n<=4k\/k<=50% +\d+ of +\d+ configs/);
    expect(r.out).toMatch(/\d+ candidate configs after pruning \(of \d+\)/);
    expect(cudaSpace("sparse_attn", shape, CUDA_PRESETS.sm80!).configs.some((c) => c.wgmma === 1)).toBe(false); // no wgmma on sm_80
  });
  it("bad options get coded errors", async () => {
    expect((await run("tune", "--budget", "x", "--dry-run")).err).toMatch(/error ZV8001: --budget: expected a number/);
    expect((await run("tune", "--backend", "metal", "--dry-run")).err).toMatch(/error ZV8001: --backend/);
    expect((await run("tune", "--shapes", "q=1", "--dry-run")).err).toMatch(/error ZV8007/);
  });
});
