// expect: ZV1006 at 7:25
// @ts-nocheck
// Bad program: a boolean where a count goes.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(true),
  scores: scores(),
  normalize: normalize(),
  select: select.all(),
});
