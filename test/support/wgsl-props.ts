// The WGSL stages' differential properties against the float64 interpreter's stage semantics (src/interp/kernels.ts),
// shared by test/wgsl.test.ts (vitest, software Vulkan in CI) and the GPU-host runner bench/wgsl-check.ts (bundled),
// so both run one definition. No vitest here: a failed check throws. Outputs are poisoned (NaN / -1) by the stage API.
import * as K from "../../src/interp/kernels.ts";
import fc from "fast-check";
import { decode, probeScores, select, sparseAttention, type SelectOptions, type WgslVariant } from "../../src/backends/wgsl/stages.ts";
import { roundF16 } from "../../src/runtime/webgpu-data.ts";
import type { ZvGpu } from "../../src/runtime/webgpu.ts";
import type { Executor } from "../../src/backends/backend.ts";
import type { ZipvlError } from "../../src/diagnostics/diagnostic.ts";
import type { Program } from "../../src/ir/ir.ts";
import { randomTensor } from "../../src/io/random.ts";
import { checkDecode, checkPrefill, inputsFor, type Case } from "./cuda-check.ts";

// ---- variants: the same hook as WGSL text and as a JS function ---------------------------------------------------
type Mod = (s: number, q: number, k: number, n: number, P: Float32Array) => number;
type Mask = (q: number, k: number, n: number, P: Float32Array) => boolean;
export interface TestVariant { wgsl: WgslVariant; mod: Mod; probe: Mask; attn: Mask; keep: (pos: number, n: number) => boolean }
const causal: Mask = (q, k) => k <= q;
const VARIANT_LIST: (Omit<TestVariant, "keep"> & Partial<Pick<TestVariant, "keep">>)[] = [
  { wgsl: { activation: 0, probeCausal: true, attnCausal: true, scoreMod: "s", probeMask: "k_pos <= q_pos", attnMask: "k_pos <= q_pos" },
    mod: (s) => s, probe: causal, attn: causal },
  { // softcap, sigmoid probes, a keepIf rule
    wgsl: { activation: 1, probeCausal: true, attnCausal: true, scoreMod: "P[0] * tanh(s / P[0])", probeMask: "k_pos <= q_pos",
      attnMask: "k_pos <= q_pos", keepIf: "pos % 7 == 3" },
    mod: (s, _q, _k, _n, P) => P[0]! * Math.tanh(s / P[0]!), probe: causal, attn: causal, keep: (p) => p % 7 === 3 },
  { // ALiBi + sliding window, raw scores
    wgsl: { activation: 2, probeCausal: true, attnCausal: true, scoreMod: "s - P[1] * f32(q_pos - k_pos)",
      probeMask: "k_pos <= q_pos && q_pos - k_pos < i32(P[2])", attnMask: "k_pos <= q_pos && q_pos - k_pos < i32(P[2])" },
    mod: (s, q, k, _n, P) => s - P[1]! * (q - k), probe: (q, k, _n, P) => k <= q && q - k < P[2]!,
    attn: (q, k, _n, P) => k <= q && q - k < P[2]! },
  { // bidirectional prefix span (image tokens see each other), non-causal
    wgsl: { activation: 0, probeCausal: false, attnCausal: false, scoreMod: "s", probeMask: "k_pos <= q_pos || k_pos < i32(P[3])",
      attnMask: "k_pos <= q_pos || k_pos < i32(P[3])" },
    mod: (s) => s, probe: (q, k, _n, P) => k <= q || k < P[3]!, attn: (q, k, _n, P) => k <= q || k < P[3]! },
];
export const VARIANTS: TestVariant[] = VARIANT_LIST.map((v) => ({ keep: () => false, ...v }));

