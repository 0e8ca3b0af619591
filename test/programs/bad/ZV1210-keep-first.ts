// expect: ZV1210 at 10:40
// @ts-nocheck
// Bad program: a negative keepFirst.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize(),
  select: select.tau(0.9, { keepFirst: -1 }),
});
