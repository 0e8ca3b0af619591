// expect: ZV1002 at 6:16
// @ts-nocheck
// Bad program: the default export is a stage, not a program.
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default scores();
