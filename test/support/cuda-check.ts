// Differential checks of the GPU backends against the float64 interpreter, shared by the vitest GPU suite
// (test/gpu/*.test.ts, skipped without a GPU) and the bundled GPU-host runner (bench/gpu-check.ts).
// Every check gets fresh random inputs and poisoned outputs (the pipelines fill outputs with NaN bytes first).
import type { Expr } from "../../src/expr/ast.ts";
import { randomTensor } from "../../src/io/random.ts";
import type { Tensor } from "../../src/io/tensor.ts";
import { func, getFunc, program, type Program } from "../../src/ir/ir.ts";
import { bindPrefill } from "../../src/interp/bind.ts";
import { decodeAttention } from "../../src/interp/kernels.ts";
import { interpret, keepMask, knobValue, maskFn, scoreFn } from "../../src/interp/run.ts";
import { eliminateDeadCode } from "../../src/passes/simple.ts";

export interface Case {
  Hq: number;
  Hkv: number;
  n: number;
  d: number;
  dtype: "f32" | "f16" | "bf16";
  seed: number;
  params: Record<string, number>;
}

export function inputsFor(c: Case): Map<string, Tensor> {
  return new Map([
    ["q", randomTensor(c.dtype, [c.Hq, c.n, c.d], c.seed * 5 + 1)],
    ["k", randomTensor(c.dtype, [c.Hkv, c.n, c.d], c.seed * 5 + 2)],
    ["v", randomTensor(c.dtype, [c.Hkv, c.n, c.d], c.seed * 5 + 3)],
  ]);
}

/** The prefill function without attention outputs (and the ops only they need): selection reference at any n. */
export function selectionOnly(p: Program): Program {
  const f = getFunc(p, "prefill");
  const kept = func(f.name, f.body, f.outputs.filter((o) => !["o", "k_cache", "v_cache"].includes(o.name)));
  return program(p.name, p.params, [eliminateDeadCode(kept, p), getFunc(p, "decode")]);
}

const TOL: Record<string, number> = { f32: 2e-4, f16: 4e-3, bf16: 2.5e-2 };

