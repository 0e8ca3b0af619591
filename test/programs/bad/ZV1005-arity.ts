// expect: ZV1005 at 7:11
// @ts-nocheck
// Bad program: probes.recent needs its count.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(),
  scores: scores(),
  normalize: normalize(),
  select: select.all(),
});
