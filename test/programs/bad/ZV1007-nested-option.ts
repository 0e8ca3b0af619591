// expect: ZV1007 at 9:56
// @ts-nocheck
// Bad program: an unknown key inside pool.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize({ pool: { kind: "max", size: 3, stride: 2 } }),
  select: select.all(),
});
