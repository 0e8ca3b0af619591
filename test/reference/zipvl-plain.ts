// An independent, deliberately plain float64 implementation of one ZipVL prefill layer, written only from
// /work/shared/ZIPVL.md and docs/SEMANTICS.md (not from src/interp). It exists so that the project's interpreter
// can be checked against a second reading of the formulas (test/zipvl-reference.test.ts).
//
// Layout: q [Hq,n,d], k and v [Hkv,n,d], row-major; query head h reads KV head floor(h / g), g = Hq / Hkv.
// Everything is float64 with straightforward loops; the interpreter rounds its outputs to f32, the test does the same
// to these results before comparing.

export type Normalizer = "visible" | "n_minus_j" | "none";
export type Accumulate = "layer" | "kv_head";
export type CountRule =
  | { readonly kind: "tau"; readonly tau: number }
  | { readonly kind: "ratio"; readonly ratio: number }
  | { readonly kind: "budget"; readonly budget: number }
  | { readonly kind: "all" };

export interface Dims {
  readonly Hq: number;
  readonly Hkv: number;
  readonly n: number;
  readonly d: number;
}

export interface Qkv {
  readonly dims: Dims;
  readonly q: ArrayLike<number>;
  readonly k: ArrayLike<number>;
  readonly v: ArrayLike<number>;
}

/** Deliberately WRONG variants, used only to show that a test tells them apart from the right formulas. */
export type Mutant =
  | "none"
  /** p from the cumulative NORMALIZED scores instead of the raw column mass. */
  | "count_from_normalized"
  /** the kept tokens are the top p by RAW column mass instead of the normalized score. */
  | "identity_from_raw";

export interface PlainOptions {
  readonly normalizer: Normalizer;
  readonly accumulate: Accumulate;
  readonly count: CountRule;
  readonly keepFirst?: number;
  readonly keepLast?: number;
  /** The layer gate: for layer < fromLayer every token is kept. */
  readonly fromLayer?: number;
  readonly layer?: number;
  /** Score scale; default 1 / sqrt(d) (the same scale for probe scores and the sparse attention). */
  readonly scale?: number;
  readonly mutant?: Mutant;
}

/** One selection: the whole layer (accumulate "layer") or one KV head (accumulate "kv_head"). */
export interface Selection {
  /** a_j: raw column mass. */
  readonly raw: Float64Array;
  /** s_j: normalized score. */
  readonly norm: Float64Array;
  /** p before the keep rules. */
  readonly p: number;
  /** |T|. */
  readonly count: number;
  /** T, ascending. */
  readonly selected: readonly number[];
  /** tau only: min over k of |cumulative_k - tau * total| / total (how close the count is to flipping); else Infinity. */
  readonly countMargin: number;
  /** Relative gap between the weakest chosen and the strongest unchosen non-forced candidate (0 on an exact tie,
   *  Infinity when nothing is left to choose or nothing is chosen by score). */
  readonly identityMargin: number;
}

export interface PlainResult {
  readonly probes: readonly number[];
  /** One entry for accumulate "layer", Hkv entries for "kv_head". */
  readonly groups: readonly Selection[];
  /** [Hq,n,d]; rows of tokens outside the head's selection are zero. */
  readonly o: Float64Array;
  /** Per KV head: [count, d] rows k[kv, T[i]] and v[kv, T[i]]. */
  readonly kCache: readonly Float64Array[];
  readonly vCache: readonly Float64Array[];
}

function idx3(n: number, d: number, h: number, t: number, c: number): number {
  return (h * n + t) * d + c;
}

function dot(a: ArrayLike<number>, aOff: number, b: ArrayLike<number>, bOff: number, d: number): number {
  let s = 0;
  for (let c = 0; c < d; c++) s += (a[aOff + c] as number) * (b[bOff + c] as number);
  return s;
}

/** Softmax of `x` (all entries visible); max-subtracted. */
function softmax(x: readonly number[]): number[] {
  if (x.length === 0) return [];
  let m = -Infinity;
  for (const v of x) m = Math.max(m, v);
  const e = x.map((v) => Math.exp(v - m));
  let s = 0;
  for (const v of e) s += v;
  return e.map((v) => v / s);
}

/** `recent(N)`: the last min(N, n) rows, ascending. */
export function recentProbes(n: number, recent: number): number[] {
  const r = Math.min(Math.max(recent, 0), n);
  const out: number[] = [];
  for (let i = n - r; i < n; i++) out.push(i);
  return out;
}

