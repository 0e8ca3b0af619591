// Tests for src/io: dtype codecs, host tensors, the safetensors reader/writer and the seeded RNG.
// Fixtures come from test/fixtures/make.mjs (hand-crafted bytes, independent of the writer).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { DTYPES, bf16BitsToFloat, f16BitsToFloat, floatToBf16Bits, floatToF16Bits, intRange,
  isFloatDType, roundTo } from '../src/io/dtype.ts';
import { IoError } from '../src/io/errors.ts';
import { Rng, randomTensor, splitmix64 } from '../src/io/random.ts';
import { encodeSafetensors, readSafetensors, readSafetensorsHeader, writeSafetensors } from '../src/io/safetensors.ts';
import { type Tensor, at, describe as describeT, fromFloat32, makeTensor, numel, reshape, set, strides,
  tensorFrom, tensorsEqual, toFloat32Array } from '../src/io/tensor.ts';

const fixture = (name: string): string => join(import.meta.dirname, 'fixtures', name);
const tmp = mkdtempSync(join(tmpdir(), 'zipvl-st-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Builds a file from verbatim header text + data, for malformed-input tests. */
function rawFile(header: string, data: number[] = [], n = Buffer.byteLength(header)): Uint8Array {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(n));
  return Buffer.concat([len, Buffer.from(header), Buffer.from(data)]);
}

function expectIoError(f: () => unknown, code: string, ...mentions: string[]): void {
  try { f(); } catch (e) {
    expect(e).toBeInstanceOf(IoError);
    expect((e as IoError).code).toBe(code);
    for (const m of mentions) expect((e as IoError).message).toContain(m);
    return;
  }
  throw new Error(`expected IoError ${code}`);
}

describe('dtype codecs', () => {
  it('decodes known f16 / bf16 bit patterns', () => {
    expect([0x3c00, 0x7bff, 0x0001, 0x03ff, 0x0400, 0xfc00, 0x8000, 0x7e00].map(f16BitsToFloat))
      .toEqual([1, 65504, 2 ** -24, 2 ** -14 - 2 ** -24, 2 ** -14, -Infinity, -0, NaN]); // toEqual: -0 != 0
    expect([0x3f80, 0x7f7f, 0x0001, 0x7f80].map(bf16BitsToFloat)).toEqual([1, (2 - 2 ** -7) * 2 ** 127, 2 ** -133, Infinity]);
  });

  it('encodes with round-to-nearest-even, overflow to Inf and canonical NaN', () => {
    expect(floatToF16Bits(1)).toBe(0x3c00);
    expect(floatToF16Bits(65519)).toBe(0x7bff);
    expect(floatToF16Bits(65520)).toBe(0x7c00); // max + half ulp rounds (to even) to Inf
    expect(floatToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie -> even
    expect(floatToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(floatToF16Bits(2 ** -25)).toBe(0x0000); // tie between 0 and min subnormal
    expect(floatToF16Bits(3 * 2 ** -25)).toBe(0x0002);
    expect(floatToF16Bits(-0)).toBe(0x8000);
    expect(floatToF16Bits(NaN)).toBe(0x7e00);
    expect(floatToF16Bits(-1e-30)).toBe(0x8000);
    expect(floatToBf16Bits(1)).toBe(0x3f80);
    expect(floatToBf16Bits(3.4028234663852886e38)).toBe(0x7f80); // f32 max -> Inf, as torch does
    expect(floatToBf16Bits(NaN)).toBe(0x7fc0);
  });

  it('round trips all bit patterns and rounds every midpoint to even (exhaustive)', () => {
    // Neighbours of a midpoint: f32 steps exercise the fast f32-bit path, tiny f64 nudges the exact path.
    const step = (x: number, d: number): number => { const u = new Uint32Array(Float32Array.of(x).buffer); u[0]! += d; return new Float32Array(u.buffer)[0]!; };
    for (const [enc, dec, maxFinite] of [[floatToF16Bits, f16BitsToFloat, 0x7bff], [floatToBf16Bits, bf16BitsToFloat, 0x7f7f]] as const) {
      for (let b = 0; b <= 0xffff; b++) if (!Number.isNaN(dec(b)) && enc(dec(b)) !== b) throw new Error(`0x${b.toString(16)}`);
      for (let b = 0; b < maxFinite; b++) {
        const mid = (dec(b) + dec(b + 1)) / 2;
        if (enc(mid) !== (b % 2 === 0 ? b : b + 1)) throw new Error(`midpoint after 0x${b.toString(16)}`);
        const below = [mid * (1 - 2 ** -40), step(mid, -1), step(mid, -1) * (1 + 2 ** -40)];
        const above = [mid * (1 + 2 ** -40), step(mid, 1), step(mid, 1) * (1 - 2 ** -40)];
        if (below.some((x) => enc(x) !== b) || above.some((x) => enc(x) !== b + 1)) throw new Error(`near 0x${b.toString(16)}`);
      }
    }
  });

  it('bf16 matches the f32 bit trick used by torch for every f32', () => {
    const view = new DataView(new ArrayBuffer(4));
    fc.assert(fc.property(fc.float({ noNaN: true }), (x) => {
      view.setFloat32(0, x);
      const u = view.getUint32(0);
      expect(floatToBf16Bits(x)).toBe((u + 0x7fff + ((u >>> 16) & 1)) >>> 16);
    }), { numRuns: 2000 });
  });

  it('roundTo rounds into each dtype', () => {
    expect(roundTo('f32', 0.1)).toBe(Math.fround(0.1));
    expect(roundTo('f16', 0.1)).toBe(f16BitsToFloat(0x2e66));
    expect(roundTo('bf16', 1 / 3)).toBe(bf16BitsToFloat(0x3eab));
    expect([2.5, 3.5, -2.5, 1e12, NaN, -0].map((x) => roundTo('i32', x))).toEqual([2, 4, -2, 2 ** 31 - 1, 0, 0]);
    expect([-3, 300, 7.2].map((x) => roundTo('u8', x))).toEqual([0, 255, 7]);
    expect([0, 2, NaN].map((x) => roundTo('bool', x))).toEqual([0, 1, 1]);
    fc.assert(fc.property(fc.constantFrom(...DTYPES), fc.double(), (d, x) => {
      expect(roundTo(d, roundTo(d, x))).toBe(roundTo(d, x)); // idempotent
    }));
  });
});

describe('host tensors', () => {
  it('indexes, reshapes and describes', () => {
    const t = tensorFrom('f16', [2, 3], [1, 2, 3, 4, 5, 0.1]);
    expect(describeT(t)).toBe('f16[2,3]');
    expect([numel(t), numel([])]).toEqual([6, 1]);
    expect(strides([2, 3, 4])).toEqual([12, 4, 1]);
    expect(at(t, [1, 2])).toBe(roundTo('f16', 0.1));
    set(t, [0, 1], 1e6);
    expect(at(t, [0, 1])).toBe(Infinity);
    const r = reshape(t, [3, -1]);
    expect([r.shape, at(r, [2, 1])]).toEqual([[3, 2], at(t, [1, 2])]);
    expect(() => reshape(t, [4, -1])).toThrow(RangeError);
    expect(() => at(t, [2, 0])).toThrow(RangeError);
    expect(() => set(makeTensor('u8', [1]), [0], 256)).toThrow(RangeError);
    expect(() => makeTensor('f32', [2], new Int32Array(2))).toThrow(TypeError);
    expect(describeT(makeTensor('i32', []))).toBe('i32[]');
    expect([...toFloat32Array(fromFloat32('bf16', [2], new Float32Array([1, 1.00390625])))]).toEqual([1, 1]);
  });
});

// Arbitrary tensors: float values from doubles and from raw 16-bit patterns (hits subnormals,
// ±0, ±Inf, NaN for f16/bf16); integer values across the host range.
const tensorArb: fc.Arbitrary<Tensor> = fc.constantFrom(...DTYPES).chain((dtype) =>
  fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }).chain((shape) => {
    const n = numel(shape);
    const [lo, hi] = isFloatDType(dtype) ? [0, 0] : intRange(dtype);
    const value = isFloatDType(dtype)
      ? fc.oneof(fc.double(), fc.integer({ min: 0, max: 0xffff }).map(dtype === 'bf16' ? bf16BitsToFloat : f16BitsToFloat))
        .map((x) => roundTo(dtype, x))
      : fc.integer({ min: lo, max: hi });
    return fc.array(value, { minLength: n, maxLength: n }).map((vs) =>
      makeTensor(dtype, shape, isFloatDType(dtype) ? Float64Array.from(vs) : Int32Array.from(vs)));
  }));
const nameArb = fc.string({ unit: 'grapheme', maxLength: 8 }).filter((s) => s !== '__metadata__');

describe('safetensors round trips', () => {
  it('preserves tensors and metadata exactly, with a canonical layout', () => {
    fc.assert(fc.property(
      fc.uniqueArray(fc.tuple(nameArb, tensorArb), { selector: ([n]) => n, maxLength: 5 }),
      fc.option(fc.array(fc.tuple(fc.string(), fc.string()), { maxLength: 3 }), { nil: undefined }),
      (entries, metaPairs) => {
        const meta = metaPairs && Object.fromEntries(metaPairs);
        const bytes = encodeSafetensors(new Map(entries), meta);
        const back = readSafetensors(bytes);
        expect(back.tensors.size).toBe(entries.length);
        for (const [name, t] of entries) expect(tensorsEqual(back.tensors.get(name)!, t)).toBe(true);
        expect(back.metadata).toEqual(meta ?? {});
        // Header length is a multiple of 8; data is contiguous, in UTF-8 name order, and fills the file.
        const n = Number(Buffer.from(bytes).readBigUInt64LE(0));
        expect(n % 8).toBe(0);
        const header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + n)).toString()) as Record<string, { data_offsets: [number, number] }>;
        delete header['__metadata__'];
        const byName = Object.keys(header).sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
        let end = 0;
        for (const k of byName) {
          expect(header[k]!.data_offsets[0]).toBe(end);
          end = header[k]!.data_offsets[1];
        }
        expect(bytes.length).toBe(8 + n + end);
        // Writing what was read reproduces the bytes.
        expect(Buffer.compare(Buffer.from(encodeSafetensors(back.tensors, back.metadata)), Buffer.from(bytes))).toBe(0);
      }), { numRuns: 300 });
  });

  it('round trips through a file on disk', () => {
    const path = join(tmp, 'rt.safetensors');
    const t = { q: randomTensor('bf16', [2, 3, 4], 1), idx: tensorFrom('i64', [3], [0, -7, 2 ** 31 - 1]) };
    writeSafetensors(path, t, { note: 'x' });
    const back = readSafetensors(path);
    expect(tensorsEqual(back.tensors.get('q')!, t.q) && tensorsEqual(back.tensors.get('idx')!, t.idx)).toBe(true);
    expect(readSafetensorsHeader(path).tensors.get('q')).toEqual({ dtype: 'bf16', shape: [2, 3, 4], dataOffsets: [24, 72] });
  });
});

