// One ZipVL prefill layer (or one decode step) on the GPU: buffers allocated once, kernels enqueued on a stream
// with no host round trip (the kept count stays on the device), so the sequence can be timed or captured in a
// CUDA graph. Prefill is at most three kernel launches plus one memset: probe_score, select, sparse_attn_compact.
import type { Expr } from "../../expr/ast.ts";
import { fail } from "../../diagnostics/diagnostic.ts";
import { tensorFromBytes, tensorToBytes } from "../../io/safetensors.ts";
import { makeTensor, type Tensor } from "../../io/tensor.ts";
import { getFunc, type Node, type Program } from "../../ir/ir.ts";
import { SELECT_RULE } from "../../frontend/knobs.ts";
import { bindDecode, bindPrefill, type Binding } from "../../interp/bind.ts";
import { probeRows } from "../../interp/probes.ts";
import { knobValue } from "../../interp/run.ts";
import { packArgs, type CudaDevice, type CudaFunction, type CudaStream, type DeviceBuffer } from "../../runtime/native.ts";
import { paramSlots, slotValues } from "../cstyle.ts";
import type { CudaDType, Stage } from "./render.ts";
import { decodeGeometry, type Config } from "./schedule.ts";
import { decodeSplits, probeGeometry, selectGeometry, sparseGeometry } from "./schedule.ts";

/** Compiled kernels of one program at one dtype/head dim, by stage (decode: split and combine). */
export interface KernelSet {
  fn(stage: Stage, suffix?: string): CudaFunction;
  config(stage: Stage): Config;
}

const NORMALIZER: Record<string, number> = { visible: 0, n_minus_j: 1, none: 2 };
const MODE: Record<string, number> = { tau: 0, ratio: 1, budget: 2, all: 3 };
const POOL: Record<string, number> = { none: 0, max: 1, avg: 2 };
const i64 = (v: number): { i64: number } => ({ i64: v });
const f64 = (v: number): { f64: number } => ({ f64: v });

function only(p: Program, fname: string, op: string): Node {
  return getFunc(p, fname).body.find((n) => n.op === op) ?? fail("ZV4002", ["the cuda backend", `programs whose ${fname} has no fused '${op}' (run the passes first)`]);
}

export class CudaPrefill {
  readonly b: Binding;
  private readonly bufs: DeviceBuffer[] = [];
  private readonly launches: (() => void)[] = [];
  readonly dtype: CudaDType;
  readonly S: number;
  readonly m: number;
  private readonly out: Record<string, DeviceBuffer> = {};