/**
 * Probe attention A[h][i][j] = softmax over visible j (key position j <= probe position P[i]) of
 * scale * q[h, P[i]] . k[h/g, j]; invisible entries are 0.
 */
export function probeAttention(x: Qkv, probes: readonly number[], scale: number): Float64Array[][] {
  const { Hq, Hkv, n, d } = x.dims;
  const g = Hq / Hkv;
  const out: Float64Array[][] = [];
  for (let h = 0; h < Hq; h++) {
    const kv = Math.floor(h / g);
    const rows: Float64Array[] = [];
    for (const qp of probes) {
      const logits: number[] = [];
      for (let j = 0; j <= qp && j < n; j++) logits.push(scale * dot(x.q, idx3(n, d, h, qp, 0), x.k, idx3(n, d, kv, j, 0), d));
      const p = softmax(logits);
      const row = new Float64Array(n);
      p.forEach((v, j) => (row[j] = v));
      rows.push(row);
    }
    out.push(rows);
  }
  return out;
}

/** Column mass: per layer a[0][j] = sum over all heads and probe rows; per KV head a[kv][j] = sum over its g heads. */
export function columnMass(A: Float64Array[][], dims: Dims, accumulate: Accumulate): Float64Array[] {
  const { Hq, Hkv, n } = dims;
  const g = Hq / Hkv;
  const groups = accumulate === "layer" ? 1 : Hkv;
  const out = Array.from({ length: groups }, () => new Float64Array(n));
  for (let h = 0; h < Hq; h++) {
    const target = out[accumulate === "layer" ? 0 : Math.floor(h / g)] as Float64Array;
    for (const row of A[h] as Float64Array[]) for (let j = 0; j < n; j++) target[j] = (target[j] as number) + (row[j] as number);
  }
  return out;
}

/** nnz_j of the normalizer: visible -> #{i : P[i] >= j}; n_minus_j -> n - j; none -> 1. */
export function normalizerDenominators(n: number, probes: readonly number[], kind: Normalizer): number[] {
  const out: number[] = [];
  for (let j = 0; j < n; j++) {
    if (kind === "visible") out.push(probes.filter((p) => p >= j).length);
    else if (kind === "n_minus_j") out.push(n - j);
    else out.push(1);
  }
  return out;
}

/** s_j = a_j / nnz_j, 0 where nnz_j = 0. */
export function normalize(a: Float64Array, den: readonly number[]): Float64Array {
  return a.map((v, j) => ((den[j] as number) === 0 ? 0 : v / (den[j] as number)));
}

/** Positions sorted by value descending, ties to the smaller position. */
function rank(values: ArrayLike<number>, positions: readonly number[]): number[] {
  return [...positions].sort((x, y) => (values[y] as number) - (values[x] as number) || x - y);
}

/** The tau count: sort descending, p = smallest count whose cumulative mass >= tau * total, p >= 1. */
export function tauCount(mass: ArrayLike<number>, tau: number): { p: number; margin: number } {
  const n = mass.length;
  const sorted = Array.from(mass).sort((x, y) => y - x);
  let total = 0;
  for (const v of sorted) total += v;
  const thr = tau * total;
  let p = 0;
  let cum = 0;
  let margin = Infinity;
  for (let k = 1; k <= n; k++) {
    cum += sorted[k - 1] as number;
    if (total > 0) margin = Math.min(margin, Math.abs(cum - thr) / total);
    if (p === 0 && cum >= thr) p = k;
  }
  if (p === 0) p = n; // unreachable in exact arithmetic for tau <= 1
  return { p: Math.max(1, p), margin };
}

/** p before the keep rules, for every count rule. */
export function countOf(rule: CountRule, raw: Float64Array, norm: Float64Array, mutant: Mutant): { p: number; margin: number } {
  const n = raw.length;
  switch (rule.kind) {
    case "tau":
      return tauCount(mutant === "count_from_normalized" ? norm : raw, rule.tau);
    case "ratio":
      return { p: Math.max(1, Math.ceil(rule.ratio * n)), margin: Infinity };
    case "budget":
      return { p: Math.min(n, rule.budget), margin: Infinity };
    case "all":
      return { p: n, margin: Infinity };
  }
}

