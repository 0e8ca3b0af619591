// expect: ZV1208 at 7:18
// @ts-nocheck
// Bad program: a parameter given as a string.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  params: { tau: "0.9" },
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize(),
  select: select.all(),
});
