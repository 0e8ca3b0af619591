// The paged KV pool (exact page accounting, all-or-nothing allocation) and the host paged decode attention
// against the interpreter's decode semantics (src/interp/kernels.ts decodeAttention), on random ragged batches,
// page sizes, layouts and split counts (fast-check). The dense reference caches are kept by the test itself, so
// the comparison covers the pool's row placement as well as the attention.
import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { nvccFlags, nvccVersion, parsePtxas } from "../src/backends/cuda/compile.ts";
import { PAGED_ARG_LAYOUTS, packStepTables, renderPaged } from "../src/backends/cuda/paged.ts";
import { knobs } from "../src/knobs.ts";
import { decodeAttention } from "../src/interp/kernels.ts";
import { ServeError } from "../src/serve/errors.ts";
import { pagedDecodeReference } from "../src/serve/paged-ref.ts";
import { createHostPool, type PageLayout } from "../src/serve/pool.ts";
import { xorshift32 } from "../src/interp/probes.ts";

const runs = Number(process.env.ZIPVL_FC_RUNS ?? "0") || 60;

/** Uniform values in [-0.5, 0.5) from the shared xorshift32 (src/interp/probes.ts). */
function rng(seed: number): () => number {
  const next = xorshift32(seed);
  return () => next() / 2 ** 32 - 0.5;
}
const randArr = (n: number, r: () => number): Float32Array => Float32Array.from({ length: n }, () => 2 * r());

const caseArb = fc.record({
  batch: fc.integer({ min: 1, max: 5 }),
  Hkv: fc.integer({ min: 1, max: 3 }),
  g: fc.constantFrom(1, 2, 3, 4),
  d: fc.constantFrom(4, 8, 16),
  pageTokens: fc.constantFrom(1, 3, 8, 16),
  layout: fc.constantFrom<PageLayout>("per-layer", "per-head"),
  splits: fc.integer({ min: 1, max: 6 }),
  seed: fc.nat(),
  chunks: fc.array(fc.integer({ min: 0, max: 20 }), { minLength: 1, maxLength: 4 }),
});

describe("paged decode attention (host) vs interpreter decode", () => {
  it("random ragged batches, page sizes, layouts and splits", () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const r = rng(c.seed);
        const Hq = c.Hkv * c.g;
        const pool = createHostPool({ layers: 2, kvHeads: c.Hkv, headDim: c.d, pageTokens: c.pageTokens, layout: c.layout, numPages: 4096 });
        const layer = 1;
        // dense[b][kv] = rows appended so far (the test's own cache).
        const dense: { k: number[][]; v: number[][] }[][] = [];
        const ids = Array.from({ length: c.batch }, (_, b) => `s${b}`);
        for (const id of ids) {
          pool.addSequence(id);
          const per: { k: number[][]; v: number[][] }[] = Array.from({ length: c.Hkv }, () => ({ k: [], v: [] }));
          dense.push(per);
          // Several appends (prefill's kept rows, then decode tokens), ragged per head in the per-head layout.
          for (const chunk of c.chunks) {
            const t = chunk + Math.floor((r() + 0.5) * 3);
            const counts = Array.from({ length: c.Hkv }, () => (c.layout === "per-head" ? Math.floor((r() + 0.5) * (t + 1)) : t));
            const k = randArr(c.Hkv * t * c.d, r);
            const v = randArr(c.Hkv * t * c.d, r);
            pool.append(id, layer, k, v, t, counts);
            for (let kv = 0; kv < c.Hkv; kv++)
              for (let i = 0; i < counts[kv]!; i++) {
                per[kv]!.k.push(Array.from(k.subarray((kv * t + i) * c.d, (kv * t + i + 1) * c.d)));
                per[kv]!.v.push(Array.from(v.subarray((kv * t + i) * c.d, (kv * t + i + 1) * c.d)));
              }
          }
        }
        const q = randArr(c.batch * Hq * c.d, r);
        const scale = 1 / Math.sqrt(c.d);
        const got = pagedDecodeReference({ geometry: pool.geometry, k: pool.storage.k, v: pool.storage.v, tables: pool.tables(ids, layer), q, Hq, scale, splits: c.splits });
        for (let b = 0; b < c.batch; b++) {
          for (let kv = 0; kv < c.Hkv; kv++) {
            // The interpreter's decode for this KV head's query group over its dense cache.
            const len = dense[b]![kv]!.k.length;
            const qs = Float64Array.from(q.subarray((b * Hq + kv * c.g) * c.d, (b * Hq + (kv + 1) * c.g) * c.d));
            const want = decodeAttention(qs, Float64Array.from(dense[b]![kv]!.k.flat()), Float64Array.from(dense[b]![kv]!.v.flat()), c.g, 1, len, c.d, scale, (s) => s);
            for (let i = 0; i < c.g * c.d; i++) {
              const a = got[(b * Hq + kv * c.g) * c.d + i]!;
              expect(Math.abs(a - want[i]!), JSON.stringify({ b, kv, i, a, w: want[i], len, dense: dense[b]![kv] })).toBeLessThanOrEqual(1e-12 * (1 + Math.abs(want[i]!)));
            }
          }
        }
      }),
      { numRuns: runs },
    );
  });
});

