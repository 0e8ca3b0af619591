// expect: ZV1204 at 9:38
// @ts-nocheck
// Bad program: relu is not an activation.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize({ activation: "relu" }),
  select: select.all(),
});
