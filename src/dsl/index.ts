// The TypeScript-embedded DSL. Programs in dsl/ call these builders; the front end (src/frontend) evaluates the
// same calls statically so that every diagnostic points into the program file. Builders only check the shape of
// their arguments; meaning (names in expressions, ranges of knobs) is checked when the program is lowered to IR.
import { arity, intList, knob, oneOf, options, str, DslArgError } from "./check-args.ts";
import {
  ACCUMULATE, ACTIVATIONS, NORMALIZERS, POOLS, REQUIRED_STAGES, STAGES,
  type Activation, type Accumulate, type AttentionSpec, type DecodeSpec, type Knob, type Normalizer, type NormalizeSpec,
  type PoolKind, type ProbeSpec, type ProgramSpec, type ScoresSpec, type SelectMode, type SelectSpec,
} from "./spec.ts";

export type * from "./spec.ts";

const CAUSAL = "q_pos >= k_pos";

export const probes = {
  /** The last `count` query rows (ZipVL: 64). */
  recent(...a: [count: Knob]): ProbeSpec {
    arity("probes.recent", a, 1, 1);
    return { kind: "probes", rule: "recent", recent: knob("probes.recent", a[0], [0]) };
  },
  /** `count` distinct rows drawn with `seed` from the whole prompt. */
  random(...a: [count: Knob, seed?: Knob]): ProbeSpec {
    arity("probes.random", a, 1, 2);
    return { kind: "probes", rule: "random", random: knob("probes.random", a[0], [0]), seed: knob("probes.random", a[1] ?? 0, [1]) };
  },
  /** ZipVL's default: the `recent` last rows plus `random` distinct earlier rows drawn with `seed`. */
  recentAndRandom(...a: [recent: Knob, random: Knob, seed?: Knob]): ProbeSpec {
    const fn = "probes.recentAndRandom";
    arity(fn, a, 2, 3);
    return { kind: "probes", rule: "recent_random", recent: knob(fn, a[0], [0]), random: knob(fn, a[1], [1]), seed: knob(fn, a[2] ?? 0, [2]) };
  },
  /** An explicit list of query rows (positions past the prompt are dropped at run time). */
  list(...a: [positions: readonly number[]]): ProbeSpec {
    arity("probes.list", a, 1, 1);
    return { kind: "probes", rule: "list", list: intList("probes.list", a[0], [0]) };
  },
  /** Every query row scores the keys (H2O's accumulated attention). */
  all(...a: []): ProbeSpec {
    arity("probes.all", a, 0, 0);
    return { kind: "probes", rule: "all" };
  },
};

export interface ScoresOptions { scale?: Knob; modifier?: string; mask?: string }
/** Q.K^T * scale, then `modifier` (names: s, q_pos, k_pos, n, d, params), visible where `mask` holds. */
export function scores(...a: [opts?: ScoresOptions]): ScoresSpec {
  arity("scores", a, 0, 1);
  const o = options("scores", a[0], ["scale", "modifier", "mask"], [0]);
  return {
    kind: "scores",
    scale: knob("scores", o.scale ?? "1 / sqrt(d)", [0, "scale"]),
    modifier: str("scores", o.modifier ?? "s", [0, "modifier"]),
    mask: str("scores", o.mask ?? CAUSAL, [0, "mask"]),
  };
}

export interface NormalizeOptions {
  activation?: Activation;
  accumulate?: Accumulate;
  normalizer?: Normalizer;
  pool?: { kind: PoolKind; size: Knob };
}
/** Row activation, column accumulation over probe rows and heads, and the per-column normalizer. */
export function normalize(...a: [opts?: NormalizeOptions]): NormalizeSpec {
  arity("normalize", a, 0, 1);
  const o = options("normalize", a[0], ["activation", "accumulate", "normalizer", "pool"], [0]);
  const pool = options("normalize", o.pool, ["kind", "size"], [0, "pool"]);
  return {
    kind: "normalize",
    activation: oneOf("normalize", "activation", o.activation ?? "softmax", ACTIVATIONS, [0, "activation"]),
    accumulate: oneOf("normalize", "accumulate", o.accumulate ?? "layer", ACCUMULATE, [0, "accumulate"]),
    normalizer: oneOf("normalize", "normalizer", o.normalizer ?? "visible", NORMALIZERS, [0, "normalizer"]),
    pool: {
      kind: oneOf("normalize", "pool.kind", pool.kind ?? "none", POOLS, [0, "pool", "kind"]),
      size: knob("normalize", pool.size ?? 1, [0, "pool", "size"]),
    },
  };
}

export interface SelectOptions { keepFirst?: Knob; keepLast?: Knob; keepIf?: string; fromLayer?: Knob }
const SELECT_OPTIONS = ["keepFirst", "keepLast", "keepIf", "fromLayer"];