// ---- data ----------------------------------------------------------------------------------------------------------
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => ((s = (s + 0x6d2b79f5) >>> 0), (((s ^ (s >>> 15)) * (s | 1)) >>> 0) / 2 ** 32);
}
export const uniform = (r: () => number, len: number): Float32Array => Float32Array.from({ length: len }, () => r() * 2 - 1);
export const sortedSubset = (r: () => number, n: number, m: number): Int32Array => {
  const idx = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)); [idx[i], idx[j]] = [idx[j]!, idx[i]!]; }
  return Int32Array.from(idx.slice(0, m).sort((a, b) => a - b));
};
const dot = (a: Float32Array, ao: number, b: Float32Array, bo: number, d: number): number => {
  let s = 0;
  for (let c = 0; c < d; c++) s += a[ao + c]! * b[bo + c]!;
  return s;
};
// Every (head dim, variant, f16) triple is a pipeline, and the software JIT takes ~0.5-1 s per pipeline on first use:
// the default variant runs at every head dim in f32 and f16, the other variants at one head dim each (hooks do not
// interact with tiling), which bounds the distinct pipelines per stage at 11.
const VARIANT_DIMS = [[64, 80, 96, 128], [64], [96], [80]] as const;
const shape = fc
  .record({
    n: fc.integer({ min: 1, max: 300 }), dIdx: fc.nat(3), g: fc.constantFrom(1, 2, 4), Hkv: fc.constantFrom(1, 2),
    perKvHead: fc.boolean(), variant: fc.constantFrom(0, 0, 0, 1, 2, 3), seed: fc.integer({ min: 1, max: 2 ** 30 }), f16: fc.boolean(),
  })
  .map(({ dIdx, ...x }) => {
    const dims = VARIANT_DIMS[x.variant]!;
    return { ...x, d: dims[dIdx % dims.length]!, f16: x.f16 && x.variant === 0 };
  });
