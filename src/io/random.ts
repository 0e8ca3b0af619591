// Seeded, platform-independent random numbers for reference inputs. The generator is xorshift128+
// (Vigna), seeded through splitmix64; 64-bit state is kept as pairs of uint32 halves so the hot
// path is plain 32-bit integer math (BigInt is used only once, for seeding). Math.log/cos/sin in
// Box-Muller are V8's software fdlibm ports, so the same seed gives the same normals on every
// machine Node runs on.

import { type DType, isFloatDType, roundTo } from './dtype.ts';
import { type Tensor, makeTensor, numel, checkShape } from './tensor.ts';

const MASK64 = (1n << 64n) - 1n;

/** One splitmix64 step: returns [output, nextState]. Exported for tests against known vectors. */
export function splitmix64(state: bigint): [bigint, bigint] {
  const s = (state + 0x9e3779b97f4a7c15n) & MASK64;
  let z = s;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return [z ^ (z >> 31n), s];
}

export class Rng {
  // state s[0] = (ah, al), s[1] = (bh, bl), each half an unsigned 32-bit value
  private ah = 0;
  private al = 0;
  private bh = 0;
  private bl = 0;
  private spare: number | undefined;

  /** `seed`: any safe integer (negative allowed, taken mod 2^64) or bigint. */
  constructor(seed: number | bigint) {
    if (typeof seed === 'number' && !Number.isSafeInteger(seed)) throw new RangeError(`Rng seed must be a safe integer, got ${seed}`);
    const [a, st] = splitmix64(BigInt.asUintN(64, BigInt(seed)));
    const [b] = splitmix64(st);
    this.setState(a, b);
  }

  /** Generator with an explicit xorshift128+ state (for tests against a reference implementation). */
  static fromState(s0: bigint, s1: bigint): Rng {
    const r = new Rng(0);
    r.setState(s0, s1);
    return r;
  }

  private setState(s0: bigint, s1: bigint): void {
    // All-zero state would stay zero forever; splitmix64 never yields two zeros but fromState could.
    if ((s0 | s1) === 0n) s1 = 1n;
    this.ah = Number((s0 >> 32n) & 0xffffffffn);
    this.al = Number(s0 & 0xffffffffn);
    this.bh = Number((s1 >> 32n) & 0xffffffffn);
    this.bl = Number(s1 & 0xffffffffn);
    this.spare = undefined;
  }

  /** Advances the state; returns the 64-bit output as [hi, lo] uint32 halves. */
  private step(): [number, number] {
    // s1 = s[0]; s0 = s[1]; result = s0 + s1; s[0] = s0;
    // s1 ^= s1 << 23; s[1] = s1 ^ s0 ^ (s1 >> 18) ^ (s0 >> 5)
    let xh = this.ah, xl = this.al;
    const yh = this.bh, yl = this.bl;
    const sumL = xl + yl;
    const outL = sumL >>> 0;
    const outH = (xh + yh + (sumL > 0xffffffff ? 1 : 0)) >>> 0;
    this.ah = yh; this.al = yl;
    // x ^= x << 23
    xh = (xh ^ ((xh << 23) | (xl >>> 9))) >>> 0;
    xl = (xl ^ (xl << 23)) >>> 0;
    // new s[1] = x ^ y ^ (x >> 18) ^ (y >> 5)
    const nh = xh ^ yh ^ (xh >>> 18) ^ (yh >>> 5);
    const nl = xl ^ yl ^ ((xl >>> 18) | (xh << 14)) ^ ((yl >>> 5) | (yh << 27));
    this.bh = nh >>> 0; this.bl = nl >>> 0;
    return [outH, outL];
  }

  /** Next raw 64-bit output. */
  nextBigUint64(): bigint {
    const [h, l] = this.step();
    return (BigInt(h) << 32n) | BigInt(l);
  }

  /** Upper 32 bits of the next output (the low bits of xorshift128+ are the weakest). */
  nextU32(): number {
    return this.step()[0];
  }

  /** Uniform in [0, 1) with 53 random bits. */
  uniform(): number {
    const [h, l] = this.step();
    return (h * 2 ** 21 + (l >>> 11)) * 2 ** -53;
  }

  /** Uniform in [lo, hi). */
  uniformRange(lo: number, hi: number): number {
    return lo + (hi - lo) * this.uniform();
  }

  /** Uniform integer in [lo, hi] inclusive (bias < 2^-20 for ranges below 2^33). */
  int(lo: number, hi: number): number {
    if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi) || hi < lo) throw new RangeError(`Rng.int: bad range [${lo}, ${hi}]`);
    return lo + Math.floor(this.uniform() * (hi - lo + 1));
  }

  /** Normal(mean, std) by Box-Muller; the second value of each pair is kept for the next call. */
  normal(mean = 0, std = 1): number {
    let z = this.spare;
    if (z === undefined) {
      const u1 = 1 - this.uniform(); // in (0, 1], so log is finite
      const u2 = this.uniform();
      const r = Math.sqrt(-2 * Math.log(u1));
      z = r * Math.cos(2 * Math.PI * u2);
      this.spare = r * Math.sin(2 * Math.PI * u2);
    } else this.spare = undefined;
    return mean + std * z;
  }
}

export interface RandomTensorOptions {
  /** Float dtypes: std of the normal, or half-width of the uniform range. Default 1. */
  scale?: number;
  /** Float dtypes: 'normal' (default) N(0, scale^2) or 'uniform' on [-scale, scale). */
  dist?: 'normal' | 'uniform';
  /** Integer dtypes: inclusive range. Defaults: u8 [0,255], bool [0,1], i32/i64 [-100,100]. */
  low?: number;
  high?: number;
}

/** A tensor of seeded random values, already rounded to `dtype` (so it round-trips exactly
 *  through files and device buffers of that dtype). Same (dtype, shape, seed, opts) -> same tensor. */
export function randomTensor(dtype: DType, shape: readonly number[], seed: number | bigint, opts: RandomTensorOptions = {}): Tensor {
  checkShape(shape);
  const rng = new Rng(seed);
  const t = makeTensor(dtype, shape);
  const n = numel(shape);
  if (isFloatDType(dtype)) {
    const scale = opts.scale ?? 1;
    const uniform = opts.dist === 'uniform';
    for (let i = 0; i < n; i++) {
      const v = uniform ? rng.uniformRange(-scale, scale) : rng.normal(0, scale);
      t.data[i] = roundTo(dtype, v);
    }
  } else {
    const [dlo, dhi] = dtype === 'u8' ? [0, 255] : dtype === 'bool' ? [0, 1] : [-100, 100];
    const lo = opts.low ?? dlo;
    const hi = opts.high ?? dhi;
    // Reject ranges the dtype cannot hold rather than silently saturating.
    if (roundTo(dtype, lo) !== lo || roundTo(dtype, hi) !== hi) throw new RangeError(`randomTensor: [${lo}, ${hi}] does not fit ${dtype}`);
    for (let i = 0; i < n; i++) t.data[i] = rng.int(lo, hi);
  }
  return t;
}
