// Rotary frequencies of a LLaMA text model, with transformers' rope scaling types (modeling_rope_utils.py):
// default, linear, dynamic (NTK, recomputed from the longest position seen), llama3. Any other type is a coded error.
import type { TextConfig } from "./config.ts";
import { LlavaError } from "./errors.ts";

export interface RopeFreqs {
  readonly invFreq: Float32Array;
  /** HF attention_scaling: multiplies cos and sin. */
  readonly scale: number;
}

const num = (rs: Readonly<Record<string, unknown>>, key: string, fallback?: number): number => {
  const v = rs[key] ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v)) throw new LlavaError("ZV6103", [`rope scaling '${String(rs.rope_type ?? rs.type)}'`, `'${key}' must be a finite number, got ${JSON.stringify(rs[key])}`]);
  return v;
};

/** The scaling type of a config: "default" when there is none (transformers 5 keeps rope_theta in the same dict). */
export function ropeType(cfg: TextConfig): string {
  const rs = cfg.ropeScaling;
  if (!rs) return "default";
  const t = rs.rope_type ?? rs.type ?? "default";
  return String(t);
}

/** Checks the scaling type up front so an unsupported checkpoint fails before any weight is read. */
export function checkRope(cfg: TextConfig): void {
  const t = ropeType(cfg);
  if (!["default", "linear", "dynamic", "llama3"].includes(t)) throw new LlavaError("ZV6103", [`rope scaling type '${t}'`, "supported: default, linear, dynamic, llama3"]);
  if (cfg.headDim % 2 !== 0) throw new LlavaError("ZV6103", [`head_dim ${cfg.headDim}`, "rotary embeddings need an even head dim"]);
  const rs = cfg.ropeScaling;
  if (rs && rs.partial_rotary_factor !== undefined && rs.partial_rotary_factor !== 1) throw new LlavaError("ZV6103", ["partial_rotary_factor", `got ${String(rs.partial_rotary_factor)}`]);
}

function baseInvFreq(theta: number, d: number): Float32Array {
  // torch: 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)), in f32.
  return Float32Array.from({ length: d / 2 }, (_, i) => 1 / Math.fround(theta ** Math.fround((2 * i) / d)));
}

/** Frequencies for a forward pass whose longest position so far is `seqLen - 1` (only `dynamic` depends on it). */
export function ropeFreqs(cfg: TextConfig, seqLen: number): RopeFreqs {
  checkRope(cfg);
  const d = cfg.headDim;
  const rs = cfg.ropeScaling ?? {};
  const t = ropeType(cfg);
  const inv = baseInvFreq(cfg.ropeTheta, d);
  if (t === "default") return { invFreq: inv, scale: 1 };
  if (t === "linear") {
    const f = num(rs, "factor");
    return { invFreq: inv.map((x) => x / f), scale: 1 };
  }
  if (t === "dynamic") {
    const f = num(rs, "factor");
    const orig = num(rs, "original_max_position_embeddings", cfg.maxPositionEmbeddings);
    if (seqLen <= orig) return { invFreq: inv, scale: 1 };
    const base = cfg.ropeTheta * ((f * seqLen) / orig - (f - 1)) ** (d / (d - 2));
    return { invFreq: baseInvFreq(base, d), scale: 1 };
  }
  // llama3
  const f = num(rs, "factor");
  const lo = num(rs, "low_freq_factor");
  const hi = num(rs, "high_freq_factor");
  const old = num(rs, "original_max_position_embeddings");
  const loWave = old / lo;
  const hiWave = old / hi;
  return {
    invFreq: inv.map((x) => {
      const wave = (2 * Math.PI) / x;
      if (wave < hiWave) return x;
      if (wave > loWave) return x / f;
      const smooth = (old / wave - lo) / (hi - lo);
      return (1 - smooth) * (x / f) + smooth * x;
    }),
    scale: 1,
  };
}
