// expect: ZV1101 at 8:35
// @ts-nocheck
// Bad program: two operators in a row.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores({ modifier: "s * * 2" }),
  normalize: normalize(),
  select: select.all(),
});
