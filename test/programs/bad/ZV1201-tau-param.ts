// expect: ZV1201 at 11:23
// @ts-nocheck
// Bad program: tau above 1, through a parameter.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  params: { tau: 2 },
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize(),
  select: select.tau("tau"),
});
