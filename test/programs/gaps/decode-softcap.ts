// A valid program the cuda backend cannot run yet: a score modifier (Gemma-style softcap) in decode().
import { attention, decode, normalize, probes, program, scores, select } from "../../../src/dsl/index.ts";

export default program("decode_softcap", {
  params: { tau: 0.975, cap: 30 },
  probes: probes.recent(16),
  scores: scores({ modifier: "tanh(s / cap) * cap" }),
  normalize: normalize(),
  select: select.tau("tau"),
  attention: attention({ modifier: "tanh(s / cap) * cap" }),
  decode: decode({ modifier: "tanh(s / cap) * cap" }),
});
