// The serving layer without the model: memory planning and request checks, the scheduler (join/leave between
// steps, per-sequence positions, timeouts, cancellation, bounded queue, pool exhaustion), request parsing, and the
// HTTP server's status codes, on a small deterministic fake engine over a real host page pool.
import { describe, expect, it } from "vitest";
import type { ServeMessage } from "../src/serve/engine.ts";
import { ServeError } from "../src/serve/errors.ts";
import { createServeApp, type ChatEngine } from "../src/serve/http.ts";
import { checkRequest, expectedPages, planMemory, prefillActivationBytes, sequencesThatFit, type ModelShape } from "../src/serve/planner.ts";
import { createHostPool } from "../src/serve/pool.ts";
import { parseChatRequest } from "../src/serve/request.ts";
import { Scheduler, type Completion } from "../src/serve/scheduler.ts";
import { DecodeAhead } from "../src/serve/ahead.ts";
import type { DecodeRow, GreedySteps, StepTicket } from "../src/serve/step.ts";

const SHAPE_13B: ModelShape = { layers: 40, hidden: 5120, intermediate: 13824, heads: 40, kvHeads: 40, headDim: 128, vocab: 32064, maxPositions: 131072 };

describe("memory planner", () => {
  it("splits free memory into the prefill reserve and whole pages; 13B-shaped numbers", () => {
    // An H200 after 26 GiB of bf16 13B weights: ~100 GiB free.
    const plan = planMemory(SHAPE_13B, { freeBytes: 100 * 2 ** 30, elemBytes: 2, pageTokens: 16, layout: "per-layer", keptRatio: 0.367, sparse: true, maxBatch: 64, maxPromptTokens: 131072 });
    expect(plan.kvBytesPerToken).toBe(2 * 40 * 40 * 128 * 2); // 800 KiB per token for 13B MHA in bf16
    expect(plan.pageBytes).toBe(2 * 40 * 16 * 128 * 2);
    // The prefill reserve (hand formula without calibration) plus a full batch's decode step.
    expect(plan.activationBytes).toBe(prefillActivationBytes(SHAPE_13B, 131072, 2) + 64 * (4 * 32064 + 8 * (5120 + 13824) * 2));
    expect(plan.poolBytes + plan.activationBytes).toBeLessThanOrEqual(100 * 2 ** 30 * 0.95);
    expect(plan.poolBytes).toBe(plan.numPages * plan.pageBytes);
    // A 128k prompt is accepted: layer-by-layer activations fit, and its pruned cache fits the pool...
    checkRequest(plan, 131072 - 16, 16);
    // ...while dense serving of the same prompt would not (128k * 800 KiB = 100 GiB of KV).
    const dense = planMemory(SHAPE_13B, { ...plan.options, keptRatio: 1, sparse: false });
    expect(() => checkRequest(dense, 131072 - 16, 16)).toThrow(/ZV7011.*dense KV cache/);
    expect(sequencesThatFit(plan, 2900, 64)).toBeGreaterThan(sequencesThatFit(dense, 2900, 64));
  });

  it("rejects impossible requests with coded errors before any work", () => {
    const plan = planMemory(SHAPE_13B, { freeBytes: 8 * 2 ** 30, elemBytes: 2, pageTokens: 16, layout: "per-layer", keptRatio: 0.4, sparse: true, maxBatch: 8, maxPromptTokens: 16000 });
    expect(() => checkRequest(plan, 20000, 16)).toThrow(/ZV7011.*layer by layer/);
    expect(() => checkRequest(plan, 0, 16)).toThrow(/ZV7011/);
    expect(() => checkRequest(plan, 131000, 1000)).toThrow(/ZV7012/);
    expect(() => planMemory(SHAPE_13B, { ...plan.options, freeBytes: 2 ** 20 })).toThrow(/ZV7010/);
    expect(() => planMemory(SHAPE_13B, { ...plan.options, keptRatio: 0 })).toThrow(/ZV7010/);
    try {
      checkRequest(plan, 20000, 16);
    } catch (e) {
      expect((e as ServeError).status).toBe(400);
    }
  });
});

