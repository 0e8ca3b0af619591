// `zipvl parity`: our model (dense and ZipVL) against transformers' logits and greedy tokens for one checkpoint.
import { parseArgs } from "node:util";
import { fail } from "../diagnostics/diagnostic.ts";
import { compareToRef, formatParity, readParityRef } from "../model/parity.ts";
import { buildPrompt, loadModel } from "../model/session.ts";
import { opsFor, parseNumber, policyFromFlags, progress, type Out } from "./run.ts";

export const PARITY_USAGE = `usage: zipvl parity --model DIR --ref REF.safetensors --ref-json REF.json [--image IMG --prompt TEXT]
                    [--tau T] [--policy FILE] [--param NAME=VALUE]... [--backend auto|cpu|cuda|webgpu] [--dtype f32|f16|bf16] [--tol REL] [--json]`;

export async function parityCommand(argv: readonly string[], out: Out, err: Out): Promise<number> {
  let o;
  try {
    o = parseArgs({
      args: [...argv], strict: true, allowPositionals: false,
      options: {
        model: { type: "string" }, ref: { type: "string" }, "ref-json": { type: "string" }, image: { type: "string" },
        prompt: { type: "string" }, tau: { type: "string" }, policy: { type: "string" },
        param: { type: "string", multiple: true, default: [] }, backend: { type: "string", default: "auto" }, dtype: { type: "string" },
        tol: { type: "string" }, json: { type: "boolean" },
      },
    }).values;
  } catch (e) {
    return fail("ZV5001", [`${(e as Error).message}\n${PARITY_USAGE}`]);
  }
  const dir = o.model ?? fail("ZV5001", [`'zipvl parity' needs --model DIR\n${PARITY_USAGE}`]);
  const refFile = o.ref ?? fail("ZV5001", [`'zipvl parity' needs --ref REF.safetensors\n${PARITY_USAGE}`]);
  const refJson = o["ref-json"] ?? fail("ZV5001", [`'zipvl parity' needs --ref-json REF.json\n${PARITY_USAGE}`]);
  const tol = parseNumber("tol", o.tol, (x) => x > 0, "a positive number");
  const policy = policyFromFlags({ param: o.param ?? [], ...(o.tau !== undefined ? { tau: o.tau } : {}), ...(o.policy !== undefined ? { policy: o.policy } : {}) });
  const ops = await opsFor(o.backend!, o.dtype, err);
  try {
    const bar = progress(err, "loading weights");
    const m = loadModel(ops, dir, bar.tick);
    bar.end(m.loadMs);
    const ref = readParityRef(m.cfg, refFile, refJson);
    const lines: string[] = [];
    let promptMatch: boolean | null = null;
    let pixelMaxAbs: number | null = null;
    if (o.prompt !== undefined) {
      const ours = buildPrompt(m.cfg, dir, m.tok, o.prompt, o.image);
      promptMatch = ours.ids.length === ref.ids.length && ours.ids.every((x, i) => x === ref.ids[i]);
      lines.push(`our prompt building ${promptMatch ? "reproduces" : "DIFFERS from"} the reference input_ids (${ours.ids.length} vs ${ref.ids.length} tokens)`);
      if (ours.image && ref.image) {
        const same = ours.image.shape.join() === ref.image.shape.join();
        pixelMaxAbs = same ? ours.image.pixels.reduce((m, x, i) => Math.max(m, Math.abs(x - ref.image!.pixels[i]!)), 0) : null;
        lines.push(same ? `our image preprocessing: pixel values max abs diff ${pixelMaxAbs!.toExponential(3)}` : `our image preprocessing gives [${ours.image.shape}], the reference [${ref.image.shape}]`);
      }
    }
    const dense = compareToRef(m.model, ref, "dense", undefined);
    const zip = compareToRef(m.model, ref, "zipvl", policy);
    m.model.dispose();
    const pass = tol === undefined || (dense.maxRelLast <= tol && (dense.maxRelAll ?? 0) <= tol && dense.greedyMatch === ref.greedy.length);
    if (o.json) out(JSON.stringify({ backend: ops.name, dtype: ops.dtype, refGreedy: ref.greedy, promptMatch, pixelMaxAbs, dense, zipvl: zip, tol: tol ?? null, pass }, null, 2));
    else {
      out(`parity on ${ops.name}: ${ref.ids.length} prompt tokens, ${ref.greedy.length} reference greedy tokens`);
      for (const l of lines) out(l);
      out(formatParity(dense, ref.greedy.length));
      out(formatParity(zip, ref.greedy.length) + ` (kept ${zip.kept.join(" ")})`);
      if (tol !== undefined) out(`dense within rel ${tol} and greedy equal: ${pass ? "yes" : "NO"}`);
    }
    return pass ? 0 : 1;
  } finally {
    ops.dispose();
  }
}
