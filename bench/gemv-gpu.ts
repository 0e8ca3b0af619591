// The fused small-batch linear kernels (zv_gemv.cuh through cuda-ops' normProject / linearAdd / normGatedUp /
// linear) on the GPU: (1) a differential property against the composition of plain ops (cuBLASLt GEMMs + the model
// kernels, i.e. src/model/fused.ts on ops with gemv off), fresh seed per run, outputs poisoned with NaN first;
// (2) timings of each decoder-layer piece of the LLaVA-Next-13B shape at M = 1, 2, 4, 8 rows, fused vs composed,
// with the weight bytes each reads over the time, and the device copy rate measured in the same run.
//   bundle: node bench/bundle.mjs (-> .gpu/gemv-gpu.mjs)   GPU host: node .gpu/gemv-gpu.mjs [--cases=N] [--no-bench]
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { openCuda } from "../src/backends/cuda/executor.ts";
import { BufferPool } from "../src/backends/cuda/model-pool.ts";
import { eltCopyTbps } from "./shapes.ts";
import { parseProgram } from "../src/ir/parse.ts";
import { verifyProgram } from "../src/ir/verify.ts";
import { createCudaOpsWith, type CudaOpsHandle } from "../src/model/cuda-ops.ts";
import { knobs } from "../src/knobs.ts";
import { argmax } from "../src/model/sampling.ts";
import { linearAdd, normGatedUp, normProject } from "../src/model/fused.ts";
import type { DTensor, ModelOps } from "../src/model/ops.ts";
import type { DeviceBuffer } from "../src/runtime/native.ts";

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const cases = Number(flag("cases") ?? 200);
const seed = Number(flag("seed") ?? Date.now() % 1_000_000);
const log = (s: string): void => void process.stdout.write(s + "\n");

const dense = verifyProgram(parseProgram(readFileSync("test/golden/dense.final.ir", "utf8")));
const ctx = openCuda();
log(`device: ${ctx.dev.info.name} SMs ${ctx.dev.info.smCount}; seed ${seed}; PDL ${knobs.pdl}, ring ${knobs.gemvRing}, chunk ${knobs.gemvChunk || "auto"}`);
const A = createCudaOpsWith(ctx, "bf16", dense, { gemv: true, gemvRows: 8 });
const B = createCudaOpsWith(ctx, "bf16", dense, { gemv: false });

function rnd(n: number, s: number, scale = 1): Float32Array {
  let x = s >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (((x >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}
/** The same host data on both ops. */
const both = (shape: number[], data: Float32Array): [DTensor, DTensor] => [A.fromF32(shape, data), B.fromF32(shape, data)];
/** Fills the pool with NaN buffers of this shape's size, so an unwritten output element shows. */
function poison(ops: CudaOpsHandle, shape: number[]): void {
  const n = shape.reduce((a, b) => a * b, 1);
  const t = ops.empty(shape);
  ops.bufferOf(t).write(new Uint8Array(2 * n).fill(0xff), 0, ops.stream);
  ops.free(t);
}
/** Within 2% of the largest reference value: both sides round to bf16 after the linear, the bias, rope / silu and the
 *  residual, so a value near a rounding boundary may land a few ulps (2^-8 each) apart; an index error is O(100%). */
function compare(what: string, a: DTensor, b: DTensor): void {
  const x = A.toF32(a), y = B.toF32(b);
  if (a.shape.join() !== b.shape.join()) throw new Error(`${what}: shapes [${a.shape}] vs [${b.shape}]`);
  let max = 0, err = 0, at = -1;
  for (let i = 0; i < y.length; i++) max = Math.max(max, Math.abs(y[i]!));
  for (let i = 0; i < y.length; i++) {
    const e = Math.abs(x[i]! - y[i]!);
    if (!(e <= err)) (err = Number.isNaN(e) ? Infinity : e), (at = i);
  }
  if (!(err <= 2e-2 * max + 1e-4)) throw new Error(`${what}: max error ${err} at ${at} (fused ${x[at]}, composed ${y[at]}) over max |ref| ${max}`);
}

const caseArb = fc.record({
  kind: fc.constantFrom("qkv", "linear", "linearAdd", "linearAddHeads", "gated"),
  M: fc.integer({ min: 1, max: 8 }),
  // K: multiples of 8 around the 1024-element stage and the shared-memory chunk (2048 at 8 rows).
  K8: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 120, max: 140 }), fc.integer({ min: 250, max: 800 })),
  d: fc.constantFrom(64, 128),
  heads: fc.integer({ min: 1, max: 6 }),
  kvDiv: fc.constantFrom(1, 2),
  N: fc.integer({ min: 1, max: 700 }),
  bias: fc.boolean(),
  norm: fc.boolean(),
  s: fc.nat(1 << 30),
});