// ------------------------------------------------------------------------------------------ fake engine

interface FakePrep {
  readonly ids: Int32Array;
}

/** next token = f(previous token, position); each layer keeps every other prompt token. */
function fakeEngine(o: { numPages: number; stepMs?: number; layers?: number }): ChatEngine<FakePrep> & { log: { seq: string; position: number }[][] } {
  const layers = o.layers ?? 2;
  const pool = createHostPool({ layers, kvHeads: 1, headDim: 4, pageTokens: 4, layout: "per-layer", numPages: o.numPages });
  const plan = planMemory({ layers, hidden: 8, intermediate: 8, heads: 1, kvHeads: 1, headDim: 4, vocab: 64, maxPositions: 4096 }, {
    freeBytes: 1 << 20, elemBytes: 4, pageTokens: 4, layout: "per-layer", keptRatio: 0.25, sparse: true, maxBatch: 8, maxPromptTokens: 512,
  });
  const next = (tok: number, pos: number): number => ((tok * 31 + pos * 7) % 60) + 3;
  const busy = (ms: number): void => {
    const end = performance.now() + ms;
    while (performance.now() < end);
  };
  const log: { seq: string; position: number }[][] = [];
  return {
    modelId: "fake", eos: [2], log,
    plan: { ...plan, numPages: o.numPages, poolBytes: o.numPages * plan.pageBytes },
    pool,
    prepare(messages: readonly ServeMessage[]) {
      const text = messages.map((m) => m.content.map((c) => (c.type === "text" ? c.text : "#")).join("")).join("\n");
      return { ids: Int32Array.from(text, (c) => c.charCodeAt(0) % 64) };
    },
    detokenize: (ids) => ids.map((i) => String.fromCharCode(97 + (i % 26))).join(""),
    prefill(seq, p) {
      const kept = Math.ceil(p.ids.length / 2);
      for (let l = 0; l < layers; l++) pool.append(seq, l, new Float32Array(kept * 4), new Float32Array(kept * 4), kept);
      return { first: next(p.ids[p.ids.length - 1]!, p.ids.length - 1), layers: Array.from({ length: layers }, (_, l) => ({ layer: l, kept, n: p.ids.length })) };
    },
    decode(batch) {
      log.push(batch.map((b) => ({ seq: b.seq, position: b.position })));
      busy(o.stepMs ?? 0);
      for (let l = 0; l < layers; l++) for (const b of batch) pool.append(b.seq, l, new Float32Array(4), new Float32Array(4), 1);
      return batch.map((b) => next(b.token, b.position));
    },
  };
}

/** The answer the fake model gives alone (greedy): the chain of next(). */
function alone(ids: Int32Array, maxTokens: number): number[] {
  const out = [((ids[ids.length - 1]! * 31 + (ids.length - 1) * 7) % 60) + 3];
  while (out.length < maxTokens) out.push(((out[out.length - 1]! * 31 + (ids.length + out.length - 1) * 7) % 60) + 3);
  return out;
}

