// Decode split geometry (src/backends/cuda/schedule.ts): one wave of resident CTAs, short caches get fewer splits,
// and which steps merge their splits in the split kernel (one launch) instead of launching the combine kernel.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CUDA_PRESETS, cudaSpace } from "../src/tune/space.ts";
import { DECODE_MAX_SPLITS, DECODE_MIN_ROWS, decodeBlocksPerSM, decodeFused, decodeGeometry, decodeMma, decodeSplits, defaultConfig } from "../src/backends/cuda/schedule.ts";

describe("decode splits", () => {
  it("the bench shapes on 132 SMs", () => {
    // Hkv 40: floor(264 / 40) = 6 CTAs per head (240 <= 264 resident), not ceil (280: a partial second wave).
    expect(decodeSplits(132, 40, 65536)).toBe(6);
    expect(decodeSplits(132, 40, 864)).toBe(6);
    expect(decodeSplits(132, 5, 32768)).toBe(52);
    expect(decodeSplits(132, 5, 2458)).toBe(39); // ceil(2458 / 64)
    expect(decodeSplits(132, 40, 64)).toBe(1); // one split: one launch, no workspace
    expect(decodeSplits(132, 1, Number.MAX_SAFE_INTEGER, 4, 2)).toBe(DECODE_MAX_SPLITS);
  });

  it("never more CTAs than resident at once (scale 1), at least one split, no split under the minimum rows", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200 }), fc.integer({ min: 1, max: 128 }), fc.integer({ min: 1, max: 1 << 20 }), fc.constantFrom(2, 4, 8), (sm, Hkv, len, warps) => {
        const s = decodeSplits(sm, Hkv, len, 1, warps);
        expect(s).toBeGreaterThanOrEqual(1);
        expect(s).toBeLessThanOrEqual(DECODE_MAX_SPLITS);
        if (s > 1) {
          expect(Hkv * s).toBeLessThanOrEqual(decodeBlocksPerSM(warps) * sm);
          expect(Math.ceil(len / s)).toBeGreaterThanOrEqual(DECODE_MIN_ROWS / 2); // ceil(len / 64) splits at most
        }
      }),
    );
  });

  it("one launch unless the combine chain of one CTA would be long; fuse 0 forces the pair", () => {
    const c = { warps: 4 };
    expect(decodeFused(c, { Hq: 40, Hkv: 40, d: 128, splits: 6 })).toBe(true);
    expect(decodeFused(c, { Hq: 40, Hkv: 5, d: 128, splits: 52 })).toBe(true); // g 8: 256 column quads, 2 a thread
    expect(decodeFused(c, { Hq: 64, Hkv: 4, d: 128, splits: 16 })).toBe(false); // g 16: the combine kernel's grid
    expect(decodeFused({ warps: 8 }, { Hq: 64, Hkv: 4, d: 128, splits: 16 })).toBe(true);
    expect(decodeFused({ warps: 4, fuse: 0 }, { Hq: 40, Hkv: 40, d: 128, splits: 6 })).toBe(false);
    expect(decodeFused(c, { Hq: 40, Hkv: 40, d: 128, splits: 1 })).toBe(false); // nothing to merge
    const one = decodeGeometry(c, { Hq: 40, Hkv: 5, d: 128, splits: 1 });
    expect(one).toEqual({ split: { grid: [5, 1, 1], block: [128, 1, 1], smem: 0 }, combine: null });
    expect(decodeGeometry(c, { Hq: 64, Hkv: 4, d: 128, splits: 16 }).combine).toEqual({ grid: [64, 1, 1], block: [128, 1, 1], smem: 0 });
  });

  it("mma 1 takes the tensor-core pass only for 16-bit GQA groups of 4+; the launch is unchanged; off by default", () => {
    const on = { warps: 4, mma: 1 };
    expect(decodeMma(defaultConfig("decode", "bf16", 128), { dtype: "bf16", Hq: 40, Hkv: 5 })).toBe(false);
    expect(decodeMma(on, { dtype: "bf16", Hq: 40, Hkv: 5 })).toBe(true);
    expect(decodeMma(on, { dtype: "f16", Hq: 32, Hkv: 8 })).toBe(true); // g 4
    expect(decodeMma(on, { dtype: "bf16", Hq: 24, Hkv: 8 })).toBe(false); // g 3: SIMT
    expect(decodeMma(on, { dtype: "f32", Hq: 40, Hkv: 5 })).toBe(false);
    const x = { Hq: 40, Hkv: 5, d: 128, splits: 52 };
    expect(decodeGeometry(on, x)).toEqual(decodeGeometry({ warps: 4 }, x));
  });

  it("the tuner's decode space tries mma 1 for 16-bit GQA shapes only", () => {
    const H100 = CUDA_PRESETS.sm90!;
    const shape = { n: 8192, kept: 0.3, d: 128, gqa: 8, dtype: "bf16", Hq: 40 } as const;
    expect(cudaSpace("decode", shape, H100).configs.filter((c) => c.mma === 1).map((c) => c.warps)).toEqual([4, 4, 8, 8]);
    expect(cudaSpace("decode", { ...shape, gqa: 2 }, H100).configs.some((c) => c.mma === 1)).toBe(false);
    expect(cudaSpace("decode", { ...shape, dtype: "f32" }, H100).configs.some((c) => c.mma === 1)).toBe(false);
  });
});
