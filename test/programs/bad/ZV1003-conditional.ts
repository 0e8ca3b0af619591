// expect: ZV1003 at 9:25
// @ts-nocheck
// Bad program: a conditional expression is not plain data.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

const big = 1;

export default program("bad", {
  probes: probes.recent(big ? 64 : 32),
  scores: scores(),
  normalize: normalize(),
  select: select.all(),
});
