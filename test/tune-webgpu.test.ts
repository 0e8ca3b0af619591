// zipvl tune --backend webgpu end to end on the adapter (lavapipe in CI): WGSL stages timed and verified against
// chooseConfig's output. A config the pruning now rejects (fewer threads than keys per tile) is injected to show the
// verification scores it Infinity; the record is written and the webgpu executor picks its config up.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createWebGpu, type ZvGpu } from "../src/runtime/webgpu.ts";
import { WebGpuError } from "../src/runtime/webgpu-errors.ts";
import { compileFile } from "../src/driver.ts";
import { wgslHarness, wgslTasks } from "../src/tune/webgpu.ts";
import { parseShapes } from "../src/tune/shapes.ts";
import { search } from "../src/tune/search.ts";
import { lookup, setNoticeSink, writeRecord } from "../src/tune/records.ts";
import { webgpuKey } from "../src/tune/keys.ts";
import { tunedWgslConfig } from "../src/tune/lookup.ts";

async function tryDevice(): Promise<ZvGpu | null> {
  try {
    return await createWebGpu();
  } catch (e) {
    if (e instanceof WebGpuError && (e.code === "ZV3101" || e.code === "ZV3102")) {
      console.warn(`\n[tune-webgpu.test] SKIPPING: ${e.message}\n`);
      return null;
    }
    throw e;
  }
}
const dev = await tryDevice();

describe.skipIf(!dev)("zipvl tune on WebGPU", () => {
  it("verifies every candidate against the fallback and records the best", async () => {
    const p = compileFile("dsl/variants/topk-ratio.ts").final;
    const all = wgslTasks(dev!, parseShapes("n=200:H=4:gqa=2:d=64:dtype=f32"));
    expect(all.map((t) => t.stage)).toEqual(["probe", "select", "attention", "decode"]);
    expect(all[2]!.space.configs.every((c) => c.attnBQ! * c.attnTPR! >= c.attnBK!)).toBe(true);
    const attn = all[2]!;
    const bad = { attnBQ: 4, attnBK: 16, attnTPR: 2 }; // 8 threads for 16 key positions
    const ok = { attnBQ: 4, attnBK: 16, attnTPR: 4 };
    const tasks = [{ ...attn, space: { ...attn.space, configs: [attn.space.configs[0]!, bad, ok] } }, { ...all[3]!, space: { ...all[3]!.space, configs: all[3]!.space.configs.slice(0, 2) } }];
    const r = await search(tasks, wgslHarness(dev!, p, { warmup: 0, iters: 1 }), { budgetS: 120, write: () => {} });
    expect(r[0]!.trials.map((t) => t.verdict)).toEqual(["ok", "wrong output", "ok"]);
    expect(r[0]!.trials[1]!.ms).toBe(Infinity);
    expect(r[1]!.trials.every((t) => t.verdict === "ok")).toBe(true);
    const dir = mkdtempSync(join(tmpdir(), "zipvl-tune-wgsl-"));
    const key = webgpuKey(dev!.info);
    setNoticeSink(() => {});
    writeRecord(key, p.name, [{ ...r[0]!.entry!, config: ok }], dir);
    expect(lookup(key, "attention", attn.bucket, dir)).toEqual(ok);
    // The executor's selection (default folder) finds nothing for this adapter unless a record is there.
    expect(tunedWgslConfig({ ...key, device: "no such adapter" }, "attention", "prefill", { Hq: 4, Hkv: 2, n: 200, d: 64, dtype: "f32", kept: 0.3 })).toEqual({});
  });
});