describe("scheduler", () => {
  it("sequences join and leave between steps; each decodes at its own original position", async () => {
    const eng = fakeEngine({ numPages: 400 });
    const s = new Scheduler(eng, { maxBatch: 3, maxQueue: 10 });
    const reqs = [5, 9, 2, 7, 4].map((maxTokens, i) => ({ ids: Int32Array.from({ length: 10 + 3 * i }, (_, j) => (j * (i + 1)) % 50), maxTokens }));
    const done = reqs.map((r) => s.submit({ ids: r.ids }, { promptTokens: r.ids.length, maxTokens: r.maxTokens, stop: [], timeoutMs: 10_000 }).done);
    const res: Completion[] = await Promise.all(done);
    res.forEach((c, i) => expect(c.tokens).toEqual(alone(reqs[i]!.ids, reqs[i]!.maxTokens)));
    expect(Math.max(...eng.log.map((b) => b.length))).toBe(3); // batched up to maxBatch
    expect(new Set(eng.log.map((b) => b.length)).size).toBeGreaterThan(1); // ...and the batch changed between steps
    // Positions: prompt length + tokens generated before the fed token.
    for (const step of eng.log) for (const b of step) expect(b.position).toBeGreaterThanOrEqual(10);
    expect(res[1]!.layers[0]).toEqual({ layer: 0, kept: 7, n: 13 });
    expect(eng.pool.usedPages).toBe(0); // every page came back
    expect(eng.pool.availablePages).toBe(400);
  });

  it("with a step kept in flight (DecodeAhead) the answers equal one step at a time and every page comes back", async () => {
    // The fake's greedy steps append a cache row per sequence and layer when launched (as the device step does), also
    // for a step decoded ahead whose sequence then finishes; the scheduler passes its ahead hint.
    const eng = fakeEngine({ numPages: 400, stepMs: 1 });
    const layers = 2;
    let onDevice: { seqs: string; ids: number[] } | null = null;
    const out = new Map<StepTicket, Int32Array>();
    const steps: GreedySteps = {
      deviceIds: true,
      launch(batch: readonly DecodeRow[], fromDevice: boolean) {
        const seqs = batch.map((r) => r.seq).join();
        if (fromDevice && onDevice?.seqs !== seqs) throw new Error("device ids of other rows");
        for (let l = 0; l < layers; l++) for (const r of batch) eng.pool.append(r.seq, l, new Float32Array(4), new Float32Array(4), 1);
        const ids = batch.map((r, i) => ((((fromDevice ? onDevice!.ids[i]! : r.token) * 31 + r.position * 7) % 60) + 3));
        onDevice = { seqs, ids };
        const t = { seqs: batch.map((r) => r.seq) };
        out.set(t, Int32Array.from(ids));
        return t;
      },
      collect: (t) => out.get(t)!,
    };
    const ahead = new DecodeAhead(steps, (seq) => eng.pool.has(seq));
    const hints: boolean[] = [];
    eng.decode = (batch, opts) => {
      hints.push(opts?.ahead === true);
      return ahead.decode(batch, opts?.ahead === true);
    };
    const s = new Scheduler(eng, { maxBatch: 3, maxQueue: 10 });
    const reqs = [5, 9, 2, 7, 4, 12].map((maxTokens, i) => ({ ids: Int32Array.from({ length: 10 + 3 * i }, (_, j) => (j * (i + 2)) % 50), maxTokens }));
    const res: Completion[] = await Promise.all(reqs.map((r) => s.submit({ ids: r.ids }, { promptTokens: r.ids.length, maxTokens: r.maxTokens, stop: [], timeoutMs: 10_000 }).done));
    res.forEach((c, i) => expect(c.tokens).toEqual(alone(reqs[i]!.ids, reqs[i]!.maxTokens)));
    expect(hints.some((h) => h) && hints.some((h) => !h)).toBe(true);
    expect(ahead.stats.served).toBeGreaterThan(0);
    expect(eng.pool.usedPages).toBe(0);
    await s.close();
  });

  it("bounded queue (ZV7024), timeouts while queued (ZV7025, 408) and while generating (ZV7026, 504), cancellation", async () => {
    const eng = fakeEngine({ numPages: 400, stepMs: 5 });
    const s = new Scheduler(eng, { maxBatch: 1, maxQueue: 2 });
    const ids = Int32Array.from({ length: 12 }, (_, i) => i);
    const long = s.submit({ ids }, { promptTokens: 12, maxTokens: 400, stop: [], timeoutMs: 60 });
    const queued = s.submit({ ids }, { promptTokens: 12, maxTokens: 4, stop: [], timeoutMs: 30 });
    expect(() => s.submit({ ids }, { promptTokens: 12, maxTokens: 4, stop: [], timeoutMs: 1000 })).toThrow(/ZV7024/);
    await expect(queued.done).rejects.toMatchObject({ code: "ZV7025", status: 408 });
    await expect(long.done).rejects.toMatchObject({ code: "ZV7026", status: 504 });
    const c = s.submit({ ids }, { promptTokens: 12, maxTokens: 400, stop: [], timeoutMs: 10_000 });
    setTimeout(() => c.cancel("test"), 20);
    await expect(c.done).rejects.toMatchObject({ code: "ZV7027" });
    expect(eng.pool.usedPages).toBe(0);
    await s.close();
    expect(() => s.submit({ ids }, { promptTokens: 12, maxTokens: 4, stop: [], timeoutMs: 100 })).toThrow(/ZV7028/);
  });

  it("waits for pages when the pool is short, and fails a prompt that cannot fit even alone", async () => {
    // 2 layers, 4-token pages: a 40-token prompt keeps 20 tokens = 5 pages per layer; 10 new tokens take up to 3 more.
    const eng = fakeEngine({ numPages: 18 });
    const s = new Scheduler(eng, { maxBatch: 4, maxQueue: 10 });
    const ids = Int32Array.from({ length: 40 }, (_, i) => i % 50);
    const runs = [0, 1, 2].map(() => s.submit({ ids }, { promptTokens: 40, maxTokens: 10, stop: [], timeoutMs: 10_000 }).done);
    const res = await Promise.all(runs);
    for (const r of res) expect(r.tokens).toEqual(alone(ids, 10));
    expect(Math.max(...eng.log.map((b) => b.length))).toBe(1); // never two at once: the pool holds one
    // The planner expects 25% kept (fits); the engine keeps 50%, which cannot fit even alone.
    const big = Int32Array.from({ length: 80 }, (_, i) => i % 50);
    await expect(s.submit({ ids: big }, { promptTokens: 80, maxTokens: 2, stop: [], timeoutMs: 10_000 }).done).rejects.toMatchObject({ code: "ZV7011" });
    expect(eng.pool.usedPages).toBe(0);
  });
});

