// expect: ZV1201 at 10:22
// @ts-nocheck
// Bad program: tau above 1.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize(),
  select: select.tau(1.5),
});