describe('fixtures', () => {
  it('reads every dtype from the reference-layout fixture', () => {
    const { tensors: t, metadata } = readSafetensors(fixture('basic.safetensors'));
    expect(metadata).toEqual({ format: 'pt', zipvl: 'fixture' });
    const vals = (k: string): number[] => [...t.get(k)!.data];
    expect(vals('a_f32')).toEqual([0, 1, -2.5, 0.15625, 2 ** -149, -0]); // toEqual tells -0 from 0
    expect(t.get('a_f32')!.shape).toEqual([2, 3]);
    expect(vals('b_f16')).toEqual([1, 65504, 2 ** -24, -2]);
    expect(vals('c_bf16')).toEqual([1, -3, Infinity, 2 ** -133]);
    expect(vals('d_i32')).toEqual([-1, 2147483647, -2147483648]);
    expect(vals('e_i64')).toEqual([-5, 1234567]);
    expect(vals('f_u8')).toEqual([0, 7, 255]);
    expect(vals('g_bool')).toEqual([1, 0]);
    expect([describeT(t.get('h_f64')!), vals('h_f64')]).toEqual(['f64[]', [Math.PI]]);
    expect(describeT(t.get('i_empty')!)).toBe('f32[0,4]');
  });

  it('writer output matches the reference layout byte for byte (padding, ordering, metadata first)', () => {
    const bytes = readFileSync(fixture('basic.safetensors'));
    const { tensors, metadata } = readSafetensors(bytes);
    const path = join(tmp, 'basic.safetensors');
    writeSafetensors(path, tensors, metadata);
    expect(Buffer.compare(readFileSync(path), bytes)).toBe(0);
    expect(bytes.subarray(8, 24).toString()).toBe('{"__metadata__":');
  });

  it('reads unpadded headers, shuffled keys and unaligned offsets', () => {
    const { tensors: t, metadata } = readSafetensors(fixture('unaligned.safetensors'));
    expect(metadata).toEqual({});
    expect([...t.get('b')!.data]).toEqual([9, 8, 7]);
    expect([...t.get('w')!.data]).toEqual([1.5, -0.25]);
    expect([...t.get('h')!.data]).toEqual([-1]);
    expect(t.get('h')!.shape).toEqual([1, 1]);
  });

  it('reads f16/bf16 special values', () => {
    const { tensors: t } = readSafetensors(fixture('special.safetensors'));
    expect([...t.get('f16')!.data]).toEqual([0, -0, 1, 65504, 2 ** -24, 2 ** -14 - 2 ** -24, 2 ** -14, Infinity, -Infinity, NaN]);
    expect([...t.get('bf16')!.data]).toEqual([1, (2 - 2 ** -7) * 2 ** 127, 2 ** -126, 2 ** -126 - 2 ** -133, Infinity, -Infinity, NaN, -0]);
  });
});

