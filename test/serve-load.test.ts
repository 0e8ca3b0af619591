// `zipvl serve` end to end on the cpu backend with a tiny random LLaVA-Next checkpoint (writeRandomLlavaNext):
// concurrent requests (different prompts, with and without images, data: URLs and file paths, JSON and SSE) are
// batched, and every answer equals the answer of the same request served alone (greedy decoding), which also
// equals the model's own generate() (src/model/llava.ts, per-sequence caches, no pool). Then the rejections.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PNG } from "pngjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeRandomLlavaNext } from "../src/model/hf/index.ts";
import { createOps, loadModel, loadPolicy, ZIPVL_PROGRAM } from "../src/model/session.ts";
import { parseChatRequest } from "../src/serve/request.ts";
import { startServer, type RunningServer } from "../src/serve/server.ts";

const dir = mkdtempSync(join(tmpdir(), "zipvl-serve-"));
const model = join(dir, "tiny-llava-next");

function png(w: number, h: number, seed: number): Buffer {
  const p = new PNG({ width: w, height: h });
  for (let i = 0; i < w * h * 4; i++) p.data[i] = i % 4 === 3 ? 255 : (i * 37 + seed * 101) % 256;
  return PNG.sync.write(p);
}

interface Req {
  readonly body: Record<string, unknown>;
}

function requests(imgPath: string): Req[] {
  const dataUrl = `data:image/png;base64,${png(40, 30, 1).toString("base64")}`;
  const text = (t: string) => ({ role: "user", content: t });
  return [
    { body: { messages: [text("What is in the picture?")], max_tokens: 6 } },
    { body: { messages: [{ role: "system", content: "Be brief." }, text("Count to five, slowly and carefully.")], max_tokens: 9 } },
    { body: { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: dataUrl } }, { type: "text", text: "Describe it." }] }], max_tokens: 5 } },
    { body: { messages: [text("a")], max_tokens: 12, stream: true } },
    { body: { messages: [{ role: "user", content: [{ type: "image", path: imgPath }, { type: "text", text: "And this one?" }] }], max_tokens: 7, stream: true } },
    { body: { messages: [text("The quick brown fox jumps over the lazy dog. ".repeat(6))], max_tokens: 4 } },
    { body: { messages: [text("Why is the sky blue?")], max_tokens: 10 } },
    { body: { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: `file://${imgPath}` } }, { type: "text", text: "Colors?" }] }], max_tokens: 3 } },
  ];
}

interface Answer {
  readonly status: number;
  readonly text: string;
  readonly tokens: number;
  readonly finish: string;
  readonly zipvl: { kept: number[]; kept_ratios: number[]; max_batch: number; prefill_ms: number; decode_tokens_per_s: number };
}

async function ask(port: number, body: Record<string, unknown>): Promise<Answer> {
  const r = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });
  const raw = await r.text();
  if (r.status !== 200) return { status: r.status, text: raw, tokens: 0, finish: "", zipvl: JSON.parse(raw) };
  if (!body.stream) {
    const j = JSON.parse(raw);
    return { status: 200, text: j.choices[0].message.content, tokens: j.usage.completion_tokens, finish: j.choices[0].finish_reason, zipvl: j.zipvl };
  }
  const events = raw.trim().split("\n\n").map((e) => e.replace(/^data: /, ""));
  expect(events[events.length - 1]).toBe("[DONE]");
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  const last = chunks[chunks.length - 1];
  return { status: 200, text: chunks.map((c) => c.choices[0].delta.content ?? "").join(""), tokens: last.usage.completion_tokens, finish: last.choices[0].finish_reason, zipvl: last.zipvl };
}

let server: RunningServer & { port: number };
let imgPath: string;

beforeAll(async () => {
  writeRandomLlavaNext(model, { seed: 5 });
  imgPath = join(dir, "img.png");
  writeFileSync(imgPath, png(24, 48, 2));
  const ops = await createOps("cpu");
  server = await startServer({ model, ops, policy: loadPolicy(ZIPVL_PROGRAM), maxBatch: 6, maxQueue: 16, timeoutMs: 60_000, memoryBytes: 64 << 20, maxBodyBytes: 1 << 20 }, { port: 0 });
});
afterAll(async () => {
  await server?.close();
});

