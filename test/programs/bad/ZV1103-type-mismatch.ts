// expect: ZV1103 at 8:27
// @ts-nocheck
// Bad program: a mask must be boolean.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores({ mask: "q_pos - k_pos" }),
  normalize: normalize(),
  select: select.all(),
});
