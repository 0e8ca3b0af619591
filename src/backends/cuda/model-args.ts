// The host mirror of templates/cuda/include/zv_model_args.cuh (the model kernels' argument structs): field names
// in declaration order, 8 bytes each. test/cuda-model.test.ts compiles the header with g++ and checks every offset.
import { packArgs, type ArgField } from "../../runtime/native.ts";

export const MODEL_ARG_LAYOUTS = {
  ZvNormArgs: ["x", "w", "b", "y", "rows", "cols", "kind", "eps"],
  ZvEltArgs: ["a", "b", "y", "count", "kind", "cols", "brows"],
  ZvEmbedArgs: ["table", "ids", "y", "nids", "H", "V"],
  ZvRopeArgs: ["x", "y", "positions", "inv_freq", "H", "n", "d", "scale"],
  ZvHeadsArgs: ["x", "y", "n", "H", "d", "dir"],
  ZvAttnArgs: ["q", "k", "v", "o", "Hq", "Hkv", "nq", "nk", "d", "causal", "scale"],
  ZvInitArgs: ["y", "count", "seed", "std"],
  ZvArgmaxArgs: ["x", "ids", "copy", "slot", "rows", "V", "stride"],
  ZvGemvArgs: ["x", "norm_w", "res", "positions", "inv_freq", "w0", "w1", "w2", "b0", "b1", "b2", "y0", "y1", "y2", "K", "x_head_dim", "n0", "n1", "n2", "nseg", "mode", "d", "rope_mask", "heads_mask", "kc", "rotate", "sink_rows", "sink_k", "sink_v", "eps", "rope_scale"],
} as const;

export type ModelArgStruct = keyof typeof MODEL_ARG_LAYOUTS;
export type ModelArgValues<S extends ModelArgStruct> = Record<(typeof MODEL_ARG_LAYOUTS)[S][number], ArgField>;

export function packModelArgs<S extends ModelArgStruct>(struct: S, values: ModelArgValues<S>): ArrayBuffer {
  return packArgs(MODEL_ARG_LAYOUTS[struct].map((f) => (values as Record<string, ArgField>)[f]!));
}

/** Elementwise kinds of zv_model.cuh's elt kernel. */
export const ELT_KIND = { add: 0, silu_mul: 1, gelu: 2, quick_gelu: 3, gelu_tanh: 4, silu: 5, copy: 6, add_rows: 7, copy_strided: 8 } as const;
export type EltKind = keyof typeof ELT_KIND;