  constructor(private readonly dev: CudaDevice, p: Program, inputs: ReadonlyMap<string, Tensor>, kernels: KernelSet, opts: { params?: Readonly<Record<string, number>>; layer?: number }, private stream: CudaStream | null = null) {
    const b = (this.b = bindPrefill(p, inputs, opts.params ?? {}, opts.layer ?? 0));
    const q = inputs.get("q")!;
    this.dtype = q.dtype as CudaDType;
    const env = b.env;
    const ps = only(p, "prefill", "probe_score");
    const sel = only(p, "prefill", "select");
    const sa = only(p, "prefill", "sparse_attn_compact");
    const pr = only(p, "prefill", "probe_rows");
    const ex = (nd: Node, k: string): Expr => nd.attrs[k] as Expr;
    const knob = (nd: Node, k: string, rule: Parameters<typeof knobValue>[2] = "any"): number => knobValue(ex(nd, k), env, rule, k);

    const explicit = inputs.get("probes");
    const probes = explicit
      ? Int32Array.from(explicit.data)
      : probeRows({ rule: pr.attrs.rule as "all", recent: knob(pr, "recent", "nonneg_int"), random: knob(pr, "random", "nonneg_int"), seed: knob(pr, "seed", "nonneg_int"), list: (pr.attrs.list as number[] | undefined) ?? [] }, b.n);
    const perKv = ps.attrs.accumulate === "kv_head";
    const S = (this.S = perKv ? b.Hkv : 1);
    const m = (this.m = probes.length);
    const { n, d, Hq, Hkv } = b;
    const esz = this.dtype === "f32" ? 4 : 2;
    const alloc = (bytes: number): DeviceBuffer => {
      const buf = this.dev.alloc(Math.max(bytes, 16));
      this.bufs.push(buf);
      return buf;
    };
    const upload = (t: Tensor): DeviceBuffer => {
      const buf = alloc(t.data.length * esz);
      buf.write(tensorToBytes(t));
      return buf;
    };
    const qb = upload(q);
    const kb = upload(inputs.get("k")!);
    const vb = upload(inputs.get("v")!);
    const probesB = alloc(4 * m);
    if (m > 0) probesB.write(probes);
    const P = alloc(8 * Math.max(1, paramSlots(p).names.length));
    P.write(slotValues(paramSlots(p), env));
    const colmass = (this.out.scores = alloc(4 * S * n));
    const visible = alloc(4 * n);
    const normScores = (this.out.norm_scores = alloc(4 * S * n));
    const count = (this.out.count = alloc(4 * S));
    const order = (this.out.order = alloc(4 * S * n));
    const o = (this.out.o = alloc(Hq * n * d * esz));
    const kc = (this.out.k_cache = alloc(Hkv * n * d * esz));
    const vc = (this.out.v_cache = alloc(Hkv * n * d * esz));
    const dims = { Hq, Hkv, n, d, m, S };

    // 1. probe scoring: column mass over probe rows and heads (+ probe-visible counts).
    const probeArgs = packArgs([qb, kb, probesB, colmass, visible, P, i64(n), i64(m), i64(Hq), i64(Hkv), i64(d), i64(perKv ? 1 : 0), f64(knob(ps, "scale", "scale"))]);
    const pg = probeGeometry(kernels.config("probe"), this.dtype, dims);
    const probeFn = kernels.fn("probe");
    this.launches.push(() => {
      colmass.zero(this.stream);
      visible.zero(this.stream);
      if (m > 0) this.dev.launch(probeFn, { grid: pg.grid, block: pg.block, sharedBytes: pg.smem, stream: this.stream }, probeArgs);
    });
    // 2. selection: tau count from raw mass, identity from normalized scores, order = selected then the rest.
    const mode = b.layer < knob(sel, "from_layer", "nonneg_int") ? "all" : (sel.attrs.mode as string);
    const amount = mode === "all" ? 1 : knob(sel, "amount", SELECT_RULE[mode]);
    const selArgs = packArgs([
      colmass, visible, normScores, count, order, P, i64(n), i64(S), i64(MODE[mode]!), f64(amount),
      i64(NORMALIZER[ps.attrs.normalizer as string]!), i64(POOL[sel.attrs.pool as string]!), i64(knob(sel, "pool_size", "pool_size")),
      i64(knob(sel, "keep_first", "nonneg_int")), i64(knob(sel, "keep_last", "nonneg_int")),
    ]);
    const sg = selectGeometry(kernels.config("select"), dims, dev.info.maxSharedPerBlockOptin);
    const selFn = kernels.fn("select");
    if (sg.smem > 48 * 1024) selFn.setMaxDynamicShared(sg.smem);
    this.launches.push(() => this.dev.launch(selFn, { grid: sg.grid, block: sg.block, sharedBytes: sg.smem, stream: this.stream }, selArgs));
    // 3. token-sparse attention with gathered loads, zero rows and the compacted cache in the same pass.
    const saArgs = packArgs([qb, kb, vb, o, kc, vc, count, order, P, i64(n), i64(Hq), i64(Hkv), i64(d), i64(perKv ? 1 : 0), f64(knob(sa, "scale", "scale"))]);
    const ag = sparseGeometry(kernels.config("sparse_attn"), this.dtype, dims);
    const saFn = kernels.fn("sparse_attn");
    if (ag.smem > 48 * 1024) saFn.setMaxDynamicShared(ag.smem);
    this.launches.push(() => this.dev.launch(saFn, { grid: ag.grid, block: ag.block, sharedBytes: ag.smem, stream: this.stream }, saArgs));
  }

  /** Fills every output with NaN bytes so a kernel that skips a write cannot pass a comparison. */
  poison(): void {
    for (const buf of Object.values(this.out)) buf.fill32(0xffffffff, this.stream);
  }

  /** Enqueues the whole layer (1 memset pair + 3 kernels); nothing waits on the host. */
  enqueue(): void {
    for (const l of this.launches) l();
  }

