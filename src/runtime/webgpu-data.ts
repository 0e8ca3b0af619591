// Host-side data plumbing for the WGSL kernels: uniform blocks and f16 conversion (Node 20 has no Float16Array).

/** One uniform field: WGSL scalar type and value. All fields are 4 bytes (WGSL has no 64-bit scalars). */
export type UniformField = readonly ["u32" | "i32" | "f32", number];

/**
 * Packs fields in order, 4 bytes each, padded to a multiple of 16 bytes (uniform buffer struct size rule).
 * The WGSL structs in templates/wgsl/lib/*.wgsl must list the same fields in the same order.
 */
export function packUniform(fields: readonly UniformField[]): ArrayBuffer {
  const bytes = Math.max(16, Math.ceil((fields.length * 4) / 16) * 16);
  const view = new DataView(new ArrayBuffer(bytes));
  fields.forEach(([type, value], i) => {
    if (type === "f32") view.setFloat32(4 * i, value, true);
    else if (type === "i32") view.setInt32(4 * i, value, true);
    else view.setUint32(4 * i, value, true);
  });
  return view.buffer;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE binary16 bits of x with round-to-nearest-even (overflow -> inf, NaN kept). */
export function f32ToF16Bits(x: number): number {
  f32Scratch[0] = x;
  const b = u32Scratch[0] ?? 0;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && (m & 1))) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1))) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

export function toF16(a: Float32Array): Uint16Array {
  const out = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = f32ToF16Bits(a[i] ?? 0);
  return out;
}

export function fromF16(a: Uint16Array, length = a.length): Float32Array {
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = f16BitsToF32(a[i] ?? 0);
  return out;
}

/** Rounds through f16 and back: what a value becomes when stored as f16 (used by tests and tolerances). */
export function roundF16(a: Float32Array): Float32Array {
  return fromF16(toF16(a));
}
