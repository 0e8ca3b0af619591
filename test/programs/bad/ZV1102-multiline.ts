// expect: ZV1102 at 10:7
// @ts-nocheck
// Bad program: the location follows a template literal across lines.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores({
    mask: `q_pos >= k_pos &&
      window > 0`,
  }),
  normalize: normalize(),
  select: select.all(),
});
