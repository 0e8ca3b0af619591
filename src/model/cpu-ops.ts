// ModelOps on the host in Float32Array: tight loops and a register-blocked matmul for the small models the demo and
// the tests run. ZipVL prefill layers go through the float64 reference interpreter (the spec), so the CPU model is
// the reference the GPU backends are compared with; decode attention is an f32 loop the tests check against the
// interpreter's decode entry.
import { decodeTable, byteSize } from "../io/dtype.ts";
import type { Tensor } from "../io/tensor.ts";
import { interpret } from "../interp/run.ts";
import { LlavaError } from "./errors.ts";
import type { DKvCache, DTensor, HostWeight, ModelOps, OpsFactory, Policy, SparseLayerResult } from "./ops.ts";

interface CpuTensor extends DTensor {
  readonly data: Float32Array;
}

/** A capacity KV cache: k/v [heads, capacity, d], rows [0, len) live. */
interface CpuKv extends DKvCache {
  len: number;
  capacity: number;
  k: Float32Array;
  v: Float32Array;
}

const make = (shape: readonly number[], data: Float32Array): CpuTensor => ({ shape: Object.freeze([...shape]), data });
const T = (x: DTensor): CpuTensor => {
  const t = x as CpuTensor;
  if (!(t.data instanceof Float32Array)) throw new Error("internal: a tensor of another backend reached the cpu ops");
  return t;
};
const dims2 = (x: CpuTensor, what: string): [number, number] => {
  if (x.shape.length !== 2) throw new Error(`internal: ${what} needs a 2-D tensor, got [${x.shape.join(",")}]`);
  return x.shape as [number, number];
};
const dims3 = (x: CpuTensor): [number, number, number] => {
  if (x.shape.length !== 3) throw new Error(`internal: expected [H, n, d], got [${x.shape.join(",")}]`);
  return x.shape as [number, number, number];
};

export function hostToF32(w: HostWeight): Float32Array {
  const n = w.shape.reduce((a, b) => a * b, 1);
  const dv = new DataView(w.bytes.buffer, w.bytes.byteOffset, w.bytes.byteLength);
  const width = byteSize(w.dtype);
  if (w.bytes.byteLength !== n * width) throw new Error(`internal: ${w.dtype}[${w.shape.join(",")}] needs ${n * width} bytes, got ${w.bytes.byteLength}`);
  const out = new Float32Array(n);
  if (w.dtype === "f32") for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
  else {
    const table = decodeTable(w.dtype);
    for (let i = 0; i < n; i++) out[i] = table[dv.getUint16(2 * i, true)]!;
  }
  return out;
}

/** y[M, N] = x[M, K] w[N, K]^T (+ bias): 4x4 register tiles, both operands read along K. */
export function matmulNT(x: Float32Array, w: Float32Array, M: number, N: number, K: number, bias?: Float32Array): Float32Array {
  const y = new Float32Array(M * N);
  const M4 = M - (M % 4);
  const N4 = N - (N % 4);
  for (let m = 0; m < M4; m += 4) {
    const a0 = m * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
    for (let n = 0; n < N4; n += 4) {
      const b0 = n * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
      let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
      let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
      for (let k = 0; k < K; k++) {
        const x0 = x[a0 + k]!, x1 = x[a1 + k]!, x2 = x[a2 + k]!, x3 = x[a3 + k]!;
        const w0 = w[b0 + k]!, w1 = w[b1 + k]!, w2 = w[b2 + k]!, w3 = w[b3 + k]!;
        c00 += x0 * w0; c01 += x0 * w1; c02 += x0 * w2; c03 += x0 * w3;
        c10 += x1 * w0; c11 += x1 * w1; c12 += x1 * w2; c13 += x1 * w3;
        c20 += x2 * w0; c21 += x2 * w1; c22 += x2 * w2; c23 += x2 * w3;
        c30 += x3 * w0; c31 += x3 * w1; c32 += x3 * w2; c33 += x3 * w3;
      }
      const r0 = m * N + n, r1 = r0 + N, r2 = r1 + N, r3 = r2 + N;
      y[r0] = c00; y[r0 + 1] = c01; y[r0 + 2] = c02; y[r0 + 3] = c03;
      y[r1] = c10; y[r1 + 1] = c11; y[r1 + 2] = c12; y[r1 + 3] = c13;
      y[r2] = c20; y[r2 + 1] = c21; y[r2 + 2] = c22; y[r2 + 3] = c23;
      y[r3] = c30; y[r3 + 1] = c31; y[r3 + 2] = c32; y[r3 + 3] = c33;
    }
  }
  // Edges: the rows past M4 (all columns) and the columns past N4 (rows below M4).
  const dot = (m: number, n: number): number => {
    let s = 0;
    for (let k = 0, a = m * K, b = n * K; k < K; k++) s += x[a + k]! * w[b + k]!;
    return s;
  };
  for (let m = M4; m < M; m++) for (let n = 0; n < N; n++) y[m * N + n] = dot(m, n);
  for (let m = 0; m < M4; m++) for (let n = N4; n < N; n++) y[m * N + n] = dot(m, n);
  if (bias) for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) y[m * N + n]! += bias[n]!;
  return y;
}

/** erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), enough for an f32 GELU. */
export function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
    t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? 1 - r : r - 1;
}

const ACTS: Record<string, (x: number) => number> = {
  gelu: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
  gelu_tanh: (x) => 0.5 * x * (1 + Math.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))),
  quick_gelu: (x) => x / (1 + Math.exp(-1.702 * x)),
  silu: (x) => x / (1 + Math.exp(-x)),
};

/** Softmax attention of one query row over `keys` rows (GQA slice already chosen); writes into out[o..o+d). */
function attendRow(q: Float32Array, qo: number, k: Float32Array, v: Float32Array, kvBase: number, len: number, d: number, scale: number, out: Float32Array, oo: number, s: Float64Array): void {
  let mx = -Infinity;
  for (let j = 0; j < len; j++) {
    let dot = 0;
    const kb = kvBase + j * d;
    for (let x = 0; x < d; x++) dot += q[qo + x]! * k[kb + x]!;
    s[j] = dot * scale;
    if (s[j]! > mx) mx = s[j]!;
  }
  let l = 0;
  for (let j = 0; j < len; j++) l += s[j] = Math.exp(s[j]! - mx);
  const acc = new Float64Array(d);
  for (let j = 0; j < len; j++) {
    const p = s[j]! / l;
    const vb = kvBase + j * d;
    for (let x = 0; x < d; x++) acc[x]! += p * v[vb + x]!;
  }
  for (let x = 0; x < d; x++) out[oo + x] = acc[x]!;
}

const KV = (c: DKvCache): CpuKv => {
  const k = (c as CpuKv).k;
  if (!(k instanceof Float32Array)) throw new Error("internal: a KV cache of another backend reached the cpu ops");
  return c as CpuKv;
};

/** Decode attention of q [Hq, t, d] over `len` rows of k/v [Hkv, stride, d] (no mask). */
function decodeOver(q: DTensor, k: Float32Array, v: Float32Array, Hkv: number, len: number, stride: number, d: number): CpuTensor {
  const [Hq, t, dq] = dims3(T(q));
  if (dq !== d || Hq % Hkv !== 0) throw new Error(`internal: decode q [${q.shape}] over ${Hkv} KV heads, head dim ${d}`);
  const g = Hq / Hkv;
  const out = new Float32Array(Hq * t * d);
  const s = new Float64Array(len);
  for (let h = 0; h < Hq; h++) {
    const kvBase = Math.floor(h / g) * stride * d;
    for (let i = 0; i < t; i++) attendRow(T(q).data, (h * t + i) * d, k, v, kvBase, len, d, 1 / Math.sqrt(d), out, (h * t + i) * d, s);
  }
  return make([Hq, t, d], out);
}

