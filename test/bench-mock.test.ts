// zipvl bench's GPU path on the mock libcuda: every zipvl row is produced (times are the mock's constant), and the
// peers child process is spawned with the group's shapes and its JSON read back (a stand-in peers script).
import { existsSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const MOCK = resolve("native/mock/libcuda_mock.so");
const ADDON = resolve("native/build/Release/zipvl_native.node");
process.env.ZIPVL_LIBCUDA = MOCK;
const { nvccVersion } = await import("../src/backends/cuda/compile.ts");
const ready = existsSync(MOCK) && existsSync(ADDON) && nvccVersion() !== null;
if (!ready) console.warn("NOTICE: mock libcuda, native addon or nvcc missing; the bench mock run is skipped");

// Runs under node (the "python" of this test): echoes its arguments in a peers.py-shaped JSON document.
const FAKE_PEERS = `
const a = process.argv.slice(2);
const v = (k) => a[a.indexOf(k) + 1];
const ns = v("--ns").split(",").map(Number);
console.error("progress goes to stderr");
const results = ns.flatMap((n) => [
  { kind: "dense_prefill", impl: "sdpa_cudnn", n, kept: 1, ms: 3, tflops: null, tbps: null, note: "", extra: {} },
  { kind: "ref_step", impl: "flash", n, kept: 0.3, ms: 6, tflops: null, tbps: null, note: "", extra: {} },
]);
console.log(JSON.stringify({ device: "mock", torch: "0", cuda: "0", cudnn: 1, shapes: { H: +v("--heads"), Hkv: +v("--kv-heads"), d: +v("--d") },
  results, floors: a.includes("floors,dense,ref,decode") ? { copy_tbps: 3, matmul_tflops: 600 } : {}, args: a }));
`;

describe.skipIf(!ready)("zipvl bench on the mock driver", () => {
  it("times zipvl's dense prefill, step (+graph, per kernel) and decode, then merges the peers' JSON", async () => {
    const root = mkdtempSync(join(tmpdir(), "zipvl-bench-root-"));
    mkdirSync(join(root, "bench"));
    writeFileSync(join(root, "bench/peers.py"), FAKE_PEERS);
    symlinkSync(resolve("test"), join(root, "test"));
    const { runBench } = await import("../src/bench/run.ts");
    const { markdownReport } = await import("../src/bench/report.ts");
    const logs: string[] = [];
    const res = await runBench({
      quick: true, peers: true, warmup: 1, iters: 2, root, python: process.execPath, log: (s) => void logs.push(s),
      groups: [{ d: 64, Hq: 8, Hkv: 2, ns: [300], kepts: [0.3], full: true }],
    });
    const kinds = res.rows.filter((r) => !r.impl.startsWith("sdpa") && !r.impl.startsWith("ref")).map((r) => `${r.kind}/${r.impl}`);
    expect(kinds).toEqual(["dense_prefill/zipvl", "step/zipvl", "step/zipvl_graph", "kernel/probe", "kernel/select", "kernel/sparse_attn", "decode/zipvl", "decode/zipvl"]);
    expect(res.rows.every((r) => r.ms === 1.5 || r.impl !== "zipvl" || r.kind === "kernel")).toBe(true); // the mock's events read 1.5 ms
    expect(res.rows.find((r) => r.impl === "ref_flash")).toMatchObject({ kind: "step", n: 300, kept: 0.3, d: 64, Hq: 8, Hkv: 2, ms: 6 });
    expect(res.floors).toEqual({ copyTbps: 3, matmulTflops: 600 });
    expect(logs.some((l) => /--ns 300 --d 64 --heads 8 --kv-heads 2/.test(l))).toBe(true);
    expect(markdownReport(res)).toMatch(/\| 300 \| 30% \| 1\.500 \| 1\.500 \| 6\.000 \| - \| 4\.00x \| - \|/);
  });
});