describe("chat request parsing", () => {
  const parse = (b: unknown) => parseChatRequest(b, { maxTokens: 16 });
  it("text, image_url (data: and file:), image path parts", () => {
    const png = Buffer.from([137, 80, 78, 71]).toString("base64");
    const r = parse({ messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: `data:image/png;base64,${png}` } }, { type: "image", path: "/x.png" }, { type: "text", text: "hi" }] }], max_tokens: 3, stream: true });
    expect(r.maxTokens).toBe(3);
    expect(r.stream).toBe(true);
    const c = r.messages[0]!.content;
    expect(c[0]).toMatchObject({ type: "image", where: [0, 0] });
    expect(Array.from(c[0]!.type === "image" ? (c[0]!.image as Uint8Array) : [])).toEqual([137, 80, 78, 71]);
    expect(parse({ messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "file:///tmp/a.png" } }] }] }).messages[0]!.content[0]).toMatchObject({ image: "/tmp/a.png" });
    expect(parse({ messages: [{ role: "system", content: "s" }] }).maxTokens).toBe(16);
  });
  it("coded 400s naming the field", () => {
    const bad: [unknown, RegExp][] = [
      [[], /ZV7021.*JSON object/],
      [{}, /ZV7021.*'messages'/],
      [{ messages: [{ role: "robot", content: "x" }] }, /ZV7021.*messages\[0\]\.role/],
      [{ messages: [{ role: "user", content: [{ type: "audio" }] }] }, /ZV7021.*messages\[0\]\.content\[0\]\.type/],
      [{ messages: [{ role: "user", content: "x" }], max_tokens: 0 }, /ZV7021.*max_tokens/],
      [{ messages: [{ role: "user", content: "x" }], temperature: 0.7 }, /ZV7021.*greedily/],
      [{ messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "https://e.com/a.png" } }] }] }, /ZV7022.*messages\[0\]\.content\[0\].*fetches nothing/],
      [{ messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "data:image/png;base64,@@@" } }] }] }, /ZV7022.*base64/],
    ];
    for (const [b, re] of bad) expect(() => parse(b)).toThrow(re);
  });
});

