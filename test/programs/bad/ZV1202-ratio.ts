// expect: ZV1202 at 10:24
// @ts-nocheck
// Bad program: a zero ratio.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize(),
  select: select.ratio(0),
});