function selection(fn: string, mode: SelectMode, amount: Knob, opts: unknown, at: number): SelectSpec {
  const o = options(fn, opts, SELECT_OPTIONS, [at]);
  return {
    kind: "select",
    mode,
    amount,
    keepFirst: knob(fn, o.keepFirst ?? 0, [at, "keepFirst"]),
    keepLast: knob(fn, o.keepLast ?? 0, [at, "keepLast"]),
    keepIf: str(fn, o.keepIf ?? "false", [at, "keepIf"]),
    fromLayer: knob(fn, o.fromLayer ?? 0, [at, "fromLayer"]),
  };
}

export const select = {
  /** ZipVL: the count from cumulative raw mass >= tau, the identity from normalized scores. */
  tau(...a: [tau: Knob, opts?: SelectOptions]): SelectSpec {
    arity("select.tau", a, 1, 2);
    return selection("select.tau", "tau", knob("select.tau", a[0], [0]), a[1], 1);
  },
  /** A fixed fraction of the prompt: max(1, ceil(ratio * n)). */
  ratio(...a: [ratio: Knob, opts?: SelectOptions]): SelectSpec {
    arity("select.ratio", a, 1, 2);
    return selection("select.ratio", "ratio", knob("select.ratio", a[0], [0]), a[1], 1);
  },
  /** A fixed number of tokens: min(n, budget). */
  budget(...a: [budget: Knob, opts?: SelectOptions]): SelectSpec {
    arity("select.budget", a, 1, 2);
    return selection("select.budget", "budget", knob("select.budget", a[0], [0]), a[1], 1);
  },
  /** Keep every token (dense attention through the same pipeline). */
  all(...a: [opts?: SelectOptions]): SelectSpec {
    arity("select.all", a, 0, 1);
    return selection("select.all", "all", 1, a[0], 0);
  },
};

export interface AttentionOptions { scale?: Knob; modifier?: string; mask?: string }
/** Token-sparse attention among the selected tokens, on their original positions. */
export function attention(...a: [opts?: AttentionOptions]): AttentionSpec {
  arity("attention", a, 0, 1);
  const o = options("attention", a[0], ["scale", "modifier", "mask"], [0]);
  return {
    kind: "attention",
    scale: knob("attention", o.scale ?? "1 / sqrt(d)", [0, "scale"]),
    modifier: str("attention", o.modifier ?? "s", [0, "modifier"]),
    mask: str("attention", o.mask ?? CAUSAL, [0, "mask"]),
  };
}

export interface DecodeOptions { scale?: Knob; modifier?: string }
/** One new token against the layer's pruned cache; no mask. */
export function decode(...a: [opts?: DecodeOptions]): DecodeSpec {
  arity("decode", a, 0, 1);
  const o = options("decode", a[0], ["scale", "modifier"], [0]);
  return { kind: "decode", scale: knob("decode", o.scale ?? "1 / sqrt(d)", [0, "scale"]), modifier: str("decode", o.modifier ?? "s", [0, "modifier"]) };
}

export interface ProgramStages {
  params?: Record<string, number>;
  probes: ProbeSpec;
  scores: ScoresSpec;
  normalize: NormalizeSpec;
  select: SelectSpec;
  attention?: AttentionSpec;
  decode?: DecodeSpec;
}

/** A whole program: named parameters (overridable with --param) and its stages. */
export function program(...a: [name: string, stages: ProgramStages]): ProgramSpec {
  arity("program", a, 2, 2);
  if (typeof a[0] !== "string" || !/^[A-Za-z_][\w-]*$/.test(a[0])) throw new DslArgError("ZV1006", ["program", "a name (letters, digits, _ and -)", JSON.stringify(a[0])], [0]);
  const s = options("program", a[1], STAGES, [1]);
  for (const req of REQUIRED_STAGES) if (s[req] === undefined) throw new DslArgError("ZV1008", [req], [1]);
  const params = options("program", s.params ?? {}, Object.keys(s.params ?? {}), [1, "params"]);
  for (const [k, v] of Object.entries(params)) {
    if (typeof v !== "number" || !Number.isFinite(v)) throw new DslArgError("ZV1208", [k, String(v)], [1, "params", k]);
  }
  const stage = <K extends string>(key: string, kind: K): void => {
    const v = s[key] as { kind?: string } | undefined;
    if (v !== undefined && v?.kind !== kind) throw new DslArgError("ZV1006", ["program", `a ${kind}(...) stage for '${key}'`, typeof v === "object" ? `a ${v?.kind ?? "plain object"}` : typeof v], [1, key]);
  };
  for (const [key, kind] of [["probes", "probes"], ["scores", "scores"], ["normalize", "normalize"], ["select", "select"], ["attention", "attention"], ["decode", "decode"]] as const) stage(key, kind);
  return {
    kind: "program",
    name: a[0],
    params: params as Record<string, number>,
    probes: s.probes as ProbeSpec,
    scores: s.scores as ScoresSpec,
    normalize: s.normalize as NormalizeSpec,
    select: s.select as SelectSpec,
    attention: (s.attention as AttentionSpec | undefined) ?? attention(),
    decode: (s.decode as DecodeSpec | undefined) ?? decode(),
  };
}
