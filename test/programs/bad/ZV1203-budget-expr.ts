// expect: ZV1203 at 11:26
// @ts-nocheck
// Bad program: a budget expression that is zero.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  params: { keep: 4 },
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize(),
  select: select.budget("keep - 4"),
});
