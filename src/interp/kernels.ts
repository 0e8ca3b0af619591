// The float64 reference semantics of every stage (docs/SEMANTICS.md). Plain loops over row-major arrays; the
// interpreter (run.ts) binds them to IR ops, and the fused ops reuse them with a different evaluation order.
export type ScoreFn = (s: number, qPos: number, kPos: number) => number;
export type MaskFn = (qPos: number, kPos: number) => boolean;

export interface Heads {
  readonly Hq: number;
  readonly Hkv: number;
  readonly n: number;
  readonly d: number;
}

const dot = (a: Float64Array, ao: number, b: Float64Array, bo: number, d: number): number => {
  let s = 0;
  for (let x = 0; x < d; x++) s += a[ao + x]! * b[bo + x]!;
  return s;
};

/** Probe probabilities A[h, i, j] (materialized, two passes per row: max/sum, then normalize). */
export function probeAttention(q: Float64Array, k: Float64Array, probes: Int32Array, h: Heads, scale: number, mod: ScoreFn, mask: MaskFn, activation: string): Float64Array {
  const { Hq, Hkv, n, d } = h;
  const m = probes.length;
  const g = Hq / Hkv;
  const A = new Float64Array(Hq * m * n);
  const row = new Float64Array(n);
  for (let hq = 0; hq < Hq; hq++) {
    const kv = Math.floor(hq / g);
    for (let i = 0; i < m; i++) {
      const p = probes[i]!;
      let mx = -Infinity;
      for (let j = 0; j < n; j++) {
        if (!mask(p, j)) {
          row[j] = NaN;
          continue;
        }
        row[j] = mod(dot(q, (hq * n + p) * d, k, (kv * n + j) * d, d) * scale, p, j);
        mx = Math.max(mx, row[j]!);
      }
      const base = (hq * m + i) * n;
      if (activation === "softmax") {
        let sum = 0;
        for (let j = 0; j < n; j++) if (!Number.isNaN(row[j]!)) sum += Math.exp(row[j]! - mx);
        for (let j = 0; j < n; j++) A[base + j] = Number.isNaN(row[j]!) ? 0 : Math.exp(row[j]! - mx) / sum;
      } else {
        for (let j = 0; j < n; j++) {
          const s = row[j]!;
          A[base + j] = Number.isNaN(s) ? 0 : activation === "sigmoid" ? 1 / (1 + Math.exp(-s)) : s;
        }
      }
    }
  }
  return A;
}

/** Column mass: sum over heads (per layer: S=1) or over the heads of each KV head (S=Hkv). */
export function columnMass(A: Float64Array, h: Heads, m: number, perKvHead: boolean): Float64Array {
  const { Hq, Hkv, n } = h;
  const g = Hq / Hkv;
  const out = new Float64Array((perKvHead ? Hkv : 1) * n);
  for (let hq = 0; hq < Hq; hq++) {
    const s = perKvHead ? Math.floor(hq / g) : 0;
    for (let i = 0; i < m; i++) {
      const base = (hq * m + i) * n;
      for (let j = 0; j < n; j++) out[s * n + j]! += A[base + j]!;
    }
  }
  return out;
}

/** Per-column divisor of the normalizer. */
export function normDivisor(kind: string, probes: Int32Array, n: number, mask: MaskFn): Float64Array {
  const out = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    if (kind === "n_minus_j") out[j] = n - j;
    else if (kind === "none") out[j] = 1;
    else for (const p of probes) if (mask(p, j)) out[j]! += 1;
  }
  return out;
}

export function normalizeScores(mass: Float64Array, div: Float64Array, n: number): Float64Array {
  return mass.map((a, idx) => {
    const dv = div[idx % n]!;
    return dv > 0 ? a / dv : 0;
  });
}

export function poolScores(s: Float64Array, n: number, kind: string, size: number): Float64Array {
  if (kind === "none" || size <= 1) return s.slice();
  const half = Math.floor(size / 2);
  const out = new Float64Array(s.length);
  for (let base = 0; base < s.length; base += n) {
    for (let j = 0; j < n; j++) {
      const lo = Math.max(0, j - half);
      const hi = Math.min(n - 1, j + half);
      let acc = kind === "max" ? -Infinity : 0;
      for (let x = lo; x <= hi; x++) acc = kind === "max" ? Math.max(acc, s[base + x]!) : acc + s[base + x]!;
      out[base + j] = kind === "max" ? acc : acc / (hi - lo + 1);
    }
  }
  return out;
}

/** Kept count before keep rules, per set. tau: smallest p whose cumulative raw mass >= tau * total. */
export function keptCount(mass: Float64Array, n: number, mode: string, amount: number): Int32Array {
  const S = mass.length / n;
  const out = new Int32Array(S);
  for (let s = 0; s < S; s++) {
    let p: number;
    if (mode === "all") p = n;
    else if (mode === "budget") p = Math.min(n, amount);
    // The 1e-9 keeps ratios like 0.3 * 10 (= 3.0000000000000004 in f64) at 3.
    else if (mode === "ratio") p = Math.max(1, Math.ceil(amount * n - 1e-9));
    else {
      const sorted = Array.from(mass.subarray(s * n, (s + 1) * n)).sort((a, b) => b - a);
      // The total is summed in the same order as the running sum, so tau = 1 always reaches it.
      let total = 0;
      for (const x of sorted) total += x;
      const target = amount * total;
      let cum = 0;
      p = n;
      for (let i = 0; i < n; i++) {
        cum += sorted[i]!;
        if (cum >= target) {
          p = i + 1;
          break;
        }
      }
    }
    out[s] = Math.min(n, Math.max(1, p));
  }
  return out;
}

