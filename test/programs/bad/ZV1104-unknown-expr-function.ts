// expect: ZV1104 at 8:31
// @ts-nocheck
// Bad program: softcap is not built in.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores({ modifier: "softcap(s)" }),
  normalize: normalize(),
  select: select.all(),
});