const paramsFor = (r: () => number, n: number): Float32Array => Float32Array.from([30, 0.05, 1 + Math.floor(r() * 64), Math.floor(r() * n)]);
export const closeTo = (got: ArrayLike<number>, want: ArrayLike<number>, tol: (i: number) => number, what: string): void => {
  if (got.length !== want.length) throw new Error(`${what}: length ${got.length}, want ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i]! - want[i]!) <= tol(i))) throw new Error(`${what}[${i}]: got ${got[i]}, want ${want[i]} (tol ${tol(i)})`);
  }
};
export const RUNS = { probe: 300, select: 500, attention: 300, decode: 300 };

// ---- float64 references: the interpreter's own stage semantics (src/interp/kernels.ts) -------------------------
const f64 = (a: Float32Array): Float64Array => Float64Array.from(a);
const ACT = ["softmax", "sigmoid", "none"] as const;

interface ProbeCase { q: Float32Array; k: Float32Array; probes: Int32Array; Hq: number; Hkv: number; n: number; d: number; scale: number; perKvHead: boolean; params: Float32Array; v: TestVariant }
function probeRef(c: ProbeCase): { colmass: Float64Array; mag: Float64Array; visible: Float64Array } {
  const { n, probes, params: P, v } = c;
  const heads = { Hq: c.Hq, Hkv: c.Hkv, n, d: c.d };
  const mask: K.MaskFn = (q, k) => v.probe(q, k, n, P);
  const A = K.probeAttention(f64(c.q), f64(c.k), probes, heads, c.scale, (s, q, k) => v.mod(s, q, k, n, P), mask, ACT[v.wgsl.activation]);
  return {
    colmass: K.columnMass(A, heads, probes.length, c.perKvHead),
    mag: K.columnMass(A.map(Math.abs), heads, probes.length, c.perKvHead), // scale of the f32 rounding error
    visible: K.normDivisor("visible", probes, n, mask),
  };
}

interface SelCase extends SelectOptions { colmass: Float32Array; visible: Float32Array; n: number; S: number; keep: (p: number, n: number) => boolean }
function normRef(c: SelCase, s: number): Float64Array {
  const { n } = c;
  const div = c.normalizer === "visible" ? f64(c.visible) : K.normDivisor(c.normalizer, new Int32Array(0), n, () => false);
  return K.poolScores(K.normalizeScores(f64(c.colmass.subarray(s * n, (s + 1) * n)), div, n), n, c.pool.kind, c.pool.size);
}
/** Counts p that the spec allows, given float rounding of the cumulative mass (tau) or exactly (other modes). */
function validP(c: SelCase, s: number): (p: number) => boolean {
  const { n } = c;
  if (c.mode !== "tau") {
    const p = K.keptCount(new Float64Array(n), n, c.mode, c.mode === "budget" ? Math.floor(c.amount) : c.amount)[0]!;
    return (x) => x === p;
  }
  const a = Array.from(c.colmass.subarray(s * n, (s + 1) * n)).sort((x, y) => y - x);
  const cum = [0];
  for (const x of a) cum.push(cum[cum.length - 1]! + x);
  if (c.amount >= 1) return (p) => p === Math.max(1, a.filter((x) => x > 0).length); // exact: last positive mass
  const total = cum[n]!, goal = c.amount * total, eps = 1e-5 * total + 1e-30;
  return (p) => p >= 1 && p <= n && cum[p - 1]! < goal + eps && cum[p]! >= goal - eps;
}
const forcedSet = (c: SelCase): boolean[] =>
  Array.from({ length: c.n }, (_, j) => j < c.keepFirst || j >= c.n - c.keepLast || c.keep(j, c.n));
/** Selection as a pure function of (scores, count): the interpreter's top-k (forced first, ties to the smaller position). */
function orderFromScores(scores: ArrayLike<number>, forced: boolean[], count: number): number[] {
  const n = forced.length;
  const r = K.selectTopk(Float64Array.from(scores), n, Int32Array.of(count), Int32Array.from(forced, (f) => (f ? 1 : 0)));
  return Array.from(r.order);
}

interface AttnCase { q: Float32Array; k: Float32Array; v: Float32Array; order: Int32Array; count: Int32Array; Hq: number; Hkv: number; n: number; d: number; scale: number; perKvHead: boolean; params: Float32Array; vt: TestVariant }
function attnRef(c: AttnCase): { o: Float64Array; kCache: Float64Array; vCache: Float64Array } {
  const { n, d, Hkv, params: P } = c;
  const heads = { Hq: c.Hq, Hkv, n, d };
  // Per-KV-head sets travel as S = Hkv counts; one shared set as a single count.
  const count = c.perKvHead ? c.count : c.count.subarray(0, 1);
  const o = K.sparseAttention(f64(c.q), f64(c.k), f64(c.v), heads, c.order, count, c.scale, (s, q, k) => c.vt.mod(s, q, k, n, P), (q, k) => c.vt.attn(q, k, n, P));
  // The kernels keep caches as [Hkv, n, d] with the first count rows meaningful; the interpreter compacts to [Hkv, c, d].
  const widen = (x: Float32Array): Float64Array => {
    const r = K.compactRows(f64(x), heads, c.order, count);
    const full = new Float64Array(Hkv * n * d);
    for (let kv = 0; kv < Hkv; kv++) full.set(r.data.subarray(kv * r.c * d, (kv + 1) * r.c * d), kv * n * d);
    return full;
  };
  return { o, kCache: widen(c.k), vCache: widen(c.v) };
}

function decodeRef(q: Float32Array, kc: Float32Array, vc: Float32Array, len: number, Hq: number, Hkv: number, d: number, scale: number): Float64Array {
  const cap = kc.length / (Hkv * d);
  const live = (x: Float32Array): Float64Array => {
    const out = new Float64Array(Hkv * len * d);
    for (let kv = 0; kv < Hkv; kv++) for (let i = 0; i < len * d; i++) out[kv * len * d + i] = x[kv * cap * d + i]!;
    return out;
  };
  return K.decodeAttention(f64(q), live(kc), live(vc), Hq, Hkv, len, d, scale, (s) => s);
}

export const selArb = fc.record({
  n: fc.integer({ min: 1, max: 300 }), S: fc.integer({ min: 1, max: 4 }), seed: fc.integer({ min: 1, max: 2 ** 30 }),
  mode: fc.constantFrom("tau", "tau", "ratio", "budget", "all") as fc.Arbitrary<SelectOptions["mode"]>,
  tau: fc.oneof(fc.double({ min: 0.01, max: 1, noNaN: true }), fc.constantFrom(1, 0.975, 1e-6)),
  normalizer: fc.constantFrom("visible", "n_minus_j", "none") as fc.Arbitrary<SelectOptions["normalizer"]>,
  pool: fc.record({ kind: fc.constantFrom("none", "max", "avg") as fc.Arbitrary<"none" | "max" | "avg">, size: fc.constantFrom(1, 3, 5, 7) }),
  keepFirst: fc.integer({ min: 0, max: 4 }), keepLast: fc.integer({ min: 0, max: 4 }), ties: fc.boolean(), keepIf: fc.boolean(),
  smallWg: fc.boolean(), // 32 threads x 2 items: several scan tiles, so the carry between tiles is exercised
});

/** One fast-check property per stage, each bound to a device. */
export function probeProperty(gpu: () => ZvGpu) {
  return fc.asyncProperty(shape, fc.integer({ min: 1, max: 48 }), async (sh, mWant) => {
    const r = rng(sh.seed), Hq = sh.Hkv * sh.g, f16 = sh.f16 && gpu().hasF16, n = sh.n, d = sh.d;
    const round = (a: Float32Array): Float32Array => (f16 ? roundF16(a) : a);
    const c: ProbeCase = {
      q: round(uniform(r, Hq * n * d)), k: round(uniform(r, sh.Hkv * n * d)), probes: sortedSubset(r, n, Math.min(n, mWant)),
      Hq, Hkv: sh.Hkv, n, d, scale: 1 / Math.sqrt(d), perKvHead: sh.perKvHead, params: paramsFor(r, n), v: VARIANTS[sh.variant]!,
    };
    const got = await probeScores(gpu(), { ...c, variant: c.v.wgsl, useF16: f16 });
    const want = probeRef(c);
    closeTo(got.visible, want.visible, () => 0, "visible");
    closeTo(got.colmass, want.colmass, (i) => 2e-5 * want.mag[i]! + 1e-6, "colmass");
  });
}

export function selectProperty(gpu: () => ZvGpu) {
  return fc.asyncProperty(selArb, async (x) => {
    const r = rng(x.seed), n = x.n;
    // ties: small integer masses make equal scores common (and exact zeros).
    const colmass = Float32Array.from({ length: x.S * n }, () => (x.ties ? Math.floor(r() * 4) : r() < 0.1 ? 0 : r() * 3));
    const visible = Float32Array.from({ length: n }, () => (r() < 0.1 ? 0 : 1 + Math.floor(r() * 20)));
    const amount = x.mode === "tau" ? x.tau : x.mode === "ratio" ? r() : 1 + Math.floor(r() * n);
    const vt = x.keepIf ? VARIANTS[1]! : VARIANTS[0]!;
    const c: SelCase = { colmass, visible, n, S: x.S, mode: x.mode, amount, normalizer: x.normalizer, pool: x.pool, keepFirst: x.keepFirst, keepLast: x.keepLast, keep: vt.keep };
    const config = x.smallWg && !x.keepIf ? { selectWorkgroup: 32, selectItems: 2 } : {};
    const got = await select(gpu(), { ...c, variant: vt.wgsl, config });
    const forced = forcedSet(c), nf = forced.filter(Boolean).length;
    for (let s = 0; s < x.S; s++) {
      const ns = normRef(c, s), gotNs = got.normScores.subarray(s * n, (s + 1) * n);
      closeTo(gotNs, ns, (i) => 1e-6 * Math.abs(ns[i]!) + 1e-30, `normScores[set ${s}]`);
      const cnt = got.count[s]!, ok = validP(c, s);
      const pOk = cnt > nf ? ok(cnt) : Array.from({ length: nf }, (_, i) => i + 1).some(ok);
      if (!pOk) throw new Error(`set ${s}: count ${cnt} invalid (forced ${nf}, mode ${x.mode}, amount ${amount})`);
      const gotOrder = Array.from(got.order.subarray(s * n, (s + 1) * n)), wantOrder = orderFromScores(gotNs, forced, cnt);
      if (gotOrder.join() !== wantOrder.join()) throw new Error(`set ${s}: order ${gotOrder.slice(0, 12).join()}... want ${wantOrder.slice(0, 12).join()}...`);
    }
  });
}

export function attentionProperty(gpu: () => ZvGpu) {
  return fc.asyncProperty(shape, fc.double({ min: 0, max: 1, noNaN: true }), fc.nat(2), async (sh, frac, tile) => {
    const r = rng(sh.seed), Hq = sh.Hkv * sh.g, f16 = sh.f16 && gpu().hasF16, { n, d } = sh, S = sh.perKvHead ? sh.Hkv : 1;
    const round = (a: Float32Array): Float32Array => (f16 ? roundF16(a) : a);
    const order = new Int32Array(S * n), count = new Int32Array(S);
    for (let s = 0; s < S; s++) {
      const cnt = Math.round(frac * n); // 0 never comes from select (p >= 1); the kernel must still zero every row
      const picked = new Set(sortedSubset(r, n, cnt));
      const all = Array.from({ length: n }, (_, j) => j);
      order.set([...all.filter((j) => picked.has(j)), ...all.filter((j) => !picked.has(j))], s * n);
      count[s] = cnt;
    }
    const c: AttnCase = {
      q: round(uniform(r, Hq * n * d)), k: round(uniform(r, sh.Hkv * n * d)), v: round(uniform(r, sh.Hkv * n * d)), order, count,
      Hq, Hkv: sh.Hkv, n, d, scale: 1 / Math.sqrt(d), perKvHead: sh.perKvHead, params: paramsFor(r, n), vt: VARIANTS[sh.variant]!,
    };
    // Other tilings (BK > BQ: the causal end falls inside a key tile; the 32-row tile GPUs pick) on one pipeline key.
    const tiles = [{}, { attnBQ: 8, attnBK: 32, attnTPR: 4 }, { attnBQ: 32, attnBK: 16, attnTPR: 8 }];
    const config = sh.variant === 0 && !f16 && d === 64 ? tiles[tile]! : {};
    const got = await sparseAttention(gpu(), { ...c, variant: c.vt.wgsl, useF16: f16, config });
    const want = attnRef(c);
    const tol = f16 ? (i: number): number => 2e-3 * Math.abs(want.o[i]!) + 2e-3 : (): number => 2e-5;
    closeTo(got.o, want.o, tol, "o");
    for (let kv = 0; kv < sh.Hkv; kv++) {
      const rows = count[sh.perKvHead ? kv : 0]! * d, off = kv * n * d;
      closeTo(got.kCache.subarray(off, off + rows), want.kCache.subarray(off, off + rows), () => 0, `kCache[${kv}]`);
      closeTo(got.vCache.subarray(off, off + rows), want.vCache.subarray(off, off + rows), () => 0, `vCache[${kv}]`);
    }
  });
}

export function decodeProperty(gpu: () => ZvGpu) {
  const arb = fc.record({ cap: fc.integer({ min: 1, max: 300 }), lenFrac: fc.double({ min: 0, max: 1, noNaN: true }), splits: fc.option(fc.integer({ min: 1, max: 9 }), { nil: undefined }), smallWg: fc.boolean() });
  return fc.asyncProperty(shape, arb, async (sh, x) => {
    const r = rng(sh.seed), Hq = sh.Hkv * sh.g, f16 = sh.f16 && gpu().hasF16, d = sh.d, len = Math.round(x.lenFrac * x.cap);
    const round = (a: Float32Array): Float32Array => (f16 ? roundF16(a) : a);
    const q = round(uniform(r, Hq * d)), kCache = round(uniform(r, sh.Hkv * x.cap * d)), vCache = round(uniform(r, sh.Hkv * x.cap * d));
    const config = x.smallWg && d === 64 && !f16 ? { decodeWorkgroup: 32 } : {}; // 2 dims per thread
    const got = await decode(gpu(), { q, kCache, vCache, length: len, Hq, Hkv: sh.Hkv, d, scale: 1 / Math.sqrt(d), useF16: f16, config, ...(x.splits ? { splits: x.splits } : {}) });
    const want = decodeRef(q, kCache, vCache, len, Hq, sh.Hkv, d, 1 / Math.sqrt(d));
    closeTo(got.o, want, f16 ? (i) => 2e-3 * Math.abs(want[i]!) + 2e-3 : () => 2e-5, "o");
  });
}

// ---- whole programs through the webgpu executor (test/wgsl-programs.test.ts and the GPU-host runner) -------------
export const programShape = fc.record({
  Hkv: fc.constantFrom(1, 2), g: fc.constantFrom(1, 2, 4), n: fc.integer({ min: 1, max: 160 }), d: fc.constantFrom(64, 128), seed: fc.nat(1 << 20),
});
export type ProgramShape = typeof programShape extends fc.Arbitrary<infer T> ? T : never;

/**
 * Runs one program on one shape and checks it against the interpreter (test/support/cuda-check.ts). "limitation":
 * the backend refused with its documented coded error (ZV4002, tau over signed raw scores), never a wrong answer.
 * Throws on a mismatch or any other error.
 */
export async function checkProgramCase(executor: Executor, p: Program, s: ProgramShape): Promise<"checked" | "limitation"> {
  const c: Case = { Hq: s.Hkv * s.g, Hkv: s.Hkv, n: s.n, d: s.d, dtype: "f32", seed: s.seed, params: {} };
  const inputs = inputsFor(c);
  let got;
  try {
    got = await executor.run(p, "prefill", inputs, {});
  } catch (e) {
    if ((e as ZipvlError).code === "ZV4002") return "limitation";
    throw e;
  }
  const bad = checkPrefill(p, c, inputs, got);
  if (bad.length > 0) throw new Error(`${JSON.stringify(c)}: ${bad.slice(0, 3).join("; ")}`);
  return "checked";
}

/** Decode over pruned caches of the given shapes ([Hkv, g, len, d]). Throws on a mismatch. */
export async function checkDecodeCases(executor: Executor, p: Program, shapes: readonly (readonly [number, number, number, number])[]): Promise<void> {
  for (const [Hkv, g, len, d] of shapes) {
    const c: Case = { Hq: Hkv * g, Hkv, n: len, d, dtype: "f32", seed: len, params: {} };
    const inputs = new Map([["q", randomTensor("f32", [c.Hq, 1, d], len)], ["k_cache", randomTensor("f32", [Hkv, len, d], len + 1)], ["v_cache", randomTensor("f32", [Hkv, len, d], len + 2)]]);
    const bad = checkDecode(c, inputs, await executor.run(p, "decode", inputs, {}));
    if (bad.length > 0) throw new Error(`decode ${JSON.stringify(c)}: ${bad.slice(0, 3).join("; ")}`);
  }
}
/** [Hkv, g, len, d] of the decode checks. */
export const DECODE_SHAPES = [[1, 1, 1, 64], [2, 4, 37, 128], [1, 8, 300, 64], [4, 2, 129, 128]] as const;
