// Host-side tensors: a dtype, a row-major shape and the values. Floats of every width are held as
// Float64Array of values exactly representable in the dtype (so the f64 interpreter can read them
// directly and round trips are exact); integer-like dtypes are held as Int32Array.
// A plain interface plus free functions (rather than a class) so any `{dtype, shape, data}` object
// built elsewhere is a Tensor too.

import { type DType, intRange, isFloatDType, roundTo } from './dtype.ts';

export type TensorData = Float64Array | Int32Array;

export interface Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: TensorData;
}

/** Throws RangeError unless every dim is a non-negative safe integer. */
export function checkShape(shape: readonly number[]): void {
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new RangeError(`bad shape [${shape.join(',')}]: dim ${d}`);
  }
}

/** Number of elements; a 0-d shape [] has one element. */
export function numel(x: readonly number[] | Tensor): number {
  const shape = 'dtype' in x ? x.shape : x;
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Row-major element strides (last dim contiguous). */
export function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i] ?? 0;
  }
  return s;
}

function allocFor(dtype: DType, n: number): TensorData {
  return isFloatDType(dtype) ? new Float64Array(n) : new Int32Array(n);
}

/** Builds a tensor, checking the shape and that `data` has the right kind and length (no copy).
 *  Without `data`, the tensor is zero-filled. */
export function makeTensor(dtype: DType, shape: readonly number[], data?: TensorData): Tensor {
  checkShape(shape);
  const n = numel(shape);
  const d = data ?? allocFor(dtype, n);
  const wantFloat = isFloatDType(dtype);
  if (wantFloat !== d instanceof Float64Array) {
    throw new TypeError(`${dtype} tensor needs ${wantFloat ? 'Float64Array' : 'Int32Array'} data`);
  }
  if (d.length !== n) throw new RangeError(`${dtype}[${shape.join(',')}] needs ${n} values, got ${d.length}`);
  return { dtype, shape: Object.freeze([...shape]), data: d };
}

export function zeros(dtype: DType, shape: readonly number[]): Tensor {
  return makeTensor(dtype, shape);
}

/** Copies `values` into a new tensor: floats are rounded to the dtype, integers must already be
 *  in range (a silent wrap of an index would be a hard-to-find bug). */
export function tensorFrom(dtype: DType, shape: readonly number[], values: ArrayLike<number>): Tensor {
  const t = makeTensor(dtype, shape);
  if (values.length !== t.data.length) {
    throw new RangeError(`${describe(t)} needs ${t.data.length} values, got ${values.length}`);
  }
  for (let i = 0; i < values.length; i++) t.data[i] = checkValue(dtype, values[i] as number);
  return t;
}

/** f32 values (e.g. from a device readback) -> tensor of `dtype` (rounded if narrower). */
export function fromFloat32(dtype: DType, shape: readonly number[], values: Float32Array): Tensor {
  return tensorFrom(dtype, shape, values);
}

/** Values as f32 (what device buffers of f32 hold); integer dtypes are converted numerically. */
export function toFloat32Array(t: Tensor): Float32Array {
  return Float32Array.from(t.data);
}

function checkValue(dtype: DType, v: number): number {
  if (isFloatDType(dtype)) return roundTo(dtype, v);
  const [lo, hi] = intRange(dtype);
  if (!Number.isInteger(v) || v < lo || v > hi) {
    throw new RangeError(`value ${v} is not representable as ${dtype}`);
  }
  return v;
}

/** Flat element offset of a multi-index, bounds-checked. */
export function offsetOf(shape: readonly number[], index: readonly number[]): number {
  if (index.length !== shape.length) {
    throw new RangeError(`index [${index.join(',')}] has rank ${index.length}, shape [${shape.join(',')}] has ${shape.length}`);
  }
  let off = 0;
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i] as number;
    const k = index[i] as number;
    if (!Number.isInteger(k) || k < 0 || k >= d) {
      throw new RangeError(`index [${index.join(',')}] out of bounds for shape [${shape.join(',')}]`);
    }
    off = off * d + k;
  }
  return off;
}

export function at(t: Tensor, index: readonly number[]): number {
  return t.data[offsetOf(t.shape, index)] as number;
}

/** Stores a value; floats are rounded to the dtype, integers are range-checked. */
export function set(t: Tensor, index: readonly number[], value: number): void {
  t.data[offsetOf(t.shape, index)] = checkValue(t.dtype, value);
}

/** Same data (shared, not copied) under a new shape; one dim may be -1 (inferred). */
export function reshape(t: Tensor, shape: readonly number[]): Tensor {
  const infer = shape.indexOf(-1);
  let dims = [...shape];
  if (infer >= 0) {
    if (shape.indexOf(-1, infer + 1) >= 0) throw new RangeError(`reshape: more than one -1 in [${shape.join(',')}]`);
    const rest = numel(shape.filter((_, i) => i !== infer));
    const n = t.data.length;
    if (rest === 0 || n % rest !== 0) throw new RangeError(`reshape: cannot infer -1 reshaping ${describe(t)} to [${shape.join(',')}]`);
    dims = shape.map((d, i) => (i === infer ? n / rest : d));
  }
  checkShape(dims);
  if (numel(dims) !== t.data.length) {
    throw new RangeError(`reshape: ${describe(t)} has ${t.data.length} elements, [${dims.join(',')}] needs ${numel(dims)}`);
  }
  return { dtype: t.dtype, shape: Object.freeze(dims), data: t.data };
}

/** e.g. `f16[4,128,64]`, `f32[]` for a scalar. */
export function describe(t: Tensor): string {
  return `${t.dtype}[${t.shape.join(',')}]`;
}

/** Exact equality: same dtype, shape and values, where NaN equals NaN and -0 differs from +0
 *  (the semantics a bit-exact file round trip must preserve). */
export function tensorsEqual(a: Tensor, b: Tensor): boolean {
  if (a.dtype !== b.dtype || a.shape.length !== b.shape.length) return false;
  if (a.shape.some((d, i) => d !== b.shape[i]) || a.data.length !== b.data.length) return false;
  for (let i = 0; i < a.data.length; i++) if (!Object.is(a.data[i], b.data[i])) return false;
  return true;
}
