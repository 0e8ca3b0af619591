// Binding a program to concrete inputs: input validation (shapes, dtypes, GQA), parameter overrides, and the
// numeric environment every expression is evaluated in. Shared by the interpreter and the GPU runtimes.
import { fail } from "../diagnostics/diagnostic.ts";
import type { Tensor } from "../io/tensor.ts";
import type { Program } from "../ir/ir.ts";

export interface Binding {
  readonly Hq: number;
  readonly Hkv: number;
  readonly n: number;
  readonly d: number;
  readonly layer: number;
  /** Parameter values (declared defaults with overrides applied) plus n, d, layer. */
  readonly env: Readonly<Record<string, number>>;
}

const FLOATS = new Set(["f32", "f16", "bf16"]);
const shapeStr = (t: Tensor): string => `${t.dtype}[${t.shape.join(",")}]`;

export function need(inputs: ReadonlyMap<string, Tensor>, name: string): Tensor {
  return inputs.get(name) ?? fail("ZV2101", [name, [...inputs.keys()].join(", ") || "none"]);
}

export function bindParams(p: Program, overrides: Readonly<Record<string, number>>): Record<string, number> {
  const env: Record<string, number> = Object.fromEntries(p.params.map((x) => [x.name, x.value]));
  for (const [k, v] of Object.entries(overrides)) {
    if (!(k in env)) fail("ZV1207", [k, p.params.map((x) => x.name).join(", ") || "(none)"]);
    if (!Number.isFinite(v)) fail("ZV1208", [k, String(v)]);
    env[k] = v;
  }
  return env;
}

/** Checks q/k/v of a prefill call and returns the dimensions. */
export function bindPrefill(p: Program, inputs: ReadonlyMap<string, Tensor>, overrides: Readonly<Record<string, number>>, layer: number): Binding {
  const q = need(inputs, "q");
  const k = need(inputs, "k");
  const v = need(inputs, "v");
  for (const [name, t] of [["q", q], ["k", k], ["v", v]] as const) {
    if (t.shape.length !== 3) fail("ZV2102", [`${name} must be [heads, n, head_dim], got ${shapeStr(t)}`]);
    if (!FLOATS.has(t.dtype)) fail("ZV2103", [`${name} is ${t.dtype}; q, k and v must be f32, f16 or bf16`]);
  }
  if (k.dtype !== q.dtype || v.dtype !== q.dtype) fail("ZV2103", [`q, k and v must share a dtype, got ${q.dtype}, ${k.dtype}, ${v.dtype}`]);
  const [Hq, n, d] = q.shape as [number, number, number];
  const [Hkv] = k.shape as [number];
  if (n < 1 || d < 1 || Hq < 1 || Hkv < 1) fail("ZV2102", [`q ${shapeStr(q)} must have at least one head, token and channel`]);
  if (k.shape[1] !== n || k.shape[2] !== d) fail("ZV2102", [`k ${shapeStr(k)} must be [Hkv, ${n}, ${d}] to match q ${shapeStr(q)}`]);
  if (v.shape.join() !== k.shape.join()) fail("ZV2102", [`v ${shapeStr(v)} must match k ${shapeStr(k)}`]);
  if (Hq % Hkv !== 0) fail("ZV2104", [Hq, Hkv]);
  const probes = inputs.get("probes");
  if (probes) {
    if (probes.dtype !== "i32" || probes.shape.length !== 1) fail("ZV2106", [`'probes' must be i32[m], got ${shapeStr(probes)}`]);
    for (let i = 0; i < probes.data.length; i++) {
      const x = probes.data[i]!;
      if (x < 0 || x >= n) fail("ZV2106", [`position ${x} is outside [0, ${n})`]);
      if (i > 0 && x <= probes.data[i - 1]!) fail("ZV2106", ["positions must be strictly ascending"]);
    }
  }
  const env = { ...bindParams(p, overrides), n, d, layer };
  return { Hq, Hkv, n, d, layer, env };
}

export function bindDecode(p: Program, inputs: ReadonlyMap<string, Tensor>, overrides: Readonly<Record<string, number>>, layer: number): Binding & { c: number } {
  const q = need(inputs, "q");
  const kc = need(inputs, "k_cache");
  const vc = need(inputs, "v_cache");
  if (q.shape.length !== 3 || q.shape[1] !== 1) fail("ZV2102", [`decode q must be [Hq, 1, d], got ${shapeStr(q)}`]);
  if (kc.shape.length !== 3) fail("ZV2102", [`k_cache must be [Hkv, c, d], got ${shapeStr(kc)}`]);
  if (vc.shape.join() !== kc.shape.join()) fail("ZV2102", [`v_cache ${shapeStr(vc)} must match k_cache ${shapeStr(kc)}`]);
  for (const t of [q, kc, vc]) if (!FLOATS.has(t.dtype)) fail("ZV2103", [`${shapeStr(t)}: decode tensors must be f32, f16 or bf16`]);
  const [Hq, , d] = q.shape as [number, number, number];
  const [Hkv, c] = kc.shape as [number, number];
  if (kc.shape[2] !== d) fail("ZV2102", [`k_cache ${shapeStr(kc)} head dim must equal q's ${d}`]);
  if (c < 1) fail("ZV2102", ["the cache must hold at least one token"]);
  if (Hq % Hkv !== 0) fail("ZV2104", [Hq, Hkv]);
  const env = { ...bindParams(p, overrides), n: c, d, layer };
  return { Hq, Hkv, n: c, d, layer, env, c };
}
