// expect: ZV1209 at 7:30
// @ts-nocheck
// Bad program: a negative probe position.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.list([0, 8, -1]),
  scores: scores(),
  normalize: normalize(),
  select: select.all(),
});
