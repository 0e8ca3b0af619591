// expect: ZV1006 at 7:11
// @ts-nocheck
// Bad program: a scores stage given as probes.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: scores(),
  scores: scores(),
  normalize: normalize(),
  select: select.all(),
});