  /** Downloads the outputs in the cpu backend's layout. */
  download(): Map<string, Tensor> {
    this.dev.synchronize();
    const { n, d, Hq, Hkv } = this.b;
    const S = this.S;
    const esz = this.dtype === "f32" ? 4 : 2;
    const count = this.out.count!.toArray(Int32Array, S);
    const order = this.out.order!.toArray(Int32Array, S * n);
    const f32 = (buf: DeviceBuffer, shape: number[]): Tensor => makeTensor("f32", shape, Float64Array.from(buf.toArray(Float32Array, shape.reduce((a, x) => a * x, 1))));
    const setShape = S === 1 ? [n] : [S, n];
    const c = Math.max(...count);
    const bytesOf = (buf: DeviceBuffer, elems: number): Uint8Array => buf.read(new Uint8Array(elems * esz));
    const cache = (buf: DeviceBuffer): Tensor => {
      const all = bytesOf(buf, Hkv * n * d);
      const out = new Uint8Array(Hkv * c * d * esz);
      for (let kv = 0; kv < Hkv; kv++) {
        const keep = count[S === 1 ? 0 : kv]!;
        out.set(all.subarray(kv * n * d * esz, (kv * n + keep) * d * esz), kv * c * d * esz);
      }
      return tensorFromBytes(this.dtype, [Hkv, c, d], out);
    };
    let selected: Tensor;
    if (S === 1) selected = makeTensor("i32", [count[0]!], order.slice(0, count[0]!));
    else {
      const sel = new Int32Array(S * c).fill(-1);
      for (let s = 0; s < S; s++) sel.set(order.subarray(s * n, s * n + count[s]!), s * c);
      selected = makeTensor("i32", [S, c], sel);
    }
    return new Map<string, Tensor>([
      ["scores", f32(this.out.scores!, setShape)],
      ["norm_scores", f32(this.out.norm_scores!, setShape)],
      ["count", makeTensor("i32", [S], count)],
      ["selected", selected],
      ["o", tensorFromBytes(this.dtype, [Hq, n, d], bytesOf(this.out.o!, Hq * n * d))],
      ["k_cache", cache(this.out.k_cache!)],
      ["v_cache", cache(this.out.v_cache!)],
    ]);
  }

  free(): void {
    for (const b of this.bufs) b.free();
  }
}

export class CudaDecode {
  readonly b: Binding & { c: number };
  private readonly bufs: DeviceBuffer[] = [];
  private readonly launch: () => void;
  private readonly o: DeviceBuffer;
  readonly dtype: CudaDType;

  constructor(private readonly dev: CudaDevice, p: Program, inputs: ReadonlyMap<string, Tensor>, kernels: KernelSet, opts: { params?: Readonly<Record<string, number>>; layer?: number }, stream: CudaStream | null = null) {
    const b = (this.b = bindDecode(p, inputs, opts.params ?? {}, opts.layer ?? 0));
    this.dtype = inputs.get("q")!.dtype as CudaDType;
    const { Hq, Hkv, d, c } = b;
    const esz = this.dtype === "f32" ? 4 : 2;
    const alloc = (bytes: number): DeviceBuffer => {
      const buf = dev.alloc(Math.max(bytes, 16));
      this.bufs.push(buf);
      return buf;
    };
    const upload = (t: Tensor): DeviceBuffer => {
      const buf = alloc(t.data.length * esz);
      buf.write(tensorToBytes(t));
      return buf;
    };
    const q = upload(inputs.get("q")!);
    const kc = upload(inputs.get("k_cache")!);
    const vc = upload(inputs.get("v_cache")!);
    this.o = alloc(Hq * d * esz);
    const splits = decodeSplits(dev.info.smCount, Hkv, c);
    const partO = alloc(4 * Hq * splits * d);
    const partMl = alloc(4 * Hq * splits * 2);
    const length = alloc(4);
    length.write(Int32Array.of(c));
    const P = alloc(8 * Math.max(1, paramSlots(p).names.length));
    P.write(slotValues(paramSlots(p), b.env));
    const nd = only(p, "decode", "decode_attn");
    const scale = knobValue(nd.attrs.scale as Expr, b.env, "scale", "scale");
    const args = packArgs([q, kc, vc, this.o, partO, partMl, length, P, i64(c), i64(Hq), i64(Hkv), i64(d), i64(splits), f64(scale)]);
    const g = decodeGeometry(kernels.config("decode"), { Hq, Hkv, splits });
    const split = kernels.fn("decode", "_split");
    const combine = kernels.fn("decode", "_combine");
    this.launch = () => {
      dev.launch(split, { grid: g.split.grid, block: g.split.block, sharedBytes: 0, stream }, args);
      dev.launch(combine, { grid: g.combine.grid, block: g.combine.block, sharedBytes: 0, stream }, args);
    };
  }
  poison(): void {
    this.o.fill32(0xffffffff);
  }
  enqueue(): void {
    this.launch();
  }
  download(): Map<string, Tensor> {
    this.dev.synchronize();
    const { Hq, d } = this.b;
    const esz = this.dtype === "f32" ? 4 : 2;
    return new Map([["o", tensorFromBytes(this.dtype, [Hq, 1, d], this.o.read(new Uint8Array(Hq * d * esz)))]]);
  }
  free(): void {
    for (const b of this.bufs) b.free();
  }
}
