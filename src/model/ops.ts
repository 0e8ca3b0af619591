// The narrow interface the LLaVA-family model is written against. One implementation per backend:
// cpu-ops.ts (Float32 host loops; ZipVL layers through the float64 interpreter), cuda-ops.ts (cuBLASLt GEMMs,
// generated kernels for everything else, ZipVL layers through the fused CUDA pipeline), webgpu-ops.ts.
// Activations are row-major 2-D [rows, features] ("token-major", like HF hidden states) unless a method says
// otherwise; attention takes head-major [H, n, d] (what the ZipVL programs take). Handles are opaque and owned by
// the backend; every method returns a NEW handle that the caller frees (free() is idempotent).
import type { Program } from "../ir/ir.ts";

export type ModelDType = "f32" | "f16" | "bf16";

/** Raw tensor as stored in a checkpoint: little-endian bytes of `dtype`, row-major `shape`. */
export interface HostWeight {
  readonly dtype: ModelDType;
  readonly shape: readonly number[];
  readonly bytes: Uint8Array;
}

/** A backend-owned tensor. */
export interface DTensor {
  readonly shape: readonly number[];
}

/** A ZipVL (or other policy) program bound to its parameter values; one per model run. */
export interface Policy {
  readonly program: Program;
  readonly params: Readonly<Record<string, number>>;
}

/** What one sparse prefill layer produced. `o` has zero rows for unselected tokens. */
export interface SparseLayerResult {
  readonly o: DTensor; // [Hq, n, d]
  readonly kCache: DTensor; // [Hkv, count, d] (RoPE applied), compacted
  readonly vCache: DTensor; // [Hkv, count, d]
  readonly count: number; // tokens kept (host value; backends may sync once per layer to read it)
}

/** One layer's K/V cache, owned by the backend: k and v storage [Hkv, capacity, d] (rows [0, len) live, head h's
 *  rows `capacity` rows apart), so appending a token writes its rows in place and decode reads the cache once. */
export interface DKvCache {
  readonly heads: number;
  readonly d: number;
  /** Live rows (pruned prompt tokens plus generated ones). */
  readonly len: number;
  /** Rows each head can hold before the next append regrows the storage. */
  readonly capacity: number;
}

/** One projection of normProject: w [N, K] (+ bias [N]); heads > 0: head-major output [heads, M, N / heads], with
 *  rotary embedding when `rope`. */
export interface Projection {
  readonly w: DTensor;
  readonly bias?: DTensor | undefined;
  readonly heads: number;
  readonly rope: boolean;
}

/** Rotary embedding at `positions` (one per row), as ModelOps.rope takes it. */
export interface RopeAt {
  readonly positions: Int32Array;
  readonly invFreq: Float32Array;
  readonly scale: number;
}

/** RMSNorm weight and epsilon. */
export interface NormSpec {
  readonly w: DTensor;
  readonly eps: number;
}

/** Where a decode step's new K/V rows also go (the paged cache's rows for this step, a backend's own handle). A
 *  backend that writes them there while projecting k and v sets `written`; else the caller appends as usual. */
export interface KvSink {
  readonly target: unknown;
  written: boolean;
}

/** Optional fused forms of decoder-layer op sequences (decode's few token rows). Each may return undefined for a
 *  shape it does not fuse; the model then runs the composition in src/model/fused.ts, which is their spec. */
export interface FusedModelOps {
  /** For each projection p: linear(n, p.w, p.bias), then toHeads (+ rope) when p.heads > 0; n = rmsNorm(x) or x.
   *  With a sink (projections q, k, v), a backend may also write k and v into the sink's rows (KvSink). */
  normProject?(x: DTensor, norm: NormSpec | undefined, projs: readonly Projection[], rope: RopeAt | undefined, sink?: KvSink): DTensor[] | undefined;
  /** residual + linear(x, w, bias); x [M, K], or head-major [H, M, d] read as fromHeads(x). */
  linearAdd?(x: DTensor, w: DTensor, bias: DTensor | undefined, residual: DTensor): DTensor | undefined;
  /** siluMul(linear(n, wg, bg), linear(n, wu, bu)) with n = rmsNorm(x, norm). */
  normGatedUp?(x: DTensor, norm: NormSpec, gate: { w: DTensor; bias?: DTensor | undefined }, up: { w: DTensor; bias?: DTensor | undefined }): DTensor | undefined;
}

