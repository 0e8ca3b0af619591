// expect: ZV1210 at 8:38
// @ts-nocheck
// Bad program: a fractional random probe count from a parameter.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  params: { r: 2.5 },
  probes: probes.recentAndRandom(4, "r"),
  scores: scores(),
  normalize: normalize(),
  select: select.all(),
});
