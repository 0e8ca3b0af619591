// Probe row generation, the same on every backend (runtimes compute probes on the host with this code).
// xorshift32 with a fixed seed mix keeps the draw reproducible everywhere.

export function xorshift32(seed: number): () => number {
  let s = (Math.imul(seed >>> 0, 2654435761) ^ 0x9e3779b9) >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

export interface ProbeRule {
  readonly rule: "recent" | "random" | "recent_random" | "list" | "all";
  readonly recent: number;
  readonly random: number;
  readonly seed: number;
  readonly list: readonly number[];
}

/** Ascending, unique probe rows for a prompt of n tokens. */
export function probeRows(r: ProbeRule, n: number): Int32Array {
  switch (r.rule) {
    case "all":
      return Int32Array.from({ length: n }, (_, i) => i);
    case "list":
      return Int32Array.from([...new Set(r.list)].filter((x) => x < n).sort((a, b) => a - b));
    default: {
      const recent = r.rule === "random" ? 0 : Math.min(r.recent, n);
      const pool = n - recent; // random rows come from before the recent ones
      const take = r.rule === "recent" ? 0 : Math.min(r.random, pool);
      const idx = Int32Array.from({ length: pool }, (_, i) => i);
      const next = xorshift32(r.seed);
      for (let i = 0; i < take; i++) {
        const j = i + (next() % (pool - i));
        const t = idx[i]!;
        idx[i] = idx[j]!;
        idx[j] = t;
      }
      const rows = [...idx.subarray(0, take)].sort((a, b) => a - b);
      for (let p = n - recent; p < n; p++) rows.push(p);
      return Int32Array.from(rows);
    }
  }
}
