// Types for demo/build.mjs (a plain ES module run with tsx; the tests import it).
export interface DemoLayer {
  program: string;
  dims: { Hq: number; Hkv: number; n: number; d: number; m: number; S: number };
  probes: number[];
  expected: { count: number[]; selected: number[]; scores: string; norm_scores: string; o: string };
  [key: string]: unknown;
}
export interface BuildDemoOptions {
  outDir?: string;
  Hq?: number;
  Hkv?: number;
  n?: number;
  d?: number;
  seed?: number;
  qScale?: number;
  rollLoops?: boolean;
}
export function buildDemo(o?: BuildDemoOptions): Promise<{ outDir: string; layer: DemoLayer }>;
