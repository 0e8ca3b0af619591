// SnapKV: the last `window` queries vote (summed attention per KV head), votes are max-pooled, the top budget is
// kept per KV head together with the observation window itself.
import { normalize, probes, program, scores, select } from "../../src/dsl/index.ts";

export default program("snapkv", {
  params: { window: 32, budget: 512, kernel: 7 },
  probes: probes.recent("window"),
  scores: scores(),
  normalize: normalize({ accumulate: "kv_head", normalizer: "none", pool: { kind: "max", size: "kernel" } }),
  select: select.budget("budget", { keepLast: "window" }),
});