export interface ModelOps extends FusedModelOps {
  readonly name: "cpu" | "cuda" | "webgpu";
  /** Compute/storage dtype of activations and weights on this backend (cpu: f32). */
  readonly dtype: ModelDType;

  upload(w: HostWeight): DTensor;
  /** Host f32 tensor in (e.g. pixel values, positions as floats). */
  fromF32(shape: readonly number[], data: Float32Array): DTensor;
  toF32(x: DTensor): Float32Array;
  free(x: DTensor): void;

  /** x [M, K] times w [N, K] transposed (HF nn.Linear layout), plus bias [N]: [M, N]. */
  linear(x: DTensor, w: DTensor, bias?: DTensor): DTensor;
  /** Rows of table [V, H] at ids: [ids.length, H]. */
  embed(table: DTensor, ids: Int32Array): DTensor;
  rmsNorm(x: DTensor, w: DTensor, eps: number): DTensor;
  layerNorm(x: DTensor, w: DTensor, b: DTensor, eps: number): DTensor;
  add(a: DTensor, b: DTensor): DTensor;
  /** silu(gate) * up, elementwise. */
  siluMul(gate: DTensor, up: DTensor): DTensor;
  act(x: DTensor, kind: "gelu" | "quick_gelu" | "gelu_tanh" | "silu"): DTensor;
  /** Rows [start, end) of a 2-D tensor. */
  sliceRows(x: DTensor, start: number, end: number): DTensor;
  /** Concatenate 2-D tensors along rows (same column count). */
  concatRows(xs: readonly DTensor[]): DTensor;
  /** Broadcast add of a row vector [C] (or a [R, C] matrix) to x [R, C]. */
  addRows(x: DTensor, row: DTensor): DTensor;

  /** [n, H*d] -> [H, n, d] and back. */
  toHeads(x: DTensor, heads: number): DTensor;
  fromHeads(x: DTensor): DTensor;
  /** Rotary embedding (HF rotate_half convention) on [H, n, d] at the given positions; invFreq has d/2 entries,
   *  `scale` multiplies cos and sin (HF attention_scaling, 1 unless a RoPE scaling type sets it). */
  rope(x: DTensor, positions: Int32Array, invFreq: Float32Array, scale: number): DTensor;

  /** Dense softmax attention q [Hq, n, d], k/v [Hkv, n, d] (GQA by grouping), scale 1/sqrt(d): [Hq, n, d]. */
  attention(q: DTensor, k: DTensor, v: DTensor, causal: boolean): DTensor;
  /** One prefill layer of a policy program (probe, select, token-sparse attention, compaction). */
  sparsePrefill(policy: Policy, layer: number, q: DTensor, k: DTensor, v: DTensor): SparseLayerResult;
  /** Decode attention of q [Hq, t, d] over caches [Hkv, len, d], no mask (all cached tokens are earlier). */
  decodeAttention(q: DTensor, kCache: DTensor, vCache: DTensor): DTensor;

  /** An empty cache with room for `capacity` rows per KV head (capacity >= 1). */
  createKvCache(heads: number, d: number, capacity: number): DKvCache;
  /** Writes k/v [Hkv, t, d] at rows [len, len + t) in place; a full cache first regrows to max(2 capacity, len + t)
   *  (the only copy of the cached rows). The caller keeps (and frees) k and v. */
  appendKv(cache: DKvCache, k: DTensor, v: DTensor): void;
  /** decodeAttention of q [Hq, t, d] over the live rows of `cache`, read in place with the capacity as row stride. */
  decodeAttentionKv(q: DTensor, cache: DKvCache): DTensor;
  /** The live rows as new tensors [Hkv, len, d] (tests, hand-off to other caches). */
  readKv(cache: DKvCache): { k: DTensor; v: DTensor };
  /** Releases the cache's storage (idempotent). */
  freeKv(cache: DKvCache): void;

  /** Synchronize (timings); no-op on cpu. */
  sync(): void;
  dispose(): void;
}

/** Factories, one per backend module, all with this shape (the CLI imports them dynamically):
 *  src/model/cpu-ops.ts `createCpuOps`, src/model/cuda-ops.ts `createCudaOps`, src/model/webgpu-ops.ts
 *  `createWebgpuOps`. `dtype` asks for a compute dtype; a backend may refuse with a coded error. */
export interface OpsOptions {
  readonly dtype?: ModelDType;
}
export type OpsFactory = (opts?: OpsOptions) => Promise<ModelOps>;
