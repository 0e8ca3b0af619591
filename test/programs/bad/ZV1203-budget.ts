// expect: ZV1203 at 10:25
// @ts-nocheck
// Bad program: a fractional budget.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize(),
  select: select.budget(2.5),
});
