// expect: ZV1104 at 11:31
// @ts-nocheck
// Bad program: tanh takes one argument.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize(),
  select: select.all(),
  decode: decode({ modifier: "tanh(s, 30)" }),
});