let ran = 0;
const byKind = new Map<string, number>();
fc.assert(fc.property(caseArb, (c) => {
  const free: DTensor[] = [];
  const keep = <T extends DTensor>(t: T): T => (free.push(t), t);
  const pair = (shape: number[], salt: number, scale = 1): [DTensor, DTensor] => both(shape, rnd(shape.reduce((a, b) => a * b, 1), c.s + salt, scale)).map(keep) as [DTensor, DTensor];
  try {
    const M = c.M;
    if (c.kind === "qkv") {
      const H = c.heads * c.kvDiv, Hkv = c.heads, K = H * c.d;
      const [xa, xb] = pair([M, K], 1);
      const [na, nb] = pair([K], 2);
      const w = [pair([H * c.d, K], 3, 0.05), pair([Hkv * c.d, K], 4, 0.05), pair([Hkv * c.d, K], 5, 0.05)];
      const bs = c.bias ? [pair([H * c.d], 6), pair([Hkv * c.d], 7), pair([Hkv * c.d], 8)] : [];
      const positions = Int32Array.from({ length: M }, (_, i) => (c.s % 5000) + 7 * i);
      const invFreq = Float32Array.from({ length: c.d / 2 }, (_, i) => 10000 ** (-(2 * i) / c.d));
      const proj = (side: 0 | 1) => [
        { w: w[0]![side], bias: bs[0]?.[side], heads: H, rope: true },
        { w: w[1]![side], bias: bs[1]?.[side], heads: Hkv, rope: true },
        { w: w[2]![side], bias: bs[2]?.[side], heads: Hkv, rope: false },
      ];
      for (const [hh] of [[H], [Hkv], [Hkv]]) poison(A, [hh!, M, c.d]);
      const rope = { positions, invFreq, scale: 1 };
      // Half the cases also write k and v into paged-cache rows (the serving step's folded append): distinct rows
      // in a poisoned page array, some (sequence, head) pairs skipped (-1).
      const sinkOn = c.s % 2 === 1;
      const nRows = Hkv * M + 3;
      const dst = Int32Array.from({ length: Hkv * M }, (_, i) => ((i * 7 + c.s) % 5 === 0 ? -1 : (i * 37 + c.s) % nRows));
      const taken = new Set<number>();
      dst.forEach((r, i) => { if (r >= 0 && taken.has(r)) dst[i] = -1; else taken.add(r); });
      const rowsBuf = ctx.dev.alloc(4 * dst.length), kp = ctx.dev.alloc(2 * nRows * c.d), vp = ctx.dev.alloc(2 * nRows * c.d);
      const sink = sinkOn ? { target: { kind: "cuda-paged" as const, rows: rowsBuf, k: kp, v: vp }, written: false } : undefined;
      try {
        rowsBuf.write(dst, 0, A.stream);
        for (const p of [kp, vp]) p.write(new Uint8Array(p.bytes).fill(0xff), 0, A.stream);
        const ra = normProject(A, xa, c.norm ? { w: na, eps: 1e-5 } : undefined, proj(0), rope, sink).map(keep);
        const rb = normProject(B, xb, c.norm ? { w: nb, eps: 1e-5 } : undefined, proj(1), rope).map(keep);
        ra.forEach((t, i) => compare(`qkv[${i}] M ${M} K ${K} d ${c.d}`, t, rb[i]!));
        if (sink) {
          if (!sink.written) throw new Error(`qkv M ${M}: the fused launch did not take the sink`);
          A.stream.synchronize();
          for (const [name, t, p] of [["k", ra[1]!, kp], ["v", ra[2]!, vp]] as const) {
            const out = new Uint16Array(A.bufferOf(t).read(new Uint8Array(2 * Hkv * M * c.d), 0, A.stream).buffer);
            const pages = new Uint16Array(p.read(new Uint8Array(p.bytes), 0, A.stream).buffer);
            for (let r = 0; r < nRows; r++) {
              const src = dst.indexOf(r);
              for (let j = 0; j < c.d; j++) {
                const want = src >= 0 ? out[src * c.d + j]! : 0xffff;
                if (pages[r * c.d + j] !== want) throw new Error(`qkv sink ${name}: page row ${r} element ${j} = ${pages[r * c.d + j]} (want ${want}, from ${src < 0 ? "nothing" : `head-major row ${src}`})`);
              }
            }
          }
        }
      } finally {
        A.stream.synchronize();
        for (const b of [rowsBuf, kp, vp]) b.free();
      }
    } else if (c.kind === "gated") {
      const K = c.K8 * 8, N = c.N;
      const [xa, xb] = pair([M, K], 1);
      const [na, nb] = pair([K], 2);
      const [ga, gb] = pair([N, K], 3, 0.05);
      const [ua, ub] = pair([N, K], 4, 0.05);
      const bg = c.bias ? pair([N], 5) : undefined, bu = c.bias ? pair([N], 6) : undefined;
      poison(A, [M, N]);
      const ra = keep(normGatedUp(A, xa, { w: na, eps: 1e-6 }, { w: ga, bias: bg?.[0] }, { w: ua, bias: bu?.[0] }));
      const rb = keep(normGatedUp(B, xb, { w: nb, eps: 1e-6 }, { w: gb, bias: bg?.[1] }, { w: ub, bias: bu?.[1] }));
      compare(`gated M ${M} K ${K} N ${N}`, ra, rb);
    } else {
      const heads = c.kind === "linearAddHeads";
      const K = heads ? c.heads * c.d : c.K8 * 8, N = c.N;
      const [xa, xb] = heads ? pair([c.heads, M, c.d], 1) : pair([M, K], 1);
      const [wa, wb] = pair([N, K], 3, 0.05);
      const bb = c.bias ? pair([N], 5) : undefined;
      poison(A, [M, N]);
      if (c.kind === "linear") {
        compare(`linear M ${M} K ${K} N ${N}`, keep(A.linear(xa, wa, bb?.[0])), keep(B.linear(xb, wb, bb?.[1])));
      } else {
        const [rA, rB] = pair([M, N], 9);
        compare(`${c.kind} M ${M} K ${K} N ${N}`, keep(linearAdd(A, xa, wa, bb?.[0], rA)), keep(linearAdd(B, xb, wb, bb?.[1], rB)));
      }
    }
    ran++;
    byKind.set(c.kind, (byKind.get(c.kind) ?? 0) + 1);
    return true;
  } finally {
    for (const t of free) (A.free(t), B.free(t));
  }
}), { seed, numRuns: cases, endOnFailure: true });
log(`differential: ${ran} cases pass (${[...byKind].map(([k, n]) => `${k} ${n}`).join(", ")}), fused vs composed (cuBLASLt + model kernels)`);

