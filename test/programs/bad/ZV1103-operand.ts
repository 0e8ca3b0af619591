// expect: ZV1103 at 10:44
// @ts-nocheck
// Bad program: && needs booleans.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize(),
  select: select.all({ keepIf: "pos < 4 && 1" }),
});