describe("zipvl serve under load (cpu, tiny random LLaVA-Next, ZipVL)", () => {
  it("concurrent answers equal batch-1 answers and the model's own generate()", async () => {
    const reqs = requests(imgPath);
    const together = await Promise.all(reqs.map((r) => ask(server.port, r.body)));
    const alone: Answer[] = [];
    for (const r of reqs) alone.push(await ask(server.port, r.body));
    for (let i = 0; i < reqs.length; i++) {
      expect(together[i]!.status, together[i]!.text).toBe(200);
      expect(together[i]!.text, `request ${i}`).toBe(alone[i]!.text);
      expect(together[i]!.tokens).toBe(alone[i]!.tokens);
      expect(together[i]!.zipvl.kept).toEqual(alone[i]!.zipvl.kept);
      expect(alone[i]!.zipvl.max_batch).toBe(1);
    }
    // The concurrent run really was batched.
    expect(Math.max(...together.map((a) => a.zipvl.max_batch))).toBeGreaterThan(1);
    expect(server.scheduler.stats.maxBatch).toBeGreaterThan(1);
    // ZipVL pruned: some request kept fewer tokens than its prompt in some layer. The pool is empty again.
    expect(together.some((a) => a.zipvl.kept_ratios.some((r) => r < 1))).toBe(true);
    expect(server.engine.pool.usedPages).toBe(0);

    // The same requests through the model's generate() (no pool, no batching): same tokens.
    const ops = await createOps("cpu");
    const m = loadModel(ops, model);
    for (const i of [0, 2, 6]) {
      const prep = server.engine.prepare(parseChatRequest(reqs[i]!.body, { maxTokens: 16 }).messages);
      const g = m.model.generate(prep.ids, prep.image, { policy: loadPolicy(ZIPVL_PROGRAM), maxNewTokens: reqs[i]!.body.max_tokens as number });
      expect(server.engine.detokenize(g.tokens.filter((t) => !server.engine.eos.includes(t))), `generate() for request ${i}`).toBe(alone[i]!.text);
    }
    m.model.dispose();
    ops.dispose();
  });

  it("rejections: bad image, too-long prompt, oversized body, malformed JSON; the server keeps serving", async () => {
    const bad = await ask(server.port, { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: `data:image/png;base64,${Buffer.from("not a png").toString("base64")}` } }] }] });
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.text).error.code).toBe("ZV7022");
    const missing = await ask(server.port, { messages: [{ role: "user", content: [{ type: "image", path: join(dir, "nope.png") }] }] });
    expect([missing.status, JSON.parse(missing.text).error.code]).toEqual([400, "ZV7022"]);
    const long = await ask(server.port, { messages: [{ role: "user", content: "word ".repeat(5000) }] });
    expect(long.status).toBe(400);
    expect(JSON.parse(long.text).error.code).toMatch(/ZV701[12]/);
    const huge = await fetch(`http://127.0.0.1:${server.port}/v1/chat/completions`, { method: "POST", body: "x".repeat(2 << 20) });
    expect(huge.status).toBe(413);
    const ok = await ask(server.port, { messages: [{ role: "user", content: "still there?" }], max_tokens: 2 });
    expect(ok.status).toBe(200);
  });
});

describe("zipvl serve command", () => {
  it("coded errors for bad options; starts, answers, and exits 0 on SIGTERM after finishing its request", async () => {
    const { main } = await import("../src/cli/main.ts");
    const errs: string[] = [];
    expect(await main(["serve"], () => {}, (s) => errs.push(s))).toBe(1);
    expect(errs.join("\n")).toMatch(/error ZV7041: zipvl serve: --model DIR is required/);
    expect(await main(["serve", "--model", model, "--max-batch", "0"], () => {}, (s) => errs.push(s))).toBe(1);
    expect(errs.join("\n")).toMatch(/ZV7041.*--max-batch must be an integer >= 1/);
    expect(await main(["serve", "--model", model, "--memory", "lots"], () => {}, (s) => errs.push(s))).toBe(1);
    expect(errs.join("\n")).not.toMatch(/internal error/);

    const child = spawn(process.execPath, ["bin/zipvl.js", "serve", "--model", model, "--port", "0", "--memory", "64M", "--max-tokens", "3"], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout.on("data", (c: Buffer) => {
        out += c.toString();
        const m = /http:\/\/127\.0\.0\.1:(\d+)\//.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.on("exit", (code) => reject(new Error(`exited ${code}: ${err}`)));
    });
    const pending = ask(port, { messages: [{ role: "user", content: "hi" }], max_tokens: 200 });
    // SIGTERM once the request runs: it must still be answered in full.
    for (;;) {
      const h = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as { running: number };
      if (h.running > 0) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill("SIGTERM");
    const a = await pending;
    expect(a.status).toBe(200);
    expect(a.finish === "stop" || a.tokens === 200).toBe(true); // answered in full, not cut off
    const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
    expect(code).toBe(0);
    expect(err).toMatch(/SIGTERM: finishing running requests/);
  });
});
