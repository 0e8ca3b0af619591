// expect: ZV1205 at 6:35
// @ts-nocheck
// Bad program: the location follows a shorthand property to its const.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

const pool = { kind: "avg", size: 6 };

export default program("bad", {
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize({ pool }),
  select: select.all(),
});
