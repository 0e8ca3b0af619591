// FastV: after layer K, drop the image tokens that receive the least mean attention from the last query;
// text tokens (outside [img_start, img_end)) are always kept. Layers before K stay dense.
import { normalize, probes, program, scores, select } from "../../src/dsl/index.ts";

export default program("fastv", {
  params: { K: 2, ratio: 0.5, img_start: 35, img_end: 611 },
  probes: probes.recent(1),
  scores: scores(),
  normalize: normalize({ normalizer: "none" }),
  select: select.ratio("ratio", { fromLayer: "K", keepIf: "pos < img_start || pos >= img_end" }),
});
