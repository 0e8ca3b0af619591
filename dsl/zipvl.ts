// ZipVL (arXiv 2410.08584): probe queries score all keys, the count comes from the cumulative raw attention mass
// (tau), the identity from the normalized scores; attention runs only among the kept tokens and only their K/V
// stay in the cache. Every choice the paper leaves open is a parameter (override with --param NAME=VALUE).
import { attention, decode, normalize, probes, program, scores, select } from "../src/dsl/index.ts";

export default program("zipvl", {
  params: {
    tau: 0.975, // cumulative mass threshold (the paper also uses 0.96)
    recent: 64, // most recent probe rows
    random: 64, // random earlier probe rows
    seed: 0, // seed of the random probe rows
    sinks: 0, // first tokens always kept (off in the paper)
    keep_last: 0, // last tokens always kept (off in the paper)
  },
  probes: probes.recentAndRandom("recent", "random", "seed"),
  scores: scores({ scale: "1 / sqrt(d)", mask: "q_pos >= k_pos" }),
  // normalizer: "visible" divides by the number of probe rows that see the key (the paper);
  // "n_minus_j" is ZipCache's choice.
  normalize: normalize({ activation: "softmax", accumulate: "layer", normalizer: "visible" }),
  select: select.tau("tau", { keepFirst: "sinks", keepLast: "keep_last" }),
  attention: attention({ mask: "q_pos >= k_pos" }),
  decode: decode(),
});
