// fast-check arbitraries for random zipvl programs (as program source text, so the whole front end is exercised)
// and random inputs for them.
import fc from "fast-check";
import { randomTensor } from "../../src/io/random.ts";
import type { Tensor } from "../../src/io/tensor.ts";

const MASKS = [
  "q_pos >= k_pos",
  "q_pos >= k_pos && q_pos - k_pos < 8",
  "q_pos >= k_pos || (q_pos >= 2 && q_pos < 6 && k_pos >= 2 && k_pos < 6)",
  "k_pos <= q_pos && k_pos >= 1",
  "true",
];
const MODIFIERS = ["s", "tanh(s / 5) * 5", "s - 0.25 * (q_pos - k_pos)", "s * 1 + 0", "max(s, -3)"];
const SCALES = ["1 / sqrt(d)", "0.1", "0.5 / sqrt(d)", "scale_p"];

const str = (s: string): string => JSON.stringify(s);

export const programText = fc
  .record({
    probes: fc.oneof(
      fc.integer({ min: 1, max: 6 }).map((r) => `probes.recent(${r})`),
      fc.tuple(fc.integer({ min: 1, max: 6 }), fc.nat(99)).map(([r, s]) => `probes.random(${r}, ${s})`),
      fc.tuple(fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: 4 }), fc.nat(99)).map(([a, b, s]) => `probes.recentAndRandom(${Math.max(a, 1)}, ${b}, ${s})`),
      fc.uniqueArray(fc.nat(30), { minLength: 1, maxLength: 5 }).map((l) => `probes.list([${l.join(", ")}])`),
      fc.constant("probes.all()"),
    ),
    scale: fc.constantFrom(...SCALES),
    modifier: fc.constantFrom(...MODIFIERS),
    probeMask: fc.constantFrom(...MASKS),
    activation: fc.constantFrom("softmax", "sigmoid", "none"),
    accumulate: fc.constantFrom("layer", "kv_head"),
    normalizer: fc.constantFrom("visible", "n_minus_j", "none"),
    pool: fc.oneof(fc.constant(""), fc.tuple(fc.constantFrom("max", "avg"), fc.constantFrom(1, 3, 5)).map(([k, s]) => `, pool: { kind: ${str(k)}, size: ${s} }`)),
    select: fc.oneof(
      fc.double({ min: 0.05, max: 1, noNaN: true }).map((t) => `select.tau(${t}`),
      fc.constant(`select.tau("tau"`),
      fc.double({ min: 0.05, max: 1, noNaN: true }).map((r) => `select.ratio(${r}`),
      fc.integer({ min: 1, max: 40 }).map((b) => `select.budget(${b}`),
      fc.constant("select.all("),
    ),
    keepFirst: fc.integer({ min: 0, max: 3 }),
    keepLast: fc.integer({ min: 0, max: 3 }),
    keepIf: fc.constantFrom("false", "pos % 7 == 3", "pos < 2 || pos >= n - 1"),
    fromLayer: fc.integer({ min: 0, max: 2 }),
    attnMask: fc.constantFrom(...MASKS),
    attnModifier: fc.constantFrom(...MODIFIERS),
    decodeModifier: fc.constantFrom("s", "tanh(s / 5) * 5", "s * 0.5"),
  })
  .map((r) => {
    const opts = `{ keepFirst: ${r.keepFirst}, keepLast: ${r.keepLast}, keepIf: ${str(r.keepIf)}, fromLayer: ${r.fromLayer} }`;
    const select = r.select.endsWith("(") ? `${r.select}${opts})` : `${r.select}, ${opts})`;
    return `import { attention, decode, normalize, probes, program, scores, select } from "../src/dsl/index.ts";
export default program("random", {
  params: { tau: 0.9, scale_p: 0.2 },
  probes: ${r.probes},
  scores: scores({ scale: ${str(r.scale)}, modifier: ${str(r.modifier)}, mask: ${str(r.probeMask)} }),
  normalize: normalize({ activation: ${str(r.activation)}, accumulate: ${str(r.accumulate)}, normalizer: ${str(r.normalizer)}${r.pool} }),
  select: ${select},
  attention: attention({ mask: ${str(r.attnMask)}, modifier: ${str(r.attnModifier)} }),
  decode: decode({ modifier: ${str(r.decodeModifier)} }),
});
`;
  });

export interface Shape {
  Hq: number;
  Hkv: number;
  n: number;
  d: number;
  seed: number;
}

export const smallShape: fc.Arbitrary<Shape> = fc
  .record({ Hkv: fc.integer({ min: 1, max: 2 }), g: fc.constantFrom(1, 2, 4), n: fc.integer({ min: 1, max: 24 }), d: fc.constantFrom(4, 8, 16), seed: fc.nat(1 << 20) })
  .map(({ Hkv, g, n, d, seed }) => ({ Hq: Hkv * g, Hkv, n, d, seed }));

export function prefillInputs(s: Shape, dtype: "f32" | "f16" | "bf16" = "f32"): Map<string, Tensor> {
  return new Map([
    ["q", randomTensor(dtype, [s.Hq, s.n, s.d], s.seed * 3 + 1)],
    ["k", randomTensor(dtype, [s.Hkv, s.n, s.d], s.seed * 3 + 2)],
    ["v", randomTensor(dtype, [s.Hkv, s.n, s.d], s.seed * 3 + 3)],
  ]);
}

export function decodeInputs(s: Shape): Map<string, Tensor> {
  return new Map([
    ["q", randomTensor("f32", [s.Hq, 1, s.d], s.seed * 3 + 1)],
    ["k_cache", randomTensor("f32", [s.Hkv, s.n, s.d], s.seed * 3 + 2)],
    ["v_cache", randomTensor("f32", [s.Hkv, s.n, s.d], s.seed * 3 + 3)],
  ]);
}

/** Largest absolute difference, or Infinity when shapes or dtypes differ; NaN equals NaN. */
export function maxDiff(a: Tensor, b: Tensor): number {
  if (a.dtype !== b.dtype || a.shape.join() !== b.shape.join()) return Infinity;
  let m = 0;
  for (let i = 0; i < a.data.length; i++) {
    const x = a.data[i]!;
    const y = b.data[i]!;
    if (Number.isNaN(x) && Number.isNaN(y)) continue;
    m = Math.max(m, Math.abs(x - y));
  }
  return m;
}
