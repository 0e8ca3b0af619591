// expect: ZV1009 at 7:25
// @ts-nocheck
// Bad program: window is not declared.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(window),
  scores: scores(),
  normalize: normalize(),
  select: select.all(),
});
