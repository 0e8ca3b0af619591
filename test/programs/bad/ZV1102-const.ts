// expect: ZV1102 at 6:21
// @ts-nocheck
// Bad program: a name inside an expression held in a const.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

const keep = "pos < sink";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize(),
  select: select.all({ keepIf: keep }),
});
