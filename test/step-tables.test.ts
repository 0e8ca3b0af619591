// StepTables (src/backends/cuda/step-tables.ts): a decode step's page tables kept on the device and updated in place
// between steps of the same batch. Property (fast-check): after any run of steps, batch changes, admissions and
// releases, what the device buffer holds reads back, list by list, as the pool's own tables: every real row's length,
// its first ceil(length / P) page ids and its append rows, and empty caches / row -1 for the bucket's padding.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SPAN_GAP, StepTables } from "../src/backends/cuda/step-tables.ts";
import type { DeviceBuffer } from "../src/runtime/native.ts";
import { createHostPool, groupsPerLayer, type PageLayout } from "../src/serve/pool.ts";

const runs = Number(process.env.ZIPVL_FC_RUNS ?? "0") || 60;

/** A device buffer in host memory (what write() puts where). */
function hostBuffer(bytes: number): DeviceBuffer & { words: Int32Array; writes: number; written: number } {
  const words = new Int32Array(bytes / 4);
  const b = {
    bytes,
    words,
    writes: 0,
    written: 0,
    write(src: ArrayBufferView, offset = 0) {
      b.writes++;
      b.written += src.byteLength;
      const s = new Int32Array(src.buffer, src.byteOffset, src.byteLength / 4);
      if (offset + src.byteLength > bytes) throw new RangeError("write past the buffer");
      words.set(s, offset / 4);
    },
    at: (o: number) => BigInt(o),
    free() {},
  };
  return b as unknown as DeviceBuffer & { words: Int32Array; writes: number; written: number };
}