describe("paged KV pool", () => {
  it("exact accounting under random appends and releases; pages never shared", () => {
    fc.assert(
      fc.property(
        fc.constantFrom<PageLayout>("per-layer", "per-head"),
        fc.integer({ min: 1, max: 9 }),
        fc.array(fc.tuple(fc.nat(5), fc.nat(2), fc.integer({ min: 0, max: 30 }), fc.boolean()), { maxLength: 60 }),
        (layout, pageTokens, ops) => {
          const pool = createHostPool({ layers: 3, kvHeads: 2, headDim: 4, pageTokens, layout, numPages: 40 });
          for (const [s, layer, t, release] of ops) {
            const id = `q${s}`;
            if (release) {
              pool.release(id);
              continue;
            }
            if (!pool.has(id)) pool.addSequence(id);
            const before = { free: pool.freePages, lens: [...pool.lengths(id, layer)] };
            const need = pool.growthPages(id, layer, before.lens.map(() => t));
            try {
              pool.append(id, layer, new Float32Array(2 * t * 4), new Float32Array(2 * t * 4), t);
              expect(pool.freePages).toBe(before.free - need);
            } catch (e) {
              // All-or-nothing: a refused append changes nothing.
              expect((e as ServeError).code).toBe("ZV7002");
              expect(need).toBeGreaterThan(before.free);
              expect(pool.freePages).toBe(before.free);
              expect(pool.lengths(id, layer)).toEqual(before.lens);
            }
            // Accounting: used pages = the sum over sequences = what their lengths need; no page in two tables.
            let used = 0;
            const seen = new Set<number>();
            for (const sid of pool.sequences) {
              used += pool.pagesOf(sid);
              for (let l = 0; l < 3; l++) {
                const tb = pool.tables([sid], l);
                for (const ln of tb.lengths) expect(tb.pages.length).toBeGreaterThanOrEqual(Math.ceil(ln / pageTokens));
                let exact = 0;
                for (const ln of pool.lengths(sid, l)) exact += Math.ceil(ln / pageTokens);
                expect(tb.pages.length).toBe(exact);
                for (const p of tb.pages) {
                  expect(seen.has(p)).toBe(false);
                  seen.add(p);
                }
              }
            }
            expect(pool.usedPages).toBe(used);
            expect(pool.usedBytes + pool.freeBytes).toBe(40 * pool.pageBytes);
          }
        },
      ),
      { numRuns: runs },
    );
  });

  it("page bytes per layout; reservations hold pages back from other sequences", () => {
    const a = createHostPool({ layers: 1, kvHeads: 4, headDim: 8, pageTokens: 16, layout: "per-layer", numPages: 10, elemBytes: 2 });
    expect(a.pageBytes).toBe(2 * 4 * 16 * 8 * 2);
    const b = createHostPool({ layers: 1, kvHeads: 4, headDim: 8, pageTokens: 16, layout: "per-head", numPages: 10, elemBytes: 2 });
    expect(b.pageBytes).toBe(2 * 16 * 8 * 2);
    a.addSequence("x");
    a.addSequence("y");
    a.reserve("x", 8);
    expect(a.availablePages).toBe(2);
    expect(() => a.append("y", 0, new Float32Array(4 * 48 * 8), new Float32Array(4 * 48 * 8), 48)).toThrow(/ZV7002/);
    a.append("x", 0, new Float32Array(4 * 48 * 8), new Float32Array(4 * 48 * 8), 48); // drawn from x's reservation
    expect(a.reservedOf("x")).toBe(5);
    expect(a.availablePages).toBe(2);
    a.release("x");
    expect(a.availablePages).toBe(10);
    expect(() => createHostPool({ layers: 1, kvHeads: 0, headDim: 8, pageTokens: 16, layout: "per-layer", numPages: 10 })).toThrow(/ZV7001/);
    expect(() => a.lengths("nope", 0)).toThrow(/ZV7003/);
  });
});

