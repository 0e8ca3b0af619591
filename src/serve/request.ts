// OpenAI-style chat requests: validation of the JSON body into messages with text and image parts (coded 400s
// that name the offending field), and the response objects (chat.completion, chat.completion.chunk).
import { Buffer } from "node:buffer";
import { fileURLToPath } from "node:url";
import type { ServeMessage } from "./engine.ts";
import { ServeError, serveFail } from "./errors.ts";
import type { Completion } from "./scheduler.ts";

export interface ChatRequest {
  readonly model: string | undefined;
  readonly messages: ServeMessage[];
  readonly maxTokens: number;
  readonly stream: boolean;
}

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);

export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ServeError("ZV7020", [(e as Error).message]);
  }
}

/** An image reference: data: URL bytes, a file:// URL or a plain path. */
function imageRef(url: string, where: [number, number]): Uint8Array | string {
  if (url.startsWith("data:")) {
    const m = /^data:([\w.+/-]*)(;[^,]*)?,(.*)$/s.exec(url);
    if (!m || !(m[2] ?? "").includes("base64")) serveFail("ZV7022", [where[0], where[1], "a data URL must be base64 (data:image/png;base64,...)"]);
    const b64 = m![3]!.replace(/\s+/g, "");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 === 1) serveFail("ZV7022", [where[0], where[1], "the data URL is not valid base64"]);
    const bytes = new Uint8Array(Buffer.from(b64, "base64"));
    if (bytes.length === 0) serveFail("ZV7022", [where[0], where[1], "the data URL holds no bytes"]);
    return bytes;
  }
  if (url.startsWith("file://")) {
    try {
      return fileURLToPath(url);
    } catch (e) {
      serveFail("ZV7022", [where[0], where[1], `bad file URL '${url}': ${(e as Error).message}`]);
    }
  }
  serveFail("ZV7022", [where[0], where[1], `unsupported image URL '${url.slice(0, 64)}' (use a data: URL or file:///path; the server fetches nothing)`]);
}

export function parseChatRequest(body: unknown, defaults: { maxTokens: number }): ChatRequest {
  if (!isObj(body)) serveFail("ZV7021", ["the body must be a JSON object"]);
  const b = body as Record<string, unknown>;
  if (b.model !== undefined && typeof b.model !== "string") serveFail("ZV7021", ["'model' must be a string"]);
  if (!Array.isArray(b.messages) || b.messages.length === 0) serveFail("ZV7021", ["'messages' must be a non-empty array"]);
  const maxRaw = b.max_completion_tokens ?? b.max_tokens;
  if (maxRaw !== undefined && maxRaw !== null && (!Number.isSafeInteger(maxRaw) || (maxRaw as number) < 1)) serveFail("ZV7021", [`'max_tokens' must be a positive integer, got ${JSON.stringify(maxRaw)}`]);
  if (b.stream !== undefined && typeof b.stream !== "boolean") serveFail("ZV7021", ["'stream' must be a boolean"]);
  if (b.n !== undefined && b.n !== 1) serveFail("ZV7021", ["only n = 1 is supported"]);
  if (b.temperature !== undefined && b.temperature !== 0 && b.temperature !== null) {
    // Decoding is greedy; a request for sampling must not be silently answered greedily.
    if (typeof b.temperature !== "number") serveFail("ZV7021", ["'temperature' must be a number"]);
    serveFail("ZV7021", [`temperature ${b.temperature}: this server decodes greedily (use 0 or leave it out)`]);
  }
  const messages = (b.messages as unknown[]).map((m, i): ServeMessage => {
    if (!isObj(m)) serveFail("ZV7021", [`messages[${i}] must be an object`]);
    const role = m.role;
    if (role !== "system" && role !== "user" && role !== "assistant") serveFail("ZV7021", [`messages[${i}].role must be system, user or assistant, got ${JSON.stringify(role)}`]);
    if (typeof m.content === "string") return { role, content: [{ type: "text", text: m.content }] };
    if (!Array.isArray(m.content)) serveFail("ZV7021", [`messages[${i}].content must be a string or an array of parts`]);
    const content = (m.content as unknown[]).map((p, j) => {
      if (!isObj(p)) serveFail("ZV7021", [`messages[${i}].content[${j}] must be an object`]);
      const where: [number, number] = [i, j];
      if (p.type === "text") {
        if (typeof p.text !== "string") serveFail("ZV7021", [`messages[${i}].content[${j}].text must be a string`]);
        return { type: "text" as const, text: p.text as string };
      }
      if (p.type === "image_url") {
        const iu = p.image_url;
        const url = typeof iu === "string" ? iu : isObj(iu) ? iu.url : undefined;
        if (typeof url !== "string") serveFail("ZV7021", [`messages[${i}].content[${j}].image_url.url must be a string`]);
        return { type: "image" as const, image: imageRef(url as string, where), where };
      }
      if (p.type === "image") {
        if (typeof p.path !== "string" || p.path === "") serveFail("ZV7021", [`messages[${i}].content[${j}].path must be a file path`]);
        return { type: "image" as const, image: p.path as string, where };
      }
      serveFail("ZV7021", [`messages[${i}].content[${j}].type must be text, image_url or image, got ${JSON.stringify(p.type)}`]);
    });
    return { role, content };
  });
  return { model: b.model as string | undefined, messages, maxTokens: (maxRaw as number | undefined) ?? defaults.maxTokens, stream: b.stream === true };
}

/** The `zipvl` field of every response: per-layer kept ratios, prefill time, decode rate. */
export function zipvlField(c: Completion): Record<string, unknown> {
  return {
    kept: c.layers.map((s) => s.kept),
    kept_ratios: c.layers.map((s) => Number((s.kept / s.n).toFixed(6))),
    mean_kept_ratio: c.layers.length ? Number((c.layers.reduce((a, s) => a + s.kept / s.n, 0) / c.layers.length).toFixed(6)) : 1,
    queue_ms: round(c.queueMs),
    prefill_ms: round(c.prefillMs),
    decode_ms: round(c.decodeMs),
    decode_tokens_per_s: c.decodeSteps > 0 && c.decodeMs > 0 ? round((c.decodeSteps / c.decodeMs) * 1000) : 0,
    max_batch: c.maxBatch,
  };
}
const round = (x: number): number => Math.round(x * 1000) / 1000;

export function completionBody(id: string, model: string, created: number, text: string, c: Completion): Record<string, unknown> {
  return {
    id, object: "chat.completion", created, model,
    choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: c.finish, logprobs: null }],
    usage: { prompt_tokens: c.promptTokens, completion_tokens: c.tokens.length, total_tokens: c.promptTokens + c.tokens.length },
    zipvl: zipvlField(c),
  };
}

export function chunkBody(id: string, model: string, created: number, delta: Record<string, unknown>, finish: string | null, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { id, object: "chat.completion.chunk", created, model, choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }], ...extra };
}