// ------------------------------------------------------------------------------------------ HTTP on the fake

async function post(port: number, body: string | object, headers: Record<string, string> = {}): Promise<{ status: number; json: any; text: string }> {
  const r = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body), headers: { "content-type": "application/json", ...headers } });
  const text = await r.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, json, text };
}

describe("HTTP server (fake engine)", () => {
  it("JSON and SSE answers; 400/404/413/429 with coded bodies; graceful close (503 for the queued)", async () => {
    const eng = fakeEngine({ numPages: 400, stepMs: 4 });
    const s = new Scheduler(eng, { maxBatch: 1, maxQueue: 1 });
    const app = createServeApp(eng, s, { maxBodyBytes: 4096, timeoutMs: 10_000, defaultMaxTokens: 5 });
    const { port } = await app.listen(0);
    const msg = { messages: [{ role: "user", content: "hello" }] };
    const a = await post(port, msg);
    expect(a.status).toBe(200);
    expect(a.json.object).toBe("chat.completion");
    expect(a.json.usage).toEqual({ prompt_tokens: 5, completion_tokens: 5, total_tokens: 10 });
    expect(a.json.zipvl.kept_ratios).toEqual([0.6, 0.6]);
    const st = await post(port, { ...msg, stream: true });
    const events = st.text.trim().split("\n\n").map((e) => e.replace(/^data: /, ""));
    expect(events[events.length - 1]).toBe("[DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    expect(chunks.every((c) => c.object === "chat.completion.chunk")).toBe(true);
    expect(chunks.map((c) => c.choices[0].delta.content ?? "").join("")).toBe(a.json.choices[0].message.content);
    expect(chunks[chunks.length - 1].zipvl.prefill_ms).toBeGreaterThanOrEqual(0);
    expect((await post(port, "{nope")).json.error.code).toBe("ZV7020");
    expect((await post(port, { messages: [] })).status).toBe(400);
    expect((await post(port, { ...msg, model: "other" })).json.error.code).toBe("ZV7030");
    const big = await post(port, { ...msg, pad: "x".repeat(5000) });
    expect([big.status, big.json.error.code]).toEqual([413, "ZV7023"]);
    const nf = await fetch(`http://127.0.0.1:${port}/v2/x`);
    expect(nf.status).toBe(404);
    // A client that disconnects cancels its request (its pages come back).
    const ac = new AbortController();
    const gone = fetch(`http://127.0.0.1:${port}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ ...msg, max_tokens: 500, stream: true }), signal: ac.signal }).then((r) => r.text()).catch(() => "aborted");
    while (s.running === 0) await new Promise((r) => setTimeout(r, 2));
    ac.abort();
    expect(await gone).toBe("aborted");
    const t0 = performance.now();
    while (s.running > 0) await new Promise((r) => setTimeout(r, 2));
    expect(performance.now() - t0).toBeLessThan(1000); // cancelled, not run to its 500 tokens (>= 2 s of steps)
    expect(eng.pool.usedPages).toBe(0);
    // 429: one running (long), one queued, the third is turned away.
    const long = post(port, { ...msg, max_tokens: 200 });
    while (s.running === 0) await new Promise((r) => setTimeout(r, 2));
    const queued = post(port, { ...msg, max_tokens: 2 });
    while (s.queued === 0) await new Promise((r) => setTimeout(r, 2));
    const full = await post(port, msg);
    expect([full.status, full.json.error.code]).toEqual([429, "ZV7024"]);
    const health = await (await fetch(`http://127.0.0.1:${port}/health`)).json();
    expect(health).toMatchObject({ status: "ok", running: 1, queued: 1 });
    // Graceful close: the queued request gets 503, the running one finishes.
    const closed = app.close();
    const [l, q] = await Promise.all([long, queued]);
    await closed;
    expect(l.status).toBe(200);
    expect(l.json.usage.completion_tokens).toBe(200);
    expect([q.status, q.json.error.code]).toEqual([503, "ZV7028"]);
    expect(eng.pool.usedPages).toBe(0);
  });
});