const toHost = (shape: readonly number[], data: Float32Array): Tensor => ({ dtype: "f32", shape, data: Float64Array.from(data) });

export function createCpuOpsSync(): ModelOps {
  return {
    name: "cpu",
    dtype: "f32",
    upload: (w) => make(w.shape, hostToF32(w)),
    fromF32: (shape, data) => {
      if (shape.reduce((a, b) => a * b, 1) !== data.length) throw new Error(`internal: [${shape.join(",")}] needs ${shape.reduce((a, b) => a * b, 1)} values, got ${data.length}`);
      return make(shape, Float32Array.from(data));
    },
    toF32: (x) => Float32Array.from(T(x).data),
    free: () => {},
    linear(x, w, bias) {
      const [M, K] = dims2(T(x), "linear");
      const [N, K2] = dims2(T(w), "linear");
      if (K !== K2) throw new Error(`internal: linear [${M},${K}] x [${N},${K2}]^T`);
      return make([M, N], matmulNT(T(x).data, T(w).data, M, N, K, bias ? T(bias).data : undefined));
    },
    embed(table, ids) {
      const [V, H] = dims2(T(table), "embed");
      const out = new Float32Array(ids.length * H);
      ids.forEach((id, i) => {
        if (id < 0 || id >= V) throw new LlavaError("ZV6109", [`token id ${id} is outside the vocabulary [0, ${V})`]);
        out.set(T(table).data.subarray(id * H, (id + 1) * H), i * H);
      });
      return make([ids.length, H], out);
    },
    rmsNorm(x, w, eps) {
      const [R, C] = dims2(T(x), "rmsNorm");
      const a = T(x).data, g = T(w).data;
      const out = new Float32Array(R * C);
      for (let r = 0; r < R; r++) {
        let ss = 0;
        for (let c = 0; c < C; c++) ss += a[r * C + c]! * a[r * C + c]!;
        const inv = 1 / Math.sqrt(ss / C + eps);
        // HF LlamaRMSNorm: the normalized value is rounded to the activation dtype before the weight multiplies it.
        for (let c = 0; c < C; c++) out[r * C + c] = g[c]! * Math.fround(a[r * C + c]! * inv);
      }
      return make([R, C], out);
    },
    layerNorm(x, w, b, eps) {
      const [R, C] = dims2(T(x), "layerNorm");
      const a = T(x).data, g = T(w).data, bb = T(b).data;
      const out = new Float32Array(R * C);
      for (let r = 0; r < R; r++) {
        let mean = 0;
        for (let c = 0; c < C; c++) mean += a[r * C + c]!;
        mean /= C;
        let v = 0;
        for (let c = 0; c < C; c++) v += (a[r * C + c]! - mean) ** 2;
        const inv = 1 / Math.sqrt(v / C + eps);
        for (let c = 0; c < C; c++) out[r * C + c] = (a[r * C + c]! - mean) * inv * g[c]! + bb[c]!;
      }
      return make([R, C], out);
    },
    add(a, b) {
      if (T(a).shape.join() !== T(b).shape.join()) throw new Error(`internal: add [${a.shape}] + [${b.shape}]`);
      const x = T(a).data, y = T(b).data;
      return make(a.shape, x.map((v, i) => v + y[i]!));
    },
    siluMul(gate, up) {
      const g = T(gate).data, u = T(up).data;
      return make(gate.shape, g.map((v, i) => (v / (1 + Math.exp(-v))) * u[i]!));
    },
    act(x, kind) {
      const f = ACTS[kind]!;
      return make(x.shape, T(x).data.map(f));
    },
    sliceRows(x, start, end) {
      const [R, C] = dims2(T(x), "sliceRows");
      if (start < 0 || end > R || start > end) throw new Error(`internal: rows [${start}, ${end}) of ${R}`);
      return make([end - start, C], T(x).data.slice(start * C, end * C));
    },
    concatRows(xs) {
      const C = dims2(T(xs[0]!), "concatRows")[1];
      const R = xs.reduce((a, x) => a + dims2(T(x), "concatRows")[0], 0);
      const out = new Float32Array(R * C);
      let at = 0;
      for (const x of xs) {
        if (x.shape[1] !== C) throw new Error(`internal: concatRows of [${x.shape}] with ${C} columns`);
        out.set(T(x).data, at);
        at += T(x).data.length;
      }
      return make([R, C], out);
    },
    addRows(x, row) {
      const [R, C] = dims2(T(x), "addRows");
      const a = T(x).data, b = T(row).data;
      if (b.length !== C && b.length !== R * C) throw new Error(`internal: addRows [${x.shape}] + [${row.shape}]`);
      return make([R, C], a.map((v, i) => v + b[b.length === C ? i % C : i]!));
    },
    toHeads(x, heads) {
      const [n, HD] = dims2(T(x), "toHeads");
      const d = HD / heads;
      const a = T(x).data;
      const out = new Float32Array(n * HD);
      for (let h = 0; h < heads; h++) for (let t = 0; t < n; t++) out.set(a.subarray(t * HD + h * d, t * HD + (h + 1) * d), (h * n + t) * d);
      return make([heads, n, d], out);
    },
    fromHeads(x) {
      const [H, n, d] = dims3(T(x));
      const a = T(x).data;
      const out = new Float32Array(H * n * d);
      for (let h = 0; h < H; h++) for (let t = 0; t < n; t++) out.set(a.subarray((h * n + t) * d, (h * n + t + 1) * d), t * H * d + h * d);
      return make([n, H * d], out);
    },
    rope(x, positions, invFreq, scale) {
      const [H, n, d] = dims3(T(x));
      const half = d / 2;
      if (positions.length !== n || invFreq.length !== half) throw new Error(`internal: rope of [${x.shape}] with ${positions.length} positions, ${invFreq.length} frequencies`);
      const a = T(x).data;
      const out = new Float32Array(a.length);
      for (let t = 0; t < n; t++) {
        for (let i = 0; i < half; i++) {
          // HF computes the angle in f32 (positions x inv_freq), then cos/sin in f32.
          const ang = Math.fround(positions[t]! * invFreq[i]!);
          const c = Math.fround(Math.fround(Math.cos(ang)) * scale), s = Math.fround(Math.fround(Math.sin(ang)) * scale);
          for (let h = 0; h < H; h++) {
            const b = (h * n + t) * d;
            const x1 = a[b + i]!, x2 = a[b + i + half]!;
            out[b + i] = x1 * c - x2 * s;
            out[b + i + half] = x2 * c + x1 * s;
          }
        }
      }
      return make([H, n, d], out);
    },
    attention(q, k, v, causal) {
      const [Hq, n, d] = dims3(T(q));
      const [Hkv, nk] = dims3(T(k));
      if (nk !== n || Hq % Hkv !== 0) throw new Error(`internal: attention q [${q.shape}] k [${k.shape}]`);
      const g = Hq / Hkv;
      const out = new Float32Array(Hq * n * d);
      const s = new Float64Array(n);
      for (let h = 0; h < Hq; h++) {
        const kvBase = Math.floor(h / g) * n * d;
        for (let i = 0; i < n; i++) attendRow(T(q).data, (h * n + i) * d, T(k).data, T(v).data, kvBase, causal ? i + 1 : n, d, 1 / Math.sqrt(d), out, (h * n + i) * d, s);
      }
      return make([Hq, n, d], out);
    },
    sparsePrefill(policy: Policy, layer: number, q, k, v): SparseLayerResult {
      const inputs = new Map([["q", toHost(q.shape, T(q).data)], ["k", toHost(k.shape, T(k).data)], ["v", toHost(v.shape, T(v).data)]]);
      const r = interpret(policy.program, "prefill", inputs, { params: policy.params, layer });
      const get = (name: string): Tensor => {
        const t = r.get(name);
        if (!t) throw new LlavaError("ZV6107", [`program '${policy.program.name}' has no output '${name}' (a model policy needs o, k_cache, v_cache and count)`]);
        return t;
      };
      const f32 = (t: Tensor): CpuTensor => make(t.shape, Float32Array.from(t.data));
      const count = get("count");
      if (count.data.length !== 1) throw new LlavaError("ZV6107", [`program '${policy.program.name}' selects per KV head; the model needs one set per layer`]);
      return { o: f32(get("o")), kCache: f32(get("k_cache")), vCache: f32(get("v_cache")), count: count.data[0]! };
    },
    decodeAttention(q, kCache, vCache) {
      const [, , d] = dims3(T(q));
      const [Hkv, len, dk] = dims3(T(kCache));
      if (dk !== d || vCache.shape.join() !== kCache.shape.join()) throw new Error(`internal: decode q [${q.shape}] cache [${kCache.shape}]`);
      return decodeOver(q, T(kCache).data, T(vCache).data, Hkv, len, len, d);
    },
    createKvCache(heads, d, capacity) {
      if (!(Number.isInteger(heads) && heads >= 1 && Number.isInteger(d) && d >= 1 && Number.isInteger(capacity) && capacity >= 1)) throw new Error(`internal: a KV cache of ${heads} heads, head dim ${d}, capacity ${capacity}`);
      const c: CpuKv = { heads, d, len: 0, capacity, k: new Float32Array(heads * capacity * d), v: new Float32Array(heads * capacity * d) };
      return c;
    },
    appendKv(cache, k, v) {
      const c = KV(cache);
      const [H, t, d] = dims3(T(k));
      if (H !== c.heads || d !== c.d || v.shape.join() !== k.shape.join()) throw new Error(`internal: append of k [${k.shape}] v [${v.shape}] to a cache of ${c.heads} heads, head dim ${c.d}`);
      if (c.len + t > c.capacity) {
        // Regrow: the only copy of the cached rows.
        const cap = Math.max(2 * c.capacity, c.len + t);
        const move = (old: Float32Array): Float32Array => {
          const out = new Float32Array(H * cap * d);
          for (let h = 0; h < H; h++) out.set(old.subarray(h * c.capacity * d, (h * c.capacity + c.len) * d), h * cap * d);
          return out;
        };
        c.k = move(c.k);
        c.v = move(c.v);
        c.capacity = cap;
      }
      for (let h = 0; h < H; h++) {
        c.k.set(T(k).data.subarray(h * t * d, (h + 1) * t * d), (h * c.capacity + c.len) * d);
        c.v.set(T(v).data.subarray(h * t * d, (h + 1) * t * d), (h * c.capacity + c.len) * d);
      }
      c.len += t;
    },
    decodeAttentionKv(q, cache) {
      const c = KV(cache);
      if (dims3(T(q))[2] !== c.d || c.len < 1) throw new Error(`internal: decode q [${q.shape}] over a cache of ${c.len} rows, head dim ${c.d}`);
      return decodeOver(q, c.k, c.v, c.heads, c.len, c.capacity, c.d);
    },
    readKv(cache) {
      const c = KV(cache);
      const rows = (x: Float32Array): CpuTensor => {
        const out = new Float32Array(c.heads * c.len * c.d);
        for (let h = 0; h < c.heads; h++) out.set(x.subarray(h * c.capacity * c.d, (h * c.capacity + c.len) * c.d), h * c.len * c.d);
        return make([c.heads, c.len, c.d], out);
      };
      return { k: rows(c.k), v: rows(c.v) };
    },
    freeKv: () => {},
    sync: () => {},
    dispose: () => {},
  };
}

export const createCpuOps: OpsFactory = async (opts = {}) => {
  if (opts.dtype && opts.dtype !== "f32") throw new LlavaError("ZV6103", [`dtype ${opts.dtype} on the cpu backend`, "the cpu ops compute in f32"]);
  return createCpuOpsSync();
};
