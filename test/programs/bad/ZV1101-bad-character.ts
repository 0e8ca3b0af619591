// expect: ZV1101 at 8:33
// @ts-nocheck
// Bad program: a character the expression language lacks.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores({ modifier: "s $ 2" }),
  normalize: normalize(),
  select: select.all(),
});
