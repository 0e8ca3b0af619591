// expect: ZV1009 at 9:25
// @ts-nocheck
// Bad program: only consts can be referenced.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

let count = 8;

export default program("bad", {
  probes: probes.recent(count),
  scores: scores(),
  normalize: normalize(),
  select: select.all(),
});
