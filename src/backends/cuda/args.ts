// The host mirror of templates/cuda/include/zv_args.cuh: field names in declaration order. Every field is 8 bytes,
// so packing by name is all the marshalling there is; test/cuda-args.test.ts compiles the header and checks that
// each field sits at 8 * its index here.
import { packArgs, type ArgField } from "../../runtime/native.ts";

export const ARG_LAYOUTS = {
  ZvProbeArgs: ["q", "k", "probes", "colmass", "visible", "params", "n", "m", "Hq", "Hkv", "d", "per_kv_head", "scale"],
  ZvSelectArgs: ["colmass", "visible", "norm_scores", "count", "order", "params", "n", "S", "mode", "amount", "normalizer", "pool_kind", "pool_size", "keep_first", "keep_last"],
  ZvSparseArgs: ["q", "k", "v", "o", "k_cache", "v_cache", "count", "order", "params", "n", "Hq", "Hkv", "d", "per_kv_head", "scale"],
  ZvDecodeArgs: ["q", "k_cache", "v_cache", "o", "part_o", "part_ml", "length", "params", "capacity", "Hq", "Hkv", "d", "splits", "scale", "counters"],
} as const;

export type ArgStruct = keyof typeof ARG_LAYOUTS;
export type ArgValues<S extends ArgStruct> = Record<(typeof ARG_LAYOUTS)[S][number], ArgField>;

/** Packs a kernel's argument block by field name (no positional mix-ups between host and device). */
export function packStruct<S extends ArgStruct>(struct: S, values: ArgValues<S>): ArrayBuffer {
  return packArgs(ARG_LAYOUTS[struct].map((f) => (values as Record<string, ArgField>)[f]!));
}
