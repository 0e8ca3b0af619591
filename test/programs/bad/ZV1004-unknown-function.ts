// expect: ZV1004 at 8:11
// @ts-nocheck
// Bad program: a misspelled builder.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scorez(),
  normalize: normalize(),
  select: select.all(),
});