/** T = F united with the top max(0, p - |F|) non-forced tokens by `by` (ties to the smaller position), ascending. */
export function chooseTokens(
  by: ArrayLike<number>, n: number, p: number, keepFirst: number, keepLast: number,
): { selected: number[]; margin: number } {
  const forced = new Set<number>();
  for (let j = 0; j < Math.min(keepFirst, n); j++) forced.add(j);
  for (let j = Math.max(0, n - keepLast); j < n; j++) forced.add(j);
  const candidates: number[] = [];
  for (let j = 0; j < n; j++) if (!forced.has(j)) candidates.push(j);
  const ranked = rank(by, candidates);
  const r = Math.max(0, p - forced.size);
  const chosen = ranked.slice(0, r);
  let margin = Infinity;
  if (r > 0 && r < ranked.length) {
    const lo = by[ranked[r - 1] as number] as number;
    const hi = by[ranked[r] as number] as number;
    const mag = Math.max(Math.abs(lo), Math.abs(hi));
    margin = mag === 0 ? 0 : (lo - hi) / mag;
  }
  return { selected: [...forced, ...chosen].sort((x, y) => x - y), margin };
}

/** O[h, T[i]] = softmax over j <= i of scale * q[h,T[i]] . k[kv,T[j]], applied to v[kv,T[j]]; other rows zero. */
export function sparseAttention(x: Qkv, selectedOf: (kv: number) => readonly number[], scale: number): Float64Array {
  const { Hq, Hkv, n, d } = x.dims;
  const g = Hq / Hkv;
  const o = new Float64Array(Hq * n * d);
  for (let h = 0; h < Hq; h++) {
    const kv = Math.floor(h / g);
    const T = selectedOf(kv);
    for (let i = 0; i < T.length; i++) {
      const qi = T[i] as number;
      const logits: number[] = [];
      for (let j = 0; j <= i; j++) logits.push(scale * dot(x.q, idx3(n, d, h, qi, 0), x.k, idx3(n, d, kv, T[j] as number, 0), d));
      const w = softmax(logits);
      for (let j = 0; j <= i; j++) {
        for (let c = 0; c < d; c++) {
          const at = idx3(n, d, h, qi, c);
          o[at] = (o[at] as number) + (w[j] as number) * (x.v[idx3(n, d, kv, T[j] as number, c)] as number);
        }
      }
    }
  }
  return o;
}

/** Rows src[kv, T[i], :] gathered into [count, d]. */
export function gatherRows(src: ArrayLike<number>, dims: Dims, kv: number, T: readonly number[]): Float64Array {
  const { n, d } = dims;
  const out = new Float64Array(T.length * d);
  T.forEach((t, i) => {
    for (let c = 0; c < d; c++) out[i * d + c] = src[idx3(n, d, kv, t, c)] as number;
  });
  return out;
}

/** One ZipVL prefill layer with explicit probe rows (ascending, unique, in [0, n)). */
export function zipvlPrefill(x: Qkv, probes: readonly number[], opts: PlainOptions): PlainResult {
  const { Hq, Hkv, n, d } = x.dims;
  if (!Number.isInteger(Hq / Hkv)) throw new RangeError(`Hq=${Hq} is not a multiple of Hkv=${Hkv}`);
  const scale = opts.scale ?? 1 / Math.sqrt(d);
  const mutant = opts.mutant ?? "none";
  const A = probeAttention(x, probes, scale);
  const masses = columnMass(A, x.dims, opts.accumulate);
  const den = normalizerDenominators(n, probes, opts.normalizer);
  const gated = (opts.layer ?? 0) < (opts.fromLayer ?? 0);
  const groups: Selection[] = masses.map((raw) => {
    const norm = normalize(raw, den);
    const { p, margin: countMargin } = countOf(gated ? { kind: "all" } : opts.count, raw, norm, mutant);
    const { selected, margin: identityMargin } = chooseTokens(
      mutant === "identity_from_raw" ? raw : norm, n, p, opts.keepFirst ?? 0, opts.keepLast ?? 0,
    );
    return { raw, norm, p, count: selected.length, selected, countMargin, identityMargin };
  });
  const selectedOf = (kv: number): readonly number[] => (groups[opts.accumulate === "layer" ? 0 : kv] as Selection).selected;
  const o = sparseAttention(x, selectedOf, scale);
  const kCache: Float64Array[] = [];
  const vCache: Float64Array[] = [];
  for (let kv = 0; kv < Hkv; kv++) {
    kCache.push(gatherRows(x.k, x.dims, kv, selectedOf(kv)));
    vCache.push(gatherRows(x.v, x.dims, kv, selectedOf(kv)));
  }
  return { probes, groups, o, kCache, vCache };
}

/** Dense causal attention over all n tokens (what tau = 1 / select.all must give). */
export function denseCausal(x: Qkv, scale?: number): Float64Array {
  const all = Array.from({ length: x.dims.n }, (_, i) => i);
  return sparseAttention(x, () => all, scale ?? 1 / Math.sqrt(x.dims.d));
}
