// H2O: accumulated attention over all query rows picks heavy hitters; a recent window is always kept.
import { normalize, probes, program, scores, select } from "../../src/dsl/index.ts";

export default program("h2o", {
  params: { budget: 256, recent_window: 64 },
  probes: probes.all(),
  scores: scores(),
  normalize: normalize({ normalizer: "none" }),
  select: select.budget("budget", { keepLast: "recent_window" }),
});
