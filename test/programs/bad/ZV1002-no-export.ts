// expect: ZV1002 at 1:1
// @ts-nocheck
// Bad program: the file builds a program but never exports it.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

const p = program("bad", { probes: probes.recent(1), scores: scores(), normalize: normalize(), select: select.all() });
