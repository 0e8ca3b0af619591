// `--param NAME=VALUE` lists, shared by every command that binds program parameters.
import { fail } from "../diagnostics/diagnostic.ts";

export function parseParamList(list: readonly string[]): Record<string, number> {
  const params: Record<string, number> = {};
  for (const kv of list) {
    const m = /^([A-Za-z_]\w*)=(.*)$/.exec(kv);
    if (!m) fail("ZV5001", [`--param takes NAME=VALUE, got '${kv}'`]);
    const v = Number(m![2]);
    if (m![2]!.trim() === "" || !Number.isFinite(v)) fail("ZV1208", [m![1]!, m![2]!]);
    params[m![1]!] = v;
  }
  return params;
}
