// expect: ZV1205 at 9:53
// @ts-nocheck
// Bad program: an even pool size.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize({ pool: { kind: "max", size: 4 } }),
  select: select.all(),
});