describe('errors', () => {
  const entry = (e: string): string => `{"t":${e}}`;
  it('ZV2001 file not found', () => {
    expectIoError(() => readSafetensors(join(tmp, 'missing.safetensors')), 'ZV2001', 'missing.safetensors', 'not found');
    expectIoError(() => readSafetensorsHeader(join(tmp, 'missing.safetensors')), 'ZV2001');
  });
  it('ZV2002 not safetensors / truncated / header too large', () => {
    expectIoError(() => readSafetensors(fixture('truncated.safetensors')), 'ZV2002', 'truncated.safetensors', 'truncated');
    expectIoError(() => readSafetensorsHeader(fixture('truncated.safetensors')), 'ZV2002', 'truncated');
    expectIoError(() => readSafetensors(new Uint8Array(5)), 'ZV2002', '<buffer>');
    expectIoError(() => readSafetensors(rawFile('{}', [], 100_000_001)), 'ZV2002', 'limit');
    expectIoError(() => readSafetensors(Buffer.from('hello, this is plain text\n')), 'ZV2002');
    expectIoError(() => readSafetensors(rawFile('[1,2]   ')), 'ZV2002', 'does not start');
  });
  it('ZV2003 bad header JSON or entry', () => {
    const cases: [string, number[], string][] = [
      ['{"t":', [], 'JSON'],
      [entry('{"shape":[1],"data_offsets":[0,4]}'), [0, 0, 0, 0], 'dtype'],
      [entry('{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}'), [0, 0, 0, 0], 'shape'],
      [entry('{"dtype":"F32","shape":[1]}'), [0, 0, 0, 0], 'data_offsets'],
      [entry('{"dtype":"F32","shape":[1],"data_offsets":[0,8]}'), [0, 0, 0, 0], 'out of range'],
      [entry('{"dtype":"F32","shape":[2],"data_offsets":[0,4]}'), [0, 0, 0, 0], 'needs 8 bytes'],
      ['{"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"u":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}', [1, 2, 3], 'overlap'],
      ['{"__metadata__":{"a":1}}', [], '__metadata__'],
      [entry('{"dtype":"I64","shape":[1],"data_offsets":[0,8]}'), [0, 0, 0, 0, 1, 0, 0, 0], 'int32 range'],
    ];
    for (const [h, data, what] of cases) expectIoError(() => readSafetensors(rawFile(h, data), { name: 'bad.st' }), 'ZV2003', 'bad.st', what);
  });
  it('ZV2004 unsupported dtype, naming it and the tensor', () => {
    expectIoError(() => readSafetensors(rawFile('{"w8":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}', [0])),
      'ZV2004', 'F8_E4M3', '"w8"');
  });
  it('ZV2005 write failure', () => {
    const ok = { t: makeTensor('f32', [1]) }, p = join(tmp, 'y.safetensors');
    expectIoError(() => writeSafetensors(join(tmp, 'no/such/dir/x.safetensors'), ok), 'ZV2005', 'x.safetensors');
    expectIoError(() => writeSafetensors(p, { t: { dtype: 'f32', shape: [3], data: new Float64Array(2) } }), 'ZV2005', '"t"');
    expectIoError(() => writeSafetensors(p, { b: { dtype: 'u8', shape: [1], data: Int32Array.of(300) } }), 'ZV2005', '300');
    expectIoError(() => writeSafetensors(p, { __metadata__: makeTensor('f32', [1]) }), 'ZV2005', 'reserved');
    expectIoError(() => writeSafetensors(p, ok, { a: 1 as unknown as string }), 'ZV2005', 'metadata');
  });
});

