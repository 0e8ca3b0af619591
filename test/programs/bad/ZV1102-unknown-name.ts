// expect: ZV1102 at 11:42
// @ts-nocheck
// Bad program: kpos is not a mask name.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize(),
  select: select.all(),
  attention: attention({ mask: "q_pos >= kpos" }),
});
