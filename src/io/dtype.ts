// Element types zipvl moves between host tensors, safetensors files and devices, plus exact
// conversions for the 16-bit float formats. Everything here is pure arithmetic on JS numbers (f64),
// so results are identical on every platform: no reliance on hardware f16 support.

export type DType = 'f32' | 'f16' | 'bf16' | 'i32' | 'f64' | 'i64' | 'u8' | 'bool';
export type FloatDType = 'f32' | 'f16' | 'bf16' | 'f64';
export type SafetensorsDType = 'F32' | 'F16' | 'BF16' | 'I32' | 'F64' | 'I64' | 'U8' | 'BOOL';

interface DTypeInfo {
  readonly st: SafetensorsDType;
  readonly bytes: number;
  readonly float: boolean;
}

const INFO: Readonly<Record<DType, DTypeInfo>> = {
  f32: { st: 'F32', bytes: 4, float: true },
  f16: { st: 'F16', bytes: 2, float: true },
  bf16: { st: 'BF16', bytes: 2, float: true },
  f64: { st: 'F64', bytes: 8, float: true },
  i32: { st: 'I32', bytes: 4, float: false },
  i64: { st: 'I64', bytes: 8, float: false },
  u8: { st: 'U8', bytes: 1, float: false },
  bool: { st: 'BOOL', bytes: 1, float: false },
};

export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i32', 'f64', 'i64', 'u8', 'bool'];

export function isDType(s: string): s is DType {
  return Object.prototype.hasOwnProperty.call(INFO, s);
}

/** Bytes per element in the file / device layout (not the host Float64Array/Int32Array layout). */
export function byteSize(dtype: DType): number {
  return INFO[dtype].bytes;
}

export function isFloatDType(dtype: DType): dtype is FloatDType {
  return INFO[dtype].float;
}

export function toSafetensorsDType(dtype: DType): SafetensorsDType {
  return INFO[dtype].st;
}

/** Maps a safetensors dtype name (e.g. "BF16") to ours; undefined for names we do not support. */
export function fromSafetensorsDType(name: string): DType | undefined {
  return DTYPES.find((d) => INFO[d].st === name);
}

/**
 * Integer range the host representation can hold. i64 is held in an Int32Array on the host
 * (positions/indices never need more), so its range is the int32 range and wider values are rejected.
 */
export function intRange(dtype: DType): readonly [number, number] {
  switch (dtype) {
    case 'u8': return [0, 255];
    case 'bool': return [0, 1];
    case 'i32': case 'i64': return [-0x80000000, 0x7fffffff];
    default: throw new RangeError(`intRange: ${dtype} is not an integer dtype`);
  }
}

// ---- generic IEEE "mini float" codec (sign | expBits | mantBits), used for f16 (5,10) and bf16 (8,7).

/** Round a non-negative value to an integer, ties to even. Callers pass values scaled by a power of
 *  two, so `y` is exact and `y - floor(y)` has no rounding error. */
function roundHalfEven(y: number): number {
  const f = Math.floor(y);
  const d = y - f;
  return d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f;
}

// Reference path: exact for any double, but slow (log2 and powers per call). encodeMini below
// handles the common case with integer ops on the f32 bits and defers here for the rest.
function encodeMiniSlow(x: number, expBits: number, mantBits: number): number {
  const expAll = (1 << expBits) - 1;
  const bias = (expAll >> 1);
  const signBit = x < 0 || Object.is(x, -0) ? 1 << (expBits + mantBits) : 0;
  // Canonical quiet NaN (what torch/numpy produce); NaN payloads are not observable in JS anyway.
  if (Number.isNaN(x)) return (expAll << mantBits) | (1 << (mantBits - 1));
  const a = Math.abs(x);
  if (a === Infinity) return signBit | (expAll << mantBits);
  const emin = 1 - bias;
  const implicit = 2 ** mantBits;
  if (a < 2 ** emin) {
    // Subnormal range has a fixed quantum 2^(emin-mantBits). m may round up to `implicit`, which is
    // exactly the bit pattern of the smallest normal, so no special case is needed.
    return signBit | roundHalfEven(a * 2 ** (mantBits - emin));
  }
  // log2 can be off by one near powers of two; fix e so that 2^e <= a < 2^(e+1) exactly.
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  let m = roundHalfEven(a * 2 ** (mantBits - e)); // in [implicit, 2*implicit]
  if (m === 2 * implicit) { m = implicit; e++; }
  // Round-to-nearest-even overflows to Inf at max + half an ulp (65520 for f16), as IEEE requires.
  if (e + bias >= expAll) return signBit | (expAll << mantBits);
  return signBit | ((e + bias) << mantBits) | (m - implicit);
}

// Scratch for reading a value's f32 bit pattern (same buffer, so host byte order does not matter).
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/**
 * Rounds via the f32 bits of fround(x). That equals rounding x directly (no double rounding)
 * unless fround(x) lands exactly on a target midpoint while x != fround(x): every target midpoint
 * is an f32 value and rounding is monotonic, so otherwise x and fround(x) share a nearest value.
 */
