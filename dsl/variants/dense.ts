// Dense causal attention through the same pipeline: every token is selected, so the sparse kernel is plain
// causal flash attention and the cache keeps everything.
import { normalize, probes, program, scores, select } from "../../src/dsl/index.ts";

export default program("dense", {
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize(),
  select: select.all(),
});