const haveNvcc = nvccVersion() !== null;
if (!haveNvcc) console.warn(`NOTICE: nvcc not found at ${knobs.nvcc}; the paged kernel compile test is skipped`);

describe("decode step tables (one upload per step, offsets fixed per bucket)", () => {
  it("a bucket's padding rows get empty caches and no append rows", () => {
    // 2 layers, 3 sequences in a bucket of 4, per-head groups (G = 2 KV heads).
    const G = 2, B = 3, bucket = 4;
    const table = (l: number) => ({
      batch: B, groups: G,
      indptr: Int32Array.from({ length: B * G + 1 }, (_, e) => 2 * e),
      pages: Int32Array.from({ length: 2 * B * G }, (_, i) => 100 * l + i),
      lengths: Int32Array.from({ length: B * G }, (_, e) => 10 + e + l),
    });
    const rows = [0, 1].map((l) => Int32Array.from({ length: G * B }, (_, i) => 1000 * l + i));
    const { blob, offsets } = packStepTables([table(0), table(1)], rows, bucket, G);
    offsets.forEach((o, l) => {
      const t = table(l);
      const lengths = Array.from(blob.subarray(o.lengths, o.lengths + bucket * G));
      expect(lengths).toEqual([...Array.from(t.lengths), 0, 0]);
      const r = Array.from(blob.subarray(o.rows, o.rows + G * bucket));
      expect(r).toEqual([1000 * l + 0, 1000 * l + 1, 1000 * l + 2, -1, 1000 * l + 3, 1000 * l + 4, 1000 * l + 5, -1]);
      // Real rows keep their page lists (indptr into the shared page area).
      expect(Array.from(blob.subarray(o.pages + blob[o.indptr]!, o.pages + blob[o.indptr + 1]!))).toEqual(Array.from(t.pages.subarray(0, 2)));
    });
  });
});

describe.skipIf(!haveNvcc)("paged CUDA kernels compile (nvcc)", () => {
  it("bf16 d128, f32 d128, f16 d80, sm_90a and sm_80, every entry, no spills; arg layouts match the header", async () => {
    const run = promisify(execFile);
    const dir = mkdtempSync(join(tmpdir(), "zipvl-paged-"));
    const jobs = [];
    for (const [dt, d] of [["bf16", 128], ["f32", 128], ["f16", 80]] as const)
      for (const arch of [90, 80] as const) {
        const k = renderPaged(dt, d);
        const src = join(dir, `${k.name}.sm${arch}.cu`);
        writeFileSync(src, k.source);
        jobs.push({ name: k.name, arch, src });
      }
    // The argument blocks: a host file that checks each field's offset against PAGED_ARG_LAYOUTS.
    const checks = Object.entries(PAGED_ARG_LAYOUTS).flatMap(([st, fields]) => fields.map((f, i) => `static_assert(offsetof(${st}, ${f}) == ${8 * i}, "${st}.${f}");`));
    const hdr = join(dir, "layout.cu");
    writeFileSync(hdr, `#include <cstddef>\n#include "zv_paged.cuh"\n${checks.join("\n")}\n${Object.entries(PAGED_ARG_LAYOUTS).map(([st, f]) => `static_assert(sizeof(${st}) == ${8 * f.length}, "${st} size");`).join("\n")}\nint main() { return 0; }\n`);
    const layout = run(knobs.nvcc, [...nvccFlags(90), "-c", "-o", join(dir, "layout.o"), hdr]);
    const results = [];
    for (let i = 0; i < jobs.length; i += 2) {
      const batch = jobs.slice(i, i + 2).map(async (j) => {
        const { stdout, stderr } = await run(knobs.nvcc, [...nvccFlags(j.arch), "-cubin", "-Xptxas", "-v", "-o", `${j.src}.cubin`, j.src], { maxBuffer: 1 << 24 });
        return { ...j, reports: parsePtxas(`${stdout}\n${stderr}`) };
      });
      results.push(...(await Promise.all(batch)));
    }
    await layout;
    for (const r of results) {
      console.log(r.reports.map((p) => `${p.kernel.padEnd(34)} sm_${r.arch} regs ${p.registers} spill ${p.spillStores}/${p.spillLoads}`).join("\n"));
      // split, split_g1, split_g2, combine, append
      expect(r.reports.map((p) => p.kernel.replace(/^zv_paged_\w+?_d\d+_/, "")).sort()).toEqual(["append", "combine", "split", "split_g1", "split_g2"]);
      for (const p of r.reports) expect(p.spillStores + p.spillLoads, `${p.kernel} sm_${r.arch}`).toBe(0);
    }
  });
});
