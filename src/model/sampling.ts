// Next-token choice: greedy (temperature 0) or temperature + top-p (nucleus) sampling with a seeded generator,
// in transformers' order (temperature, then top-p keeping the smallest prefix whose mass reaches p, at least one).
import { Rng } from "../io/random.ts";
import { LlavaError } from "./errors.ts";

export interface SamplingOptions {
  /** 0 = greedy. */
  readonly temperature?: number;
  readonly topP?: number;
  readonly seed?: number;
}

export type Sampler = (logits: Float32Array) => number;

/** Index of the largest logit (ties: the smaller id, like torch.argmax). */
export function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/** argmax of each of the `rows` rows of logits [rows, V]. */
export function argmaxRows(logits: Float32Array, rows: number): number[] {
  const V = logits.length / rows;
  return Array.from({ length: rows }, (_, b) => argmax(logits.subarray(b * V, (b + 1) * V)));
}

export function createSampler(opts: SamplingOptions = {}): Sampler {
  const t = opts.temperature ?? 0;
  const p = opts.topP ?? 1;
  const seed = opts.seed ?? 0;
  if (!Number.isFinite(t) || t < 0) throw new LlavaError("ZV6106", [`--temperature must be a number >= 0, got ${t}`]);
  if (!Number.isFinite(p) || p <= 0 || p > 1) throw new LlavaError("ZV6106", [`--top-p must be in (0, 1], got ${p}`]);
  if (!Number.isSafeInteger(seed)) throw new LlavaError("ZV6106", [`--seed must be an integer, got ${seed}`]);
  if (t === 0) return argmax;
  const rng = new Rng(seed);
  return (logits) => {
    let mx = -Infinity;
    for (const x of logits) mx = Math.max(mx, x / t);
    const prob = Float64Array.from(logits, (x) => Math.exp(x / t - mx));
    const total = prob.reduce((a, b) => a + b, 0);
    const order = Array.from(prob.keys()).sort((a, b) => prob[b]! - prob[a]! || a - b);
    let kept = 0;
    let mass = 0;
    while (kept < order.length && (kept === 0 || mass < p * total)) mass += prob[order[kept++]!]!;
    let u = rng.uniform() * mass;
    for (let i = 0; i < kept; i++) {
      u -= prob[order[i]!]!;
      if (u < 0) return order[i]!;
    }
    return order[kept - 1]!;
  };
}
