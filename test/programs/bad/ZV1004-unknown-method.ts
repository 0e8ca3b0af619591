// expect: ZV1004 at 10:18
// @ts-nocheck
// Bad program: a selection rule that does not exist.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize(),
  select: select.topk(0.5),
});