// Greedy sampling on the device (zv_model argmax, the serving step's last launch) against sampling.ts's argmax on the
// same bf16 logits: planted ties (the smaller id wins), NaN anywhere and at index 0 (which wins), -inf, a row of NaN.
let amCases = 0;
fc.assert(fc.property(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 40000 }), fc.nat(1 << 30), fc.constantFrom("plain", "ties", "nan", "nan0", "allnan", "neginf"), (rows, V, s, kind) => {
  const f = rnd(rows * V, s + 11, 8);
  for (let r = 0; r < rows; r++) {
    const row = f.subarray(r * V, (r + 1) * V);
    if (kind === "ties" && V > 1) row[(s + 7 * r) % V] = row[(s + 13 * r) % V] = 9;
    if (kind === "nan") row[(s + r) % V] = NaN;
    if (kind === "nan0") row[0] = NaN;
    if (kind === "allnan") row.fill(NaN);
    if (kind === "neginf") row.fill(-Infinity, 0, Math.ceil(V / 2));
  }
  const x = A.fromF32([rows, V], f);
  const ids = ctx.dev.alloc(4 * rows), copy = ctx.dev.alloc(4 * 3 * rows), slot = ctx.dev.alloc(4);
  try {
    ids.write(new Int32Array(rows).fill(-7), 0, A.stream);
    slot.write(Int32Array.of(2), 0, A.stream);
    A.kernels.argmax(A.bufferOf(x), ids, rows, V, { base: copy, slot, stride: rows });
    const host = A.toF32(x); // the bf16 values the kernel saw
    const got = ids.read(new Int32Array(rows), 0, A.stream), again = copy.read(new Int32Array(rows), 4 * 2 * rows, A.stream);
    for (let r = 0; r < rows; r++) {
      const want = argmax(host.subarray(r * V, (r + 1) * V));
      if (got[r] !== want || again[r] !== want) throw new Error(`argmax ${kind} rows ${rows} V ${V} row ${r}: device ${got[r]} / copy ${again[r]}, host ${want}`);
    }
    amCases++;
    return true;
  } finally {
    A.stream.synchronize();
    A.free(x);
    for (const b of [ids, copy, slot]) b.free();
  }
}), { seed: seed + 1, numRuns: Math.max(20, Math.min(cases, 60)), endOnFailure: true });
log(`greedy sampling on the device: ${amCases} cases equal the host argmax`);

