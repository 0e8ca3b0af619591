// expect: ZV1206 at 7:16
// @ts-nocheck
// Bad program: a parameter named like a built-in.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  params: { n: 4 },
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize(),
  select: select.all(),
});