/** Ascending selected positions followed by the ascending unselected ones; ties go to the smaller position. */
export function selectTopk(scores: Float64Array, n: number, counts: Int32Array, forced: Int32Array): { order: Int32Array; count: Int32Array } {
  const S = scores.length / n;
  const order = new Int32Array(S * n);
  const count = new Int32Array(S);
  for (let s = 0; s < S; s++) {
    const sel = new Uint8Array(n);
    let nf = 0;
    for (let j = 0; j < n; j++) if (forced[j]) (sel[j] = 1), nf++;
    const rest = Math.max(0, counts[s]! - nf);
    const cand = [];
    for (let j = 0; j < n; j++) if (!sel[j]) cand.push(j);
    cand.sort((a, b) => scores[s * n + b]! - scores[s * n + a]! || a - b);
    for (let x = 0; x < rest && x < cand.length; x++) sel[cand[x]!] = 1;
    let w = s * n;
    for (let j = 0; j < n; j++) if (sel[j]) order[w++] = j;
    count[s] = w - s * n;
    for (let j = 0; j < n; j++) if (!sel[j]) order[w++] = j;
  }
  return { order, count };
}

/** Token-sparse attention: rows in the selected set attend to selected keys the mask allows; other rows are 0. */
export function sparseAttention(
  q: Float64Array, k: Float64Array, v: Float64Array, h: Heads, order: Int32Array, count: Int32Array,
  scale: number, mod: ScoreFn, mask: MaskFn, tile = 0,
): Float64Array {
  const { Hq, Hkv, n, d } = h;
  const g = Hq / Hkv;
  const perKv = count.length > 1;
  const o = new Float64Array(Hq * n * d);
  const acc = new Float64Array(d);
  for (let hq = 0; hq < Hq; hq++) {
    const kv = Math.floor(hq / g);
    const s = perKv ? kv : 0;
    const c = count[s]!;
    const T = order.subarray(s * n, s * n + c);
    for (let i = 0; i < c; i++) {
      const qp = T[i]!;
      const qo = (hq * n + qp) * d;
      // Online softmax over key tiles (tile > 0, as the kernels do) or one pass with a precomputed max (tile 0).
      let mx = -Infinity;
      let l = 0;
      acc.fill(0);
      const step = tile > 0 ? tile : c;
      for (let j0 = 0; j0 < c; j0 += step) {
        const j1 = Math.min(c, j0 + step);
        const sc = [];
        let tmx = -Infinity;
        for (let j = j0; j < j1; j++) {
          const kp = T[j]!;
          if (!mask(qp, kp)) continue;
          const x = mod(dot(q, qo, k, (kv * n + kp) * d, d) * scale, qp, kp);
          sc.push([kp, x] as const);
          tmx = Math.max(tmx, x);
        }
        if (sc.length === 0) continue;
        const nm = Math.max(mx, tmx);
        const corr = Math.exp(mx - nm);
        l *= corr;
        for (let x = 0; x < d; x++) acc[x]! *= corr;
        for (const [kp, x] of sc) {
          const p = Math.exp(x - nm);
          l += p;
          const vo = (kv * n + kp) * d;
          for (let y = 0; y < d; y++) acc[y]! += p * v[vo + y]!;
        }
        mx = nm;
      }
      if (l > 0) for (let x = 0; x < d; x++) o[qo + x] = acc[x]! / l;
    }
  }
  return o;
}

/** K or V rows of the selected set, compacted: [Hkv, c, d] with c = max count; rows past a set's count are 0. */
export function compactRows(x: Float64Array, h: Heads, order: Int32Array, count: Int32Array): { data: Float64Array; c: number } {
  const { Hkv, n, d } = h;
  const c = Math.max(...count);
  const out = new Float64Array(Hkv * c * d);
  for (let kv = 0; kv < Hkv; kv++) {
    const s = count.length > 1 ? kv : 0;
    for (let i = 0; i < count[s]!; i++) out.set(x.subarray((kv * n + order[s * n + i]!) * d, (kv * n + order[s * n + i]! + 1) * d), (kv * c + i) * d);
  }
  return { data: out, c };
}

/** Decode: one query row per head against the whole (pruned) cache; no mask. */
export function decodeAttention(q: Float64Array, kc: Float64Array, vc: Float64Array, Hq: number, Hkv: number, c: number, d: number, scale: number, mod: (s: number) => number): Float64Array {
  const o = new Float64Array(Hq * d);
  const g = Hq / Hkv;
  const sc = new Float64Array(c);
  for (let h = 0; h < Hq; h++) {
    const kv = Math.floor(h / g);
    let mx = -Infinity;
    for (let j = 0; j < c; j++) {
      sc[j] = mod(dot(q, h * d, kc, (kv * c + j) * d, d) * scale);
      mx = Math.max(mx, sc[j]!);
    }
    let l = 0;
    for (let j = 0; j < c; j++) {
      const p = Math.exp(sc[j]! - mx);
      l += p;
      for (let y = 0; y < d; y++) o[h * d + y]! += p * vc[(kv * c + j) * d + y]!;
    }
    if (l > 0) for (let y = 0; y < d; y++) o[h * d + y]! /= l;
  }
  return o;
}