function encodeMini(x: number, expBits: number, mantBits: number): number {
  const expAll = (1 << expBits) - 1;
  if (Number.isNaN(x)) return (expAll << mantBits) | (1 << (mantBits - 1));
  scratchF32[0] = x;
  const u = scratchU32[0] as number;
  const signBit = (u >>> 31) << (expBits + mantBits);
  const a = u & 0x7fffffff;
  if (a === 0) return signBit;
  if (a >= 0x7f800000) return signBit | (expAll << mantBits); // Inf, or x beyond f32 range
  const e32 = a >>> 23;
  if (e32 === 0) return encodeMiniSlow(x, expBits, mantBits); // f32 subnormal: rare, keep it simple
  const te = e32 - 127 + (expAll >> 1); // biased target exponent
  if (te >= expAll) return signBit | (expAll << mantBits);
  // Drop the low s bits of the 24-bit significand: 23 - mantBits for normals, more for subnormals.
  const s = te >= 1 ? 23 - mantBits : 24 - mantBits - te;
  if (s >= 25) return signBit; // below half the smallest subnormal
  const sig = (a & 0x7fffff) | 0x800000;
  const rem = sig & ((1 << s) - 1);
  const half = 1 << (s - 1);
  if (rem === half && scratchF32[0] !== x) return encodeMiniSlow(x, expBits, mantBits);
  const q = sig >>> s;
  // For normals q carries the implicit bit, so (te-1)<<m + q = te<<m | fraction; a round-up carry
  // ripples into the exponent (and to the Inf pattern at the top), as IEEE rounding does.
  const base = te >= 1 ? (te - 1) << mantBits : 0;
  return signBit | (base + q + (rem > half || (rem === half && (q & 1) === 1) ? 1 : 0));
}

function decodeMini(bits: number, expBits: number, mantBits: number): number {
  const expAll = (1 << expBits) - 1;
  const bias = expAll >> 1;
  const sign = (bits >>> (expBits + mantBits)) & 1 ? -1 : 1;
  const e = (bits >>> mantBits) & expAll;
  const m = bits & ((1 << mantBits) - 1);
  if (e === expAll) return m !== 0 ? NaN : sign * Infinity;
  if (e === 0) return sign * m * 2 ** (1 - bias - mantBits); // sign * 0 keeps -0
  return sign * (2 ** mantBits + m) * 2 ** (e - bias - mantBits);
}

/** Any double -> nearest f16 bit pattern (single rounding, ties to even; for f32 inputs this is
 *  exactly the IEEE f32->f16 conversion). NaN -> 0x7E00. */
export function floatToF16Bits(x: number): number {
  return encodeMini(x, 5, 10);
}

/** f16 bit pattern (low 16 bits used) -> its exact value. */
export function f16BitsToFloat(bits: number): number {
  return decodeMini(bits & 0xffff, 5, 10);
}

/** Any double -> nearest bf16 bit pattern (ties to even, like torch's f32->bf16). NaN -> 0x7FC0. */
export function floatToBf16Bits(x: number): number {
  return encodeMini(x, 8, 7);
}

/** bf16 bit pattern (low 16 bits used) -> its exact value. */
export function bf16BitsToFloat(bits: number): number {
  return decodeMini(bits & 0xffff, 8, 7);
}

// Decoding whole tensors goes through 64K-entry tables (built once, 512 KB each) because files of
// millions of f16 values are common and the table lookup is far cheaper than decodeMini per element.
let f16Table: Float64Array | undefined;
let bf16Table: Float64Array | undefined;

export function decodeTable(dtype: 'f16' | 'bf16'): Float64Array {
  if (dtype === 'f16') return (f16Table ??= buildTable(f16BitsToFloat));
  return (bf16Table ??= buildTable(bf16BitsToFloat));
}

function buildTable(decode: (bits: number) => number): Float64Array {
  const t = new Float64Array(65536);
  for (let i = 0; i < 65536; i++) t[i] = decode(i);
  return t;
}

/**
 * Rounds a double to the nearest value representable in `dtype` (used to make reference inputs
 * exactly representable so host and device see the same numbers).
 * Floats: round to nearest even (overflow -> ±Inf, NaN stays NaN).
 * Integers: round half to even, then saturate to intRange (NaN -> 0). bool: nonzero (incl. NaN) -> 1.
 */
export function roundTo(dtype: DType, x: number): number {
  switch (dtype) {
    case 'f64': return x;
    case 'f32': return Math.fround(x);
    case 'f16': case 'bf16': return decodeTable(dtype)[dtype === 'f16' ? floatToF16Bits(x) : floatToBf16Bits(x)] as number;
    case 'bool': return x !== 0 ? 1 : 0;
    default: {
      if (Number.isNaN(x)) return 0;
      const [lo, hi] = intRange(dtype);
      if (x <= lo) return lo;
      if (x >= hi) return hi;
      const r = x < 0 ? -roundHalfEven(-x) : roundHalfEven(x);
      return r === 0 ? 0 : r; // no -0 in integer tensors
    }
  }
}
