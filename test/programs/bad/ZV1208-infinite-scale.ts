// expect: ZV1208 at 8:28
// @ts-nocheck
// Bad program: a scale that divides by zero.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores({ scale: "1 / 0" }),
  normalize: normalize(),
  select: select.all(),
});
