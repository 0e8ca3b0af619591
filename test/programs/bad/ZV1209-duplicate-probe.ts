// expect: ZV1209 at 7:23
// @ts-nocheck
// Bad program: a probe position listed twice.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.list([3, 1, 3]),
  scores: scores(),
  normalize: normalize(),
  select: select.all(),
});