describe('random', () => {
  it('splitmix64 matches the published sequence for seed 0', () => {
    const out: bigint[] = [];
    let s = 0n;
    for (let i = 0; i < 3; i++) { const [z, next] = splitmix64(s); out.push(z); s = next; }
    expect(out).toEqual([0xe220a8397b1dcdafn, 0x6e789e6aa1b965f4n, 0x06c45d188009454fn]);
  });

  it('32-bit-halves xorshift128+ matches a BigInt reference', () => {
    const M = (1n << 64n) - 1n;
    const u64 = fc.bigInt({ min: 1n, max: M });
    fc.assert(fc.property(u64, u64, (a, b) => {
      const r = Rng.fromState(a, b);
      let [s0, s1] = [a, b];
      for (let i = 0; i < 20; i++) {
        let x = s0;
        const y = s1;
        const want = (x + y) & M;
        s0 = y;
        x ^= (x << 23n) & M;
        s1 = x ^ y ^ (x >> 18n) ^ (y >> 5n);
        expect(r.nextBigUint64()).toBe(want);
      }
    }));
  });

  it('is reproducible and produces dtype-representable values', () => {
    expect(randomTensor('f32', [64], 7).data).toEqual(randomTensor('f32', [64], 7).data);
    expect(randomTensor('f32', [64], 7).data).not.toEqual(randomTensor('f32', [64], 8).data);
    const t = randomTensor('f16', [4096], 42, { scale: 2 });
    const xs = [...t.data];
    expect(xs.every((x) => roundTo('f16', x) === x)).toBe(true);
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    const sd = Math.sqrt(xs.reduce((s, x) => s + (x - mean) ** 2, 0) / xs.length);
    expect(Math.abs(mean)).toBeLessThan(0.15);
    expect(Math.abs(sd - 2)).toBeLessThan(0.15);
    const u = randomTensor('f32', [1000], 3, { dist: 'uniform', scale: 0.5 });
    expect(u.data.every((x) => x >= -0.5 && x < 0.5)).toBe(true);
    const ints = randomTensor('i32', [1000], 5, { low: 3, high: 9 });
    expect(Math.min(...ints.data)).toBe(3);
    expect(Math.max(...ints.data)).toBe(9);
    expect(() => randomTensor('u8', [1], 1, { low: -1 })).toThrow(RangeError);
    for (const d of ['bool', 'u8', 'i64', 'bf16'] as const) expect(randomTensor(d, [3, 0], 1).data.length).toBe(0);
  });
});
