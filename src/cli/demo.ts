// `zipvl demo`: writes a small random LLaVA-Next checkpoint and a test image, then answers one prompt with dense
// attention and with ZipVL on the best backend present, and prints the kept ratios and the timings side by side.
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { PNG } from "pngjs";
import { fail } from "../diagnostics/diagnostic.ts";
import { writeRandomLlavaNext } from "../model/hf/index.ts";
import { buildPrompt, formatReport, loadModel, loadPolicy, reportJson, runPrompt, ZIPVL_PROGRAM } from "../model/session.ts";
import { opsFor, parseNumber, parseParamList, progress, type Out } from "./run.ts";

export const DEMO_USAGE = `usage: zipvl demo [--out DIR] [--backend auto|cpu|cuda|webgpu] [--tau T] [--param NAME=VALUE]...
                  [--max-new-tokens N] [--prompt TEXT] [--json]`;

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
        out: { type: "string" }, backend: { type: "string", default: "auto" }, tau: { type: "string" },
        param: { type: "string", multiple: true, default: [] }, "max-new-tokens": { type: "string", default: "12" },
        prompt: { type: "string", default: DEMO_PROMPT }, json: { type: "boolean" },
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
  // Big enough for a few hundred prompt tokens (image 112 px in 14 px patches, anyres 1x2) and still seconds on a CPU.
  writeRandomLlavaNext(dir, { seed: 0, textLayers: 4, imageSize: 112 });
  const imagePath = join(dir, "demo.png");
  writeFileSync(imagePath, demoImage());
  err(`wrote a random LLaVA-Next checkpoint and ${imagePath} to ${dir}`);
  const ops = await opsFor(o.backend!);
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
    out(`zipvl vs dense: prefill ${speed(dense.result.prefillMs, zip.result.prefillMs)} faster, decode ${speed(tps(zip), tps(dense))} the rate` +
      (ops.name === "cpu" ? " (cpu: ZipVL layers run on the float64 reference interpreter, so cpu timings are not a speed claim)" : ""));
    return 0;
  } finally {
    ops.dispose();
  }
}
