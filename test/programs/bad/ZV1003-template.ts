// expect: ZV1003 at 8:26
// @ts-nocheck
// Bad program: a template literal with substitutions.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores({ mask: `q_pos >= ${1}` }),
  normalize: normalize(),
  select: select.all(),
});
