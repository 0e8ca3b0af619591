// expect: ZV1008 at 6:31
// @ts-nocheck
// Bad program: no normalize stage.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("bad", {
  probes: probes.recent(1),
  scores: scores(),
  select: select.all(),
});
