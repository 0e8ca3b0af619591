// Reader/writer for the safetensors format: 8-byte little-endian u64 header length N, N bytes of
// UTF-8 JSON {"name": {"dtype","shape","data_offsets":[begin,end]}, "__metadata__"?: {str: str}},
// then the raw little-endian data (offsets relative to the data section, not necessarily aligned).
// The writer follows the reference (Rust `safetensors`) header layout: compact JSON, "__metadata__"
// first, entries in data order, header space-padded to a multiple of 8. Data is ordered by name
// (what older reference versions did; current ones order by descending dtype, then name — the same
// bytes whenever all tensors share a dtype, and every reader accepts either).

import { readFileSync, writeFileSync, openSync, readSync, fstatSync, closeSync } from 'node:fs';
import { endianness } from 'node:os';
import { type DType, byteSize, decodeTable, floatToBf16Bits, floatToF16Bits, fromSafetensorsDType,
  intRange, toSafetensorsDType, DTYPES } from './dtype.ts';
import { IoError } from './errors.ts';
import { type Tensor, type TensorData, describe, makeTensor, numel } from './tensor.ts';

/** Header lengths above this are rejected before allocating (same limit as the reference reader). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo {
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** [begin, end) byte offsets relative to the start of the data section. */
  readonly dataOffsets: readonly [number, number];
}

export interface SafetensorsHeader {
  readonly tensors: Map<string, TensorInfo>;
  readonly metadata: Record<string, string>;
  /** Absolute file offset of the data section (8 + N). */
  readonly dataStart: number;
}

export interface SafetensorsFile {
  readonly tensors: Map<string, Tensor>;
  readonly metadata: Record<string, string>;
}

export type TensorMap = Record<string, Tensor> | ReadonlyMap<string, Tensor>;

// Typed-array views use host byte order; on the (rare) big-endian host we byte-swap each element.
const LITTLE = endianness() === 'LE';

function swapInPlace(bytes: Uint8Array, size: number): void {
  if (LITTLE || size === 1) return;
  for (let i = 0; i < bytes.length; i += size) bytes.subarray(i, i + size).reverse();
}

function readError(source: string, err: unknown): IoError {
  const code = (err as { code?: string }).code;
  const why = code === 'ENOENT' ? 'file not found' : `cannot read file (${String(err)})`;
  return new IoError('ZV2001', `${source}: ${why}`, { cause: err });
}

/** Parses and validates the header. `prefix` holds at least the first 8 + N bytes of a file of
 *  `fileSize` bytes (the whole file when reading everything). */