if (!args.includes("--no-bench")) {
  const copyTbps = eltCopyTbps(A);
  log(`copy rate: ${copyTbps.toFixed(2)} TB/s (elt copy of 1 GiB, read + write)`);

  // 13B decoder-layer pieces.
  const H = 5120, I = 13824, Hq = 40, d = 128, V = 32064;
  const mk = (ops: CudaOpsHandle, shape: number[], salt: number): DTensor => {
    const t = ops.empty(shape);
    ops.kernels.init(ops.bufferOf(t), shape.reduce((a, b) => a * b, 1), salt, 0.02);
    return t;
  };
  const set = (ops: CudaOpsHandle) => ({
    wq: mk(ops, [H, H], 1), wk: mk(ops, [H, H], 2), wv: mk(ops, [H, H], 3), wo: mk(ops, [H, H], 4),
    wg: mk(ops, [I, H], 5), wu: mk(ops, [I, H], 6), wd: mk(ops, [H, I], 7), lm: mk(ops, [V, H], 8), nw: mk(ops, [H], 9),
  });
  const wA = set(A), wB = set(B);
  const invFreq = Float32Array.from({ length: d / 2 }, (_, i) => 10000 ** (-(2 * i) / d));
  // GPU time per call: 10 calls captured in one CUDA graph (as the serving engine replays a step), replayed 3 times,
  // so the host's launch rate does not count against the composition's extra launches.
  const time = (ops: CudaOpsHandle, body: () => DTensor[]): number => {
    const pool = new BufferPool(ops.ctx.dev);
    const ten = (): void => {
      for (let i = 0; i < 10; i++) body().forEach((t) => ops.free(t));
    };
    ops.withPool(pool, ten);
    pool.frozen = true;
    const graph = ops.ctx.dev.captureGraph(ops.stream, () => ops.withPool(pool, ten));
    pool.frozen = false;
    graph.launch(ops.stream);
    const ms = ops.ctx.dev.time(() => {
      for (let i = 0; i < 3; i++) graph.launch(ops.stream);
    }, ops.stream);
    graph.destroy();
    ops.sync();
    pool.release();
    return (ms / 30) * 1000;
  };
  log("\n| piece | M | weights MB | fused us | GB/s | composed us | GB/s | composed / fused |");
  log("|---|---:|---:|---:|---:|---:|---:|---:|");
  const totals = new Map<number, [number, number, number]>();
  for (const M of (flag("rows") ?? "1,2,4,8").split(",").map(Number)) {
    const pieces: [string, number, (ops: CudaOpsHandle, w: ReturnType<typeof set>, x: DTensor, o: DTensor, m: DTensor) => DTensor[]][] = [
      ["norm+qkv+rope", 3 * H * H * 2, (ops, w, x) => normProject(onDevice(ops), x, { w: w.nw, eps: 1e-5 }, [{ w: w.wq, heads: Hq, rope: true }, { w: w.wk, heads: Hq, rope: true }, { w: w.wv, heads: Hq, rope: false }], { positions: Int32Array.from({ length: M }, (_, i) => 3000 + i), invFreq, scale: 1 })],
      // Diagnostic (not in the layer total): the same q/k/v launch without the rope epilogue.
      ["(norm+qkv, no rope)", 3 * H * H * 2, (ops, w, x) => normProject(onDevice(ops), x, { w: w.nw, eps: 1e-5 }, [{ w: w.wq, heads: Hq, rope: false }, { w: w.wk, heads: Hq, rope: false }, { w: w.wv, heads: Hq, rope: false }], undefined)],
      ["o_proj+residual", H * H * 2, (ops, w, x, o) => [linearAdd(ops, o, w.wo, undefined, x)]],
      ["norm+gate/up+silu", 2 * I * H * 2, (ops, w, x) => [normGatedUp(ops, x, { w: w.nw, eps: 1e-5 }, { w: w.wg }, { w: w.wu })]],
      ["down+residual", I * H * 2, (ops, w, x, _o, m) => [linearAdd(ops, m, w.wd, undefined, x)]],
      ["lm_head", V * H * 2, (ops, w, x) => [ops.linear(x, w.lm)]],
    ];
    // Positions on the device (a host upload cannot be captured), as the serving engine's graph view does.
    const posOf = new Map<CudaOpsHandle, DeviceBuffer>();
    const onDevice = (ops: CudaOpsHandle): ModelOps => {
      let pos = posOf.get(ops);
      if (!pos) posOf.set(ops, (pos = ops.ctx.dev.upload(Int32Array.from({ length: M }, (_, i) => 3000 + i), ops.stream)));
      const p = pos;
      return { ...ops, rope: (x, _q, f, sc) => ops.ropeFrom(x, p, f, sc), normProject: (x, n, pr, r) => ops.normProjectAt(x, n, pr, r, p) };
    };
    const inputs = (ops: CudaOpsHandle) => ({ x: mk(ops, [M, H], 11), o: mk(ops, [Hq, M, d], 12), m: mk(ops, [M, I], 13) });
    const iA = inputs(A), iB = inputs(B);
    let layerA = 0, layerB = 0, layerBytes = 0;
    for (const [name, bytes, f] of pieces) {
      const ta = time(A, () => f(A, wA, iA.x, iA.o, iA.m));
      const tb = time(B, () => f(B, wB, iB.x, iB.o, iB.m));
      if (name !== "lm_head" && !name.startsWith("(")) (layerA += ta, layerB += tb, layerBytes += bytes);
      log(`| ${name} | ${M} | ${(bytes / 1e6).toFixed(1)} | ${ta.toFixed(1)} | ${(bytes / ta / 1e3).toFixed(0)} | ${tb.toFixed(1)} | ${(bytes / tb / 1e3).toFixed(0)} | ${(tb / ta).toFixed(2)}x |`);
    }
    totals.set(M, [layerA, layerB, layerBytes]);
    for (const b of posOf.values()) b.free();
    for (const t of Object.values(iA)) A.free(t);
    for (const t of Object.values(iB)) B.free(t);
  }
  for (const [M, [a, b, bytes]] of totals) {
    log(`layer linear work at M ${M}: fused ${a.toFixed(1)} us (${(bytes / a / 1e3).toFixed(0)} GB/s, ${((100 * bytes) / a / 1e3 / (copyTbps * 1e3)).toFixed(0)}% of the copy rate), composed ${b.toFixed(1)} us (${(bytes / b / 1e3).toFixed(0)} GB/s); x40 layers: ${((40 * a) / 1000).toFixed(2)} vs ${((40 * b) / 1000).toFixed(2)} ms`);
  }
}
A.dispose();
B.dispose();