/** Returns a list of failures (empty = pass). `sampleRows` bounds the attention reference cost at large n. */
export function checkPrefill(p: Program, c: Case, inputs: ReadonlyMap<string, Tensor>, got: ReadonlyMap<string, Tensor>, sampleRows = Infinity): string[] {
  const bad: string[] = [];
  const ref = interpret(selectionOnly(p), "prefill", inputs, { params: c.params });
  const n = c.n;
  const rScores = ref.get("scores")!.data;
  const gScores = got.get("scores")!.data;
  let maxMass = 0;
  for (const x of rScores) maxMass = Math.max(maxMass, Math.abs(x));
  for (let j = 0; j < rScores.length; j++) {
    if (!(Math.abs(rScores[j]! - gScores[j]!) <= 2e-3 * maxMass + 1e-5)) {
      bad.push(`scores[${j}] = ${gScores[j]} vs ${rScores[j]}`);
      break;
    }
  }
  const counts = got.get("count")!.data;
  const S = counts.length;
  const rNorm = ref.get("norm_scores")!.data;
  const sel = got.get("selected")!;
  const refCounts = ref.get("count")!.data;
  const b = bindPrefill(p, inputs, c.params, 0);
  const selNode = getFunc(p, "prefill").body.find((x) => x.op === "select")!;
  const mode = selNode.attrs.mode as string;
  const forcedMask = keepMask(selNode, b);
  const forced = (j: number): boolean => forcedMask[j] === 1;
  for (let s = 0; s < S; s++) {
    const cnt = counts[s]!;
    const row = S === 1 ? [...sel.data] : [...sel.data.subarray(s * sel.shape[1]!, s * sel.shape[1]! + cnt)];
    if (row.length !== cnt) bad.push(`set ${s}: ${row.length} selected but count ${cnt}`);
    for (let i = 1; i < row.length; i++) if (!(row[i]! > row[i - 1]!)) bad.push(`set ${s}: selected not strictly ascending at ${i}`);
    if (row.some((j) => j < 0 || j >= n)) bad.push(`set ${s}: selected position out of range`);
    for (let j = 0; j < n; j++) if (forced(j) && !row.includes(j)) bad.push(`set ${s}: forced token ${j} missing`);
    // The count: exact, except where the cumulative raw mass lands within rounding of tau * total.
    if (cnt !== refCounts[s]) {
      if (mode !== "tau") bad.push(`set ${s}: count ${cnt} vs ${refCounts[s]}`);
      else {
        const mass = Array.from(rScores.subarray(s * n, (s + 1) * n)).sort((a, x) => x - a);
        const total = mass.reduce((a, x) => a + x, 0);
        const cum = (k: number): number => mass.slice(0, k).reduce((a, x) => a + x, 0);
        const nf = Array.from({ length: n }, (_, j) => j).filter(forced).length;
        const lo = Math.min(cnt, refCounts[s]!);
        const target = (c.params.tau ?? 0.975) * total;
        const gap = Math.abs(cum(Math.max(lo, 1)) - target);
        if (!(gap <= 1e-4 * total) && !(cnt <= nf && refCounts[s]! <= nf)) bad.push(`set ${s}: tau count ${cnt} vs ${refCounts[s]} (|cum - target| = ${gap.toExponential(2)}, total ${total.toExponential(3)})`);
      }
    }
    // The identity: no unselected (non-forced) token may score clearly above a selected non-forced one.
    const inSel = new Uint8Array(n);
    for (const j of row) if (j >= 0) inSel[j] = 1;
    let minSel = Infinity;
    let maxUnsel = -Infinity;
    let maxNorm = 0;
    for (let j = 0; j < n; j++) {
      const v = rNorm[s * n + j]!;
      maxNorm = Math.max(maxNorm, Math.abs(v));
      if (forced(j)) continue;
      if (inSel[j]) minSel = Math.min(minSel, v);
      else maxUnsel = Math.max(maxUnsel, v);
    }
    if (maxUnsel > minSel + 2e-3 * maxNorm + 1e-6) bad.push(`set ${s}: an unselected token scores ${maxUnsel} above a selected one (${minSel})`);
  }
  const o = got.get("o");
  if (o) bad.push(...checkAttention(p, c, inputs, got, sampleRows));
  return bad;
}

