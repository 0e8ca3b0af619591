// ZipVL's scoring with a fixed per-layer ratio instead of the adaptive tau count (the paper's ablation).
import { normalize, probes, program, scores, select } from "../../src/dsl/index.ts";

export default program("topk_ratio", {
  params: { ratio: 0.367, recent: 64, random: 64, seed: 0 },
  probes: probes.recentAndRandom("recent", "random", "seed"),
  scores: scores(),
  normalize: normalize({ normalizer: "visible" }),
  select: select.ratio("ratio"),
});
