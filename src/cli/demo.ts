// `zipvl demo`: writes a small random LLaVA-Next checkpoint and a test image, then answers one prompt with dense
// attention and with ZipVL on the best backend present, and prints the kept ratios and the timings side by side.
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { PNG } from "pngjs";
import { fail } from "../diagnostics/diagnostic.ts";
import { writeRandomLlavaNext, type WriteOptions } from "../model/hf/index.ts";
import { buildPrompt, formatReport, loadModel, loadPolicy, reportJson, runPrompt, ZIPVL_PROGRAM } from "../model/session.ts";
import { opsFor, parseNumber, parseParamList, progress, type Out } from "./run.ts";

export const DEMO_USAGE = `usage: zipvl demo [--out DIR] [--size tiny|small|medium] [--backend auto|cpu|cuda|webgpu] [--dtype f32|f16|bf16] [--weights-dtype f32|f16|bf16] [--tau T] [--param NAME=VALUE]...
                  [--max-new-tokens N] [--prompt TEXT] [--json]`;

/** Demo checkpoints (tiny: the tests). Text head dim 64 (the fused CUDA kernels take 64, 80, 96, 128, 256). small: ~200 prompt tokens
 *  (112 px tiles of 14 px patches, anyres 1x2), seconds on a CPU. medium: ~2k prompt tokens (336 px tiles, like
 *  LLaVA-Next), 100M parameters, for a GPU. */
export const SIZES: Record<string, WriteOptions> = {
  tiny: { textHidden: 128, textHeads: 2, textKvHeads: 1, textIntermediate: 256, textLayers: 2, imageSize: 56 },
  small: { textHidden: 256, textHeads: 4, textKvHeads: 2, textIntermediate: 512, textLayers: 4, imageSize: 112 },
  medium: { textHidden: 1024, textHeads: 16, textKvHeads: 8, textIntermediate: 2816, textLayers: 8, visionHidden: 256, visionHeads: 4, visionLayers: 4, imageSize: 336 },
};

export const DEMO_PROMPT = "What is shown in this image?";

/** A deterministic non-square test picture (a sunset-like gradient with a disc), as PNG bytes. */
export function demoImage(width = 96, height = 64): Uint8Array {
  const png = new PNG({ width, height });
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      const inDisc = (x - width * 0.7) ** 2 + (y - height * 0.35) ** 2 < (height * 0.18) ** 2;
      png.data[i] = inDisc ? 250 : Math.round(40 + (200 * y) / height);
      png.data[i + 1] = inDisc ? 220 : Math.round(60 + (120 * x) / width);
      png.data[i + 2] = inDisc ? 60 : Math.round(200 - (150 * y) / height);
      png.data[i + 3] = 255;
    }
  }
  return PNG.sync.write(png);
}

export async function demoCommand(argv: readonly string[], out: Out, err: Out): Promise<number> {
  let o;
  try {
    o = parseArgs({
      args: [...argv], strict: true, allowPositionals: false,
      options: {
        out: { type: "string" }, backend: { type: "string", default: "auto" }, dtype: { type: "string" }, tau: { type: "string" },
        param: { type: "string", multiple: true, default: [] }, "max-new-tokens": { type: "string", default: "12" },
        prompt: { type: "string", default: DEMO_PROMPT }, json: { type: "boolean" }, size: { type: "string", default: "small" },
        "weights-dtype": { type: "string", default: "f32" },
      },
    }).values;
  } catch (e) {
    return fail("ZV5001", [`${(e as Error).message}\n${DEMO_USAGE}`]);
  }
  const maxNewTokens = parseNumber("max-new-tokens", o["max-new-tokens"], (x) => Number.isInteger(x) && x >= 0, "a non-negative integer")!;
  const params = parseParamList(o.param ?? []);
  const tau = parseNumber("tau", o.tau, (x) => x > 0 && x <= 1, "in (0, 1]");
  if (tau !== undefined) params.tau = tau;
  const policy = loadPolicy(ZIPVL_PROGRAM, params);
  const dir = o.out ?? mkdtempSync(join(tmpdir(), "zipvl-demo-"));
  mkdirSync(dir, { recursive: true });
  const size = SIZES[o.size!] ?? fail("ZV5001", [`--size takes ${Object.keys(SIZES).join(" or ")}, got '${o.size}'`]);
  const wd = o["weights-dtype"]!;
  if (!["f32", "f16", "bf16"].includes(wd)) fail("ZV5001", [`--weights-dtype takes f32, f16 or bf16, got '${wd}'`]);
  writeRandomLlavaNext(dir, { seed: 0, ...size, dtype: wd as "f32" | "f16" | "bf16" });
  const imagePath = join(dir, "demo.png");
  writeFileSync(imagePath, demoImage());
  err(`wrote a random LLaVA-Next checkpoint and ${imagePath} to ${dir}`);
  const ops = await opsFor(o.backend!, o.dtype, err);
  try {
    const bar = progress(err, "loading weights");
    const m = loadModel(ops, dir, bar.tick);
    bar.end(m.loadMs);
    const prompt = buildPrompt(m.cfg, dir, m.tok, o.prompt!, imagePath);
    const dense = runPrompt(m, prompt, { maxNewTokens }, ops.name);
    const zip = runPrompt(m, prompt, { policy, maxNewTokens }, ops.name);
    m.model.dispose();
    if (o.json) {
      out(JSON.stringify({ dir, prompt: o.prompt, dense: reportJson(dense), zipvl: reportJson(zip) }, null, 2));
      return 0;
    }
    out(`prompt: ${o.prompt} (${prompt.ids.length} tokens, ${prompt.ids.filter((id) => id === m.cfg.imageTokenIndex).length} of them image tokens)`);
    out(`dense answer: ${JSON.stringify(dense.answer)}`);
    out(`zipvl answer: ${JSON.stringify(zip.answer)}`);
    for (const r of [dense, zip]) for (const line of formatReport(r)) out(line);
    const speed = (a: number, b: number): string => (b > 0 ? `${(a / b).toFixed(2)}x` : "n/a");
    const tps = (r: typeof dense): number => (r.result.decodeSteps > 0 ? r.result.decodeSteps / r.result.decodeMs : 0);
    out(`zipvl vs dense: prefill speed-up ${speed(dense.result.prefillMs, zip.result.prefillMs)}, decode rate ${speed(tps(zip), tps(dense))}` +
      (ops.name === "cpu" ? " (cpu: ZipVL layers run on the float64 reference interpreter, so cpu timings are not a speed claim)" : ""));
    return 0;
  } finally {
    ops.dispose();
  }
}