export function parseSafetensorsHeader(prefix: Uint8Array, fileSize: number, source = '<buffer>'): SafetensorsHeader {
  const bad = (code: 'ZV2002' | 'ZV2003', msg: string): IoError => new IoError(code, `${source}: ${msg}`);
  if (fileSize < 8) throw bad('ZV2002', `not a safetensors file: ${fileSize} bytes is shorter than the 8-byte header length`);
  const n64 = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    throw bad('ZV2002', `not a safetensors file: header length ${n64} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const n = Number(n64);
  if (8 + n > fileSize) throw bad('ZV2002', `truncated: header length ${n} but only ${fileSize - 8} bytes follow`);
  if (n < 2 || prefix[8] !== 0x7b /* '{' */) throw bad('ZV2002', 'not a safetensors file: header does not start with "{"');
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(prefix.subarray(8, 8 + n)));
  } catch (e) {
    throw new IoError('ZV2003', `${source}: bad header JSON (${(e as Error).message})`, { cause: e });
  }
  if (!isObject(json)) throw bad('ZV2003', 'bad header: top level is not a JSON object');
  const dataLen = fileSize - 8 - n;
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isObject(entry) || !Object.values(entry).every((v) => typeof v === 'string')) {
        throw bad('ZV2003', 'bad header: __metadata__ must map strings to strings');
      }
      metadata = Object.fromEntries(Object.entries(entry as Record<string, string>));
      continue;
    }
    tensors.set(name, parseEntry(name, entry, dataLen, source));
  }
  // Sort non-empty ranges by start; any range starting before the previous one ends overlaps it.
  const ranges = [...tensors].filter(([, t]) => t.dataOffsets[1] > t.dataOffsets[0])
    .sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0]);
  for (let i = 1; i < ranges.length; i++) {
    const [pn, p] = ranges[i - 1]!;
    const [cn, c] = ranges[i]!;
    if (c.dataOffsets[0] < p.dataOffsets[1]) {
      throw bad('ZV2003', `tensor "${cn}": data_offsets [${c.dataOffsets.join(',')}] overlap tensor "${pn}" [${p.dataOffsets.join(',')}]`);
    }
  }
  return { tensors, metadata, dataStart: 8 + n };
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

const isCount = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;

function parseEntry(name: string, entry: unknown, dataLen: number, source: string): TensorInfo {
  const bad = (msg: string): IoError => new IoError('ZV2003', `${source}: tensor "${name}": ${msg}`);
  if (!isObject(entry)) throw bad('entry is not a JSON object');
  const { dtype: st, shape, data_offsets: offs } = entry;
  if (typeof st !== 'string') throw bad('missing or non-string "dtype"');
  const dtype = fromSafetensorsDType(st);
  if (dtype === undefined) {
    throw new IoError('ZV2004', `${source}: tensor "${name}": unsupported dtype "${st}" (supported: ${DTYPES.map(toSafetensorsDType).join(', ')})`);
  }
  if (!Array.isArray(shape) || !shape.every(isCount)) throw bad('missing or invalid "shape" (need an array of non-negative integers)');
  if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isCount)) {
    throw bad('missing or invalid "data_offsets" (need [begin, end] non-negative integers)');
  }
  const [begin, end] = offs as [number, number];
  if (begin > end || end > dataLen) throw bad(`data_offsets [${begin},${end}] out of range (data section is ${dataLen} bytes)`);
  const want = numel(shape) * byteSize(dtype);
  if (want !== end - begin) {
    throw bad(`${dtype}[${shape.join(',')}] needs ${want} bytes but data_offsets span ${end - begin}`);
  }
  return { dtype, shape: Object.freeze([...shape]), dataOffsets: [begin, end] };
}

/** Reads a whole safetensors file (path) or buffer into host tensors. */
export function readSafetensors(src: string | Uint8Array, opts: { name?: string } = {}): SafetensorsFile {
  const source = opts.name ?? (typeof src === 'string' ? src : '<buffer>');
  let bytes: Uint8Array;
  if (typeof src === 'string') {
    try { bytes = readFileSync(src); } catch (e) { throw readError(source, e); }
  } else bytes = src;
  const header = parseSafetensorsHeader(bytes, bytes.length, source);
  const tensors = new Map<string, Tensor>();
  for (const [name, info] of header.tensors) {
    const [b, e] = info.dataOffsets;
    // slice() copies into a fresh, aligned ArrayBuffer: the file offsets need not be aligned.
    // (Not bytes.slice: on a Buffer that returns a view sharing memory, not a copy.)
    const raw = new Uint8Array(bytes.subarray(header.dataStart + b, header.dataStart + e));
    tensors.set(name, makeTensor(info.dtype, info.shape, decode(info.dtype, raw, `${source}: tensor "${name}"`)));
  }
  return { tensors, metadata: header.metadata };
}

/** Reads only the header of a file (cheap inspection of large checkpoints). */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  let fd: number;
  try { fd = openSync(path, 'r'); } catch (e) { throw readError(path, e); }
  try {
    const size = fstatSync(fd).size;
    const len = new Uint8Array(8);
    readSync(fd, len, 0, Math.min(8, size), 0);
    const n = new DataView(len.buffer).getBigUint64(0, true);
    // Read only as much as the file has; parseSafetensorsHeader reports a truncated/oversized header.
    const want = size < 8 || n > BigInt(MAX_HEADER_BYTES) ? 8 : Math.min(size, 8 + Number(n));
    const prefix = new Uint8Array(want);
    readSync(fd, prefix, 0, Math.min(want, size), 0);
    return parseSafetensorsHeader(prefix, size, path);
  } catch (e) {
    throw e instanceof IoError ? e : readError(path, e);
  } finally {
    closeSync(fd);
  }
}

function decode(dtype: DType, raw: Uint8Array, where: string): TensorData {
  // i64 is read as (lo, hi) int32 word pairs below, so on big-endian hosts swap within words only.
  swapInPlace(raw, dtype === 'i64' ? 4 : byteSize(dtype));
  const buf = raw.buffer;
  switch (dtype) {
    case 'f64': return new Float64Array(buf);
    case 'f32': return Float64Array.from(new Float32Array(buf));
    case 'f16': case 'bf16': {
      const table = decodeTable(dtype);
      const bits = new Uint16Array(buf);
      const out = new Float64Array(bits.length);
      for (let i = 0; i < bits.length; i++) out[i] = table[bits[i] as number] as number; // (plain loop: from+map is slow)
      return out;
    }
    case 'i32': return new Int32Array(buf);
    case 'u8': return Int32Array.from(raw);
    case 'bool': return Int32Array.from(raw, (b) => (b !== 0 ? 1 : 0));
    case 'i64': {
      // Host i64 is int32-ranged: value fits iff the high word is the sign extension of the low word.
      const words = new Int32Array(buf);
      const out = new Int32Array(words.length / 2);
      for (let i = 0; i < out.length; i++) {
        const lo = words[2 * i] as number;
        const hi = words[2 * i + 1] as number;
        if (hi !== lo >> 31) {
          const v = (BigInt(hi) << 32n) | BigInt(lo >>> 0);
          throw new IoError('ZV2003', `${where}: i64 value ${v} at element ${i} is outside the supported int32 range`);
        }
        out[i] = lo;
      }
      return out;
    }
  }
}

/** Raw little-endian bytes of a tensor's values in `dtype` layout. */
function encode(t: Tensor, where: string): Uint8Array {
  const { dtype, data } = t;
  const n = data.length;
  let out: Uint8Array;
  switch (dtype) {
    case 'f64': out = new Uint8Array(Float64Array.from(data).buffer); break;
    case 'f32': out = new Uint8Array(Float32Array.from(data).buffer); break;
    case 'f16': case 'bf16': {
      const enc = dtype === 'f16' ? floatToF16Bits : floatToBf16Bits;
      const bits = new Uint16Array(n);
      for (let i = 0; i < n; i++) bits[i] = enc(data[i] as number);
      out = new Uint8Array(bits.buffer);
      break;
    }
    case 'i32': case 'i64': case 'u8': case 'bool': {
      const [lo, hi] = intRange(dtype);
      for (let i = 0; i < n; i++) {
        const v = data[i] as number;
        if (!Number.isInteger(v) || v < lo || v > hi) {
          throw new IoError('ZV2005', `${where}: value ${v} at element ${i} is not a valid ${dtype}`);
        }
      }
      if (dtype === 'i32') out = new Uint8Array(Int32Array.from(data).buffer);
      else if (dtype === 'i64') out = new Uint8Array(BigInt64Array.from(data, (v) => BigInt(v)).buffer);
      else out = Uint8Array.from(data);
      break;
    }
  }
  swapInPlace(out, byteSize(dtype));
  return out;
}

// Rust's String ordering is by UTF-8 bytes (= code points); JS `<` compares UTF-16 code units.
const utf8Compare = (a: string, b: string): number => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

/** Serializes tensors (sorted by name, stored contiguously) and optional string metadata. */
export function encodeSafetensors(tensors: TensorMap, metadata?: Record<string, string>, target = '<buffer>'): Uint8Array {
  const entries = [...(tensors instanceof Map ? tensors : Object.entries(tensors))] as [string, Tensor][];
  entries.sort((a, b) => utf8Compare(a[0], b[0]));
  // The JSON text is assembled from "key":value pieces rather than JSON.stringify of an object:
  // objects reorder integer-like keys and treat "__proto__" specially, and the order matters here.
  const member = (k: string, valueJson: string): string => `${JSON.stringify(k)}:${valueJson}`;
  const body: string[] = [];
  const metaKeys = Object.keys(metadata ?? {});
  if (metaKeys.length > 0) {
    const meta = metadata as Record<string, string>;
    for (const k of metaKeys) {
      if (typeof meta[k] !== 'string') throw new IoError('ZV2005', `${target}: metadata "${k}" is not a string`);
    }
    const pairs = metaKeys.sort(utf8Compare).map((k) => member(k, JSON.stringify(meta[k])));
    body.push(member('__metadata__', `{${pairs.join(',')}}`));
  }
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of entries) {
    const where = `${target}: tensor "${name}"`;
    if (name === '__metadata__') throw new IoError('ZV2005', `${where}: name is reserved`);
    let blob: Uint8Array;
    try {
      makeTensor(t.dtype, t.shape, t.data); // validates dtype/shape/data agreement
      blob = encode(t, where);
    } catch (e) {
      if (e instanceof IoError) throw e;
      throw new IoError('ZV2005', `${where}: invalid tensor ${describe(t)} (${(e as Error).message})`, { cause: e });
    }
    // Key order dtype, shape, data_offsets matches the reference writer's serde output.
    const info = { dtype: toSafetensorsDType(t.dtype), shape: t.shape, data_offsets: [offset, offset + blob.length] };
    body.push(member(name, JSON.stringify(info)));
    blobs.push(blob);
    offset += blob.length;
  }
  const json = new TextEncoder().encode(`{${body.join(',')}}`);
  const padded = json.length + ((8 - (json.length % 8)) % 8); // pad with spaces so data starts 8-aligned
  const out = new Uint8Array(8 + padded + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + padded);
  let pos = 8 + padded;
  for (const b of blobs) { out.set(b, pos); pos += b.length; }
  return out;
}

/** Writes a safetensors file; any failure (invalid input or filesystem) is an IoError ZV2005. */
export function writeSafetensors(path: string, tensors: TensorMap, metadata?: Record<string, string>): void {
  const bytes = encodeSafetensors(tensors, metadata, path);
  try {
    writeFileSync(path, bytes);
  } catch (e) {
    throw new IoError('ZV2005', `${path}: cannot write file (${String(e)})`, { cause: e });
  }
}

/** A tensor's values as raw little-endian bytes of its dtype (what a GPU buffer holds). */
export function tensorToBytes(t: Tensor): Uint8Array {
  return encode(t, describe(t));
}

/** The inverse of tensorToBytes; `bytes` is copied. */
export function tensorFromBytes(dtype: DType, shape: readonly number[], bytes: Uint8Array): Tensor {
  return makeTensor(dtype, shape, decode(dtype, bytes.slice(), `${dtype}[${shape.join(",")}]`));
}