const opArb = fc.oneof(
  { weight: 6, arbitrary: fc.constant({ kind: "step" as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("add" as const), tokens: fc.integer({ min: 0, max: 40 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("release" as const), which: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("pad" as const), extra: fc.integer({ min: 0, max: 3 }) }) },
);

describe("StepTables", () => {
  it("in-place updates read back as the pool's tables (steps, page growth past the slack, batch changes)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom<PageLayout>("per-layer", "per-head"),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 0, max: 2 }),
        fc.constantFrom(2, 4),
        fc.array(opArb, { minLength: 1, maxLength: 60 }),
        (layout, layers, slack, P, ops) => {
          const kvHeads = 2;
          const pool = createHostPool({ layers, kvHeads, headDim: 4, pageTokens: P, layout, numPages: 4000 });
          const G = groupsPerLayer(pool.geometry);
          const maxBatch = 8;
          let buf: ReturnType<typeof hostBuffer> | null = null;
          const st = new StepTables((n) => (buf = hostBuffer(n)), pool, layers, kvHeads, G, maxBatch, slack);
          const live: string[] = [];
          let next = 0, pad = 0;
          const admit = (tokens: number) => {
            const id = `s${next++}`;
            pool.addSequence(id);
            for (let l = 0; l < layers; l++) pool.reserveRows(id, l, Array.from({ length: G }, (_, g) => tokens + g * l), tokens + kvHeads * l);
            live.push(id);
          };
          admit(5);
          for (const op of ops) {
            if (op.kind === "add" && live.length < maxBatch - 3) admit(op.tokens);
            else if (op.kind === "release" && live.length > 1) pool.release(live.splice(op.which % live.length, 1)[0]!);
            else if (op.kind === "pad") pad = op.extra;
            if (op.kind !== "step") continue;
            const B = live.length, bucket = Math.min(maxBatch, B + pad);
            const rows = Array.from({ length: layers }, (_, l) => {
              const r = new Int32Array(kvHeads * B);
              live.forEach((s, b) => {
                const rr = pool.reserveRows(s, l, new Array<number>(G).fill(1), 1);
                for (let kv = 0; kv < kvHeads; kv++) r[kv * B + b] = rr[kv]!;
              });
              return r;
            });
            const { offsets, maxLen } = st.begin(live, bucket, rows, null);
            const w = buf!.words;
            let longest = 0;
            offsets.forEach((o, l) => {
              for (let e = 0; e < bucket * G; e++) {
                const len = w[o.lengths + e]!;
                if (e >= B * G) {
                  expect(len).toBe(0);
                  continue;
                }
                const seq = live[Math.floor(e / G)]!, g = e % G;
                expect(len).toBe(pool.lengths(seq, l)[g]);
                longest = Math.max(longest, len);
                const n = Math.ceil(len / P);
                expect(Array.from(w.subarray(o.pages + w[o.indptr + e]!, o.pages + w[o.indptr + e]! + n))).toEqual(pool.pageIds(seq, l, g).slice(0, n));
              }
              for (let kv = 0; kv < kvHeads; kv++)
                for (let b = 0; b < bucket; b++) expect(w[o.rows + kv * bucket + b]).toBe(b < B ? rows[l]![kv * B + b] : -1);
            });
            expect(maxLen).toBe(longest);
          }
          // Steps of an unchanged batch are updated in place (one repack per slack's worth of tokens at most).
          expect(st.stats.packs + st.stats.updates).toBe(ops.filter((o) => o.kind === "step").length);
        },
      ),
      { numRuns: runs },
    );
  });

  it("reserveOne / stepGrowth (the decode step's fast path) match reserveRows / growthPages on a twin pool", () => {
    fc.assert(
      fc.property(
        fc.constantFrom<PageLayout>("per-layer", "per-head"),
        fc.constantFrom(1, 2, 4),
        fc.array(fc.record({ seq: fc.integer({ min: 0, max: 2 }), layer: fc.integer({ min: 0, max: 1 }), reserve: fc.integer({ min: 0, max: 3 }) }), { minLength: 1, maxLength: 80 }),
        (layout, P, steps) => {
          const geo = { layers: 2, kvHeads: 3, headDim: 2, pageTokens: P, layout, numPages: 40 };
          const a = createHostPool(geo), b = createHostPool(geo);
          const G = groupsPerLayer(a.geometry);
          for (const p of [a, b]) for (const id of ["x", "y", "z"]) p.addSequence(id);
          for (const st of steps) {
            const id = ["x", "y", "z"][st.seq]!;
            expect(b.stepGrowth(id)).toBe([0, 1].reduce((n, l) => n + a.growthPages(id, l, new Array<number>(G).fill(1)), 0));
            if (st.reserve && a.availablePages >= st.reserve) (a.reserve(id, a.reservedOf(id) + st.reserve), b.reserve(id, b.reservedOf(id) + st.reserve));
            let ra: Int32Array | Error, rb: Int32Array | Error;
            try { ra = a.reserveRows(id, st.layer, new Array<number>(G).fill(1), 1); } catch (e) { ra = e as Error; }
            const out = new Int32Array(2 * 3).fill(-7);
            try { b.reserveOne(id, st.layer, out, 1, 2); rb = Int32Array.from({ length: 3 }, (_, kv) => out[kv * 2 + 1]!); } catch (e) { rb = e as Error; }
            if (ra instanceof Error || rb instanceof Error) {
              expect(String(rb)).toBe(String(ra));
              continue;
            }
            expect(Array.from(rb)).toEqual(Array.from(ra));
            expect(Array.from({ length: 3 }, (_, kv) => out[kv * 2])).toEqual([-7, -7, -7]);
            expect([b.freePages, b.availablePages, b.reservedOf(id), b.lengths(id, st.layer)]).toEqual([a.freePages, a.availablePages, a.reservedOf(id), a.lengths(id, st.layer)]);
          }
        },
      ),
      { numRuns: runs },
    );
  });

  it("a steady batch repacks once per slack's worth of pages and uploads a few KiB otherwise", () => {
    const layers = 4, kvHeads = 2, P = 16;
    const pool = createHostPool({ layers, kvHeads, headDim: 4, pageTokens: P, layout: "per-layer", numPages: 1000 });
    const bufs: ReturnType<typeof hostBuffer>[] = [];
    const st = new StepTables((n) => (bufs.push(hostBuffer(n)), bufs[0]!), pool, layers, kvHeads, 1, 4, 2);
    pool.addSequence("a");
    for (let l = 0; l < layers; l++) pool.reserveRows("a", l, [100], 100);
    const header = 4 * layers * (2 + 1 + kvHeads); // indptr (2), lengths (1), rows (kvHeads) a layer at bucket 1
    let cap = 0;
    for (let i = 0; i < 4 * P; i++) {
      const rows = Array.from({ length: layers }, (_, l) => pool.reserveRows("a", l, [1], 1));
      const before = bufs[0]!.written, packs = st.stats.packs;
      st.begin(["a"], 1, rows, null);
      const len = 101 + i;
      if (st.stats.packs !== packs) cap = Math.ceil(len / P) + 2;
      // An update uploads the fixed part, plus, when a page was added, the span from layer 0's new id to the last
      // layer's (one list of `cap` entries a layer).
      else expect(bufs[0]!.written - before).toBe(header + (len % P === 1 ? 4 * ((layers - 1) * cap + 1) : 0));
    }
    // 101..164 tokens: 7 -> 11 pages. Packed at 7 pages with 2 free entries a list (capacity 9), repacked when the
    // 10th page comes (capacity 12).
    expect(bufs.length).toBe(1);
    expect(st.stats.packs).toBe(2);
    expect(st.stats.updates).toBe(4 * P - 2);
  });

  it("new page ids go up in spans: far-apart changes as separate small copies, near ones merged", () => {
    const layers = 2, kvHeads = 64, P = 16, G = kvHeads; // per-head: 64 lists a layer
    const pool = createHostPool({ layers, kvHeads, headDim: 4, pageTokens: P, layout: "per-head", numPages: 40000 });
    const bufs: ReturnType<typeof hostBuffer>[] = [];
    const st = new StepTables((n) => (bufs.push(hostBuffer(n)), bufs[0]!), pool, layers, kvHeads, G, 1);
    pool.addSequence("a");
    // Head 0 of each layer fills its 256th page with the first step; the other heads are 4100 tokens in.
    const counts = Array.from({ length: kvHeads }, (_, g) => (g === 0 ? 4095 : 4100));
    for (let l = 0; l < layers; l++) pool.reserveRows("a", l, counts, 4100);
    const step = () => st.begin(["a"], 1, Array.from({ length: layers }, (_, l) => pool.reserveRows("a", l, new Array<number>(kvHeads).fill(1), 1)), null);
    const b = bufs[0]!;
    const header = 4 * layers * (2 * G + 1 + kvHeads);
    const upload = (f: () => void) => {
      const w0 = b.writes, n0 = b.written, s0 = st.stats.spans;
      f();
      return { writes: b.writes - w0, bytes: b.written - n0, spans: st.stats.spans - s0 };
    };
    step(); // packs: head 0 lists hold 256 pages + 8 free entries, the others 257 + 8
    let lay = step(); // head 0 of both layers crosses into page 257: two ids, a layer's lists apart
    const at = (l: number, g: number) => lay.offsets[l]!.pages + b.words[lay.offsets[l]!.indptr + g]!;
    expect(at(1, 0) - at(0, 0)).toBe(264 + 63 * 265);
    expect(at(1, 0) - at(0, 0)).toBeGreaterThan(SPAN_GAP);
    expect(st.stats.updates).toBe(1);
    expect(st.stats.spans).toBe(2);
    // Both new ids (page 257 of head 0) are the pool's.
    for (let l = 0; l < layers; l++) {
      const t = pool.tables(["a"], l);
      expect(b.words[at(l, 0) + 256]).toBe(t.pages[t.indptr[0]! + 256]);
    }
    // Steps 3..12 add no page: the fixed part only.
    for (let i = 3; i <= 12; i++) expect(upload(step)).toEqual({ writes: 1, bytes: header, spans: 0 });
    // Step 13: heads 1..63 of both layers reach 4113 tokens (page 258): 126 ids 265 words apart, one span from layer
    // 0's head 1 to layer 1's head 63.
    let u = { writes: 0, bytes: 0, spans: 0 };
    u = upload(() => (lay = step()));
    const first = at(0, 1) + 257, last = at(1, 63) + 257;
    expect(u).toEqual({ writes: 2, bytes: header + 4 * (last + 1 - first), spans: 1 });
  });
});
