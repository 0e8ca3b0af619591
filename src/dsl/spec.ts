// What a zipvl program is before it becomes IR: plain data produced by the DSL builders (src/dsl/index.ts).
// Knobs are numbers or expression strings; expression strings are parsed during lowering so that errors point
// into the program file.
export type Knob = number | string;

export const ACTIVATIONS = ["softmax", "sigmoid", "none"] as const;
export const NORMALIZERS = ["visible", "n_minus_j", "none"] as const;
export const ACCUMULATE = ["layer", "kv_head"] as const;
export const POOLS = ["none", "max", "avg"] as const;
export type Activation = (typeof ACTIVATIONS)[number];
export type Normalizer = (typeof NORMALIZERS)[number];
export type Accumulate = (typeof ACCUMULATE)[number];
export type PoolKind = (typeof POOLS)[number];

export type ProbeSpec =
  | { readonly kind: "probes"; readonly rule: "recent"; readonly recent: Knob }
  | { readonly kind: "probes"; readonly rule: "random"; readonly random: Knob; readonly seed: Knob }
  | { readonly kind: "probes"; readonly rule: "recent_random"; readonly recent: Knob; readonly random: Knob; readonly seed: Knob }
  | { readonly kind: "probes"; readonly rule: "list"; readonly list: readonly number[] }
  | { readonly kind: "probes"; readonly rule: "all" };

export interface ScoresSpec {
  readonly kind: "scores";
  readonly scale: Knob; // default "1 / sqrt(d)"
  readonly modifier: string; // default "s"
  readonly mask: string; // default "q_pos >= k_pos"
}

export interface NormalizeSpec {
  readonly kind: "normalize";
  readonly activation: Activation;
  readonly accumulate: Accumulate;
  readonly normalizer: Normalizer;
  readonly pool: { readonly kind: PoolKind; readonly size: Knob };
}

export type SelectMode = "tau" | "ratio" | "budget" | "all";
export interface SelectSpec {
  readonly kind: "select";
  readonly mode: SelectMode;
  readonly amount: Knob; // tau, ratio or budget (ignored for all)
  readonly keepFirst: Knob;
  readonly keepLast: Knob;
  readonly keepIf: string; // default "false"
  readonly fromLayer: Knob; // layers before it keep everything
}

export interface AttentionSpec {
  readonly kind: "attention";
  readonly scale: Knob;
  readonly modifier: string;
  readonly mask: string;
}

export interface DecodeSpec {
  readonly kind: "decode";
  readonly scale: Knob;
  readonly modifier: string;
}

export interface ProgramSpec {
  readonly kind: "program";
  readonly name: string;
  readonly params: Readonly<Record<string, number>>;
  readonly probes: ProbeSpec;
  readonly scores: ScoresSpec;
  readonly normalize: NormalizeSpec;
  readonly select: SelectSpec;
  readonly attention: AttentionSpec;
  readonly decode: DecodeSpec;
}

export const STAGES = ["params", "probes", "scores", "normalize", "select", "attention", "decode"] as const;
export const REQUIRED_STAGES = ["probes", "scores", "normalize", "select"] as const;
