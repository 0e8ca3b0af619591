// expect: ZV1007 at 8:20
// @ts-nocheck
// Bad program: a misspelled option points at its key.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores({ sclae: 0.125 }),
  normalize: normalize(),
  select: select.all(),
});