/** Attention rows of the GPU's own selection, recomputed in float64 (a sample of rows at large n). */
function checkAttention(p: Program, c: Case, inputs: ReadonlyMap<string, Tensor>, got: ReadonlyMap<string, Tensor>, sampleRows: number): string[] {
  const bad: string[] = [];
  const { Hq, Hkv, n, d } = c;
  const g = Hq / Hkv;
  const q = inputs.get("q")!.data;
  const k = inputs.get("k")!.data;
  const v = inputs.get("v")!.data;
  const o = got.get("o")!.data;
  const kc = got.get("k_cache")!;
  const vc = got.get("v_cache")!;
  const counts = got.get("count")!.data;
  const sel = got.get("selected")!;
  const S = counts.length;
  const b = bindPrefill(p, inputs, c.params, 0);
  const sa = getFunc(p, "prefill").body.find((x) => x.op === "sparse_attn_compact")!;
  const scale = knobValue(sa.attrs.scale as Expr, b.env, "scale", "scale");
  const mod = scoreFn(sa.attrs.modifier as Expr, b.env);
  const mask = maskFn(sa.attrs.mask as Expr, b.env);
  const tol = TOL[c.dtype]!;
  const cmax = kc.shape[1]!;
  for (let kv = 0; kv < Hkv; kv++) {
    const s = S === 1 ? 0 : kv;
    const T = S === 1 ? sel.data : sel.data.subarray(s * sel.shape[1]!, s * sel.shape[1]! + counts[s]!);
    for (let i = 0; i < T.length; i++) {
      for (let x = 0; x < d; x++) {
        const src = (kv * n + T[i]!) * d + x;
        const dst = (kv * cmax + i) * d + x;
        if (kc.data[dst] !== k[src] || vc.data[dst] !== v[src]) {
          bad.push(`cache row ${i} of kv head ${kv} differs from token ${T[i]}`);
          i = T.length;
          break;
        }
      }
    }
  }
  for (let h = 0; h < Hq; h++) {
    const kv = Math.floor(h / g);
    const s = S === 1 ? 0 : kv;
    const T = S === 1 ? sel.data : sel.data.subarray(s * sel.shape[1]!, s * sel.shape[1]! + counts[s]!);
    const inSel = new Uint8Array(n);
    for (const j of T) inSel[j] = 1;
    for (let j = 0; j < n; j++) {
      if (inSel[j]) continue;
      for (let x = 0; x < d; x++) if (o[(h * n + j) * d + x] !== 0) {
        bad.push(`o[${h}, ${j}] should be a zero row`);
        j = n;
        break;
      }
    }
    const step = Math.max(1, Math.floor(T.length / Math.min(T.length, sampleRows / Hq)));
    for (let i = 0; i < T.length; i += step) {
      const qp = T[i]!;
      const sc: number[] = [];
      const idx: number[] = [];
      let mx = -Infinity;
      for (let j = 0; j < T.length; j++) {
        const kp = T[j]!;
        if (!mask(qp, kp)) continue;
        let dot = 0;
        for (let x = 0; x < d; x++) dot += q[(h * n + qp) * d + x]! * k[(kv * n + kp) * d + x]!;
        const val = mod(dot * scale, qp, kp);
        sc.push(val);
        idx.push(kp);
        mx = Math.max(mx, val);
      }
      let l = 0;
      const acc = new Float64Array(d);
      sc.forEach((val, t) => {
        const pr = Math.exp(val - mx);
        l += pr;
        for (let x = 0; x < d; x++) acc[x]! += pr * v[(kv * n + idx[t]!) * d + x]!;
      });
      for (let x = 0; x < d; x++) {
        const want = l > 0 ? acc[x]! / l : 0;
        const have = o[(h * n + qp) * d + x]!;
        if (!(Math.abs(want - have) <= tol * Math.max(1, Math.abs(want)))) {
          bad.push(`o[${h}, ${qp}, ${x}] = ${have} vs ${want}`);
          return bad;
        }
      }
    }
  }
  return bad;
}

export function checkDecode(c: Case, inputs: ReadonlyMap<string, Tensor>, got: ReadonlyMap<string, Tensor>): string[] {
  const kc = inputs.get("k_cache")!;
  const want = decodeAttention(inputs.get("q")!.data as Float64Array, kc.data as Float64Array, inputs.get("v_cache")!.data as Float64Array, c.Hq, c.Hkv, kc.shape[1]!, c.d, 1 / Math.sqrt(c.d), (s) => s);
  const have = got.get("o")!.data;
  const tol = TOL[c.dtype]!;
  // Relative to each head's output scale, not to 1: over a long cache o is an average of many V rows and much
  // smaller than 1, where an absolute tolerance of `tol` would accept anything.
  for (let h = 0; h < c.Hq; h++) {
    let scale = 0;
    for (let e = 0; e < c.d; e++) scale = Math.max(scale, Math.abs(want[h * c.d + e]!));
    for (let e = 0; e < c.d; e++) {
      const i = h * c.d + e;
      if (!(Math.abs(want[i]! - have[i]!) <= tol * (Math.abs(want[i]!) + 0.1 * scale) + 1e-6)) return [`decode o[${i}] = ${have[i]} vs ${want[i]} (head scale ${scale.toExponential(2)})`];
    }
  }
  return [];
}
