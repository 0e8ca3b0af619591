// `zipvl serve`'s HTTP face (node:http, 127.0.0.1 by default): OpenAI-style POST /v1/chat/completions (JSON or
// server-sent events), GET /v1/models, GET /health. Every rejection is a coded JSON error with its status: 400
// (malformed JSON, missing fields, bad images, prompts that cannot be served), 404, 408/504 (timeouts), 413 (body
// too large), 429 (queue full), 503 (shutting down). Closing: stop accepting, fail what waits, finish what runs.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { ServeMessage } from "./engine.ts";
import { errorBody, ServeError } from "./errors.ts";
import { chunkBody, completionBody, parseChatRequest, parseJson, zipvlField } from "./request.ts";
import type { Engine, Scheduler } from "./scheduler.ts";

/** What the HTTP layer needs beyond the scheduler's engine: chat -> prompt, ids -> text. */
export interface ChatEngine<P extends { readonly ids: Int32Array }> extends Engine<P> {
  readonly modelId: string;
  readonly eos: readonly number[];
  prepare(messages: readonly ServeMessage[]): P;
  detokenize(ids: readonly number[]): string;
}

export interface HttpOptions {
  readonly maxBodyBytes: number;
  readonly timeoutMs: number;
  readonly defaultMaxTokens: number;
  readonly log?: (line: string) => void;
}

export interface ServeApp {
  readonly server: Server;
  listen(port: number, host?: string): Promise<AddressInfo>;
  close(): Promise<void>;
}

class BodyTooLarge extends Error {}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"] ?? "0");
    if (declared > limit) return reject(new BodyTooLarge());
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new BodyTooLarge());
        req.pause();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown, close = false): void {
  if (res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), ...(close ? { connection: "close" } : {}) });
  res.end(text);
}

function sendError(res: ServerResponse, e: ServeError, close = false): void {
  sendJson(res, e.status, errorBody(e), close);
}

/** Incremental detokenization: the text of all tokens so far, minus what was already sent (held back while the
 *  tail is an incomplete UTF-8 sequence). */
function textStream(detok: (ids: readonly number[]) => string): { push(ids: readonly number[]): string; flush(ids: readonly number[]): string } {
  let sent = 0;
  const take = (ids: readonly number[], final: boolean): string => {
    const text = detok(ids);
    if (!final && text.endsWith("\uFFFD")) return "";
    const d = text.slice(sent);
    sent = text.length;
    return d;
  };
  return { push: (ids) => take(ids, false), flush: (ids) => take(ids, true) };
}

export function createServeApp<P extends { readonly ids: Int32Array }>(engine: ChatEngine<P>, sched: Scheduler<P>, o: HttpOptions): ServeApp {
  let closing = false;
  let nextId = 0;
  const log = o.log ?? (() => {});

  async function chat(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let raw: string;
    try {
      raw = await readBody(req, o.maxBodyBytes);
    } catch (e) {
      if (e instanceof BodyTooLarge) return sendError(res, new ServeError("ZV7023", [o.maxBodyBytes]), true);
      throw e;
    }
    const r = parseChatRequest(parseJson(raw), { maxTokens: o.defaultMaxTokens });
    if (r.model !== undefined && r.model !== engine.modelId) throw new ServeError("ZV7030", [r.model, engine.modelId]);
    const prepared = engine.prepare(r.messages);
    const id = `chatcmpl-${Date.now().toString(36)}${(++nextId).toString(36)}`;
    const created = Math.floor(Date.now() / 1000);
    const model = engine.modelId;
    const tokens: number[] = [];
    const text = textStream((ids) => engine.detokenize(ids));
    const sse = (obj: unknown): boolean => res.write(`data: ${JSON.stringify(obj)}\n\n`);
    const ticket = sched.submit(prepared, {
      promptTokens: prepared.ids.length, maxTokens: r.maxTokens, stop: engine.eos, timeoutMs: o.timeoutMs,
      onToken: (t) => {
        tokens.push(t);
        if (!r.stream) return;
        if (!res.headersSent) {
          res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
          sse(chunkBody(id, model, created, { role: "assistant", content: "" }, null));
        }
        const delta = text.push(engine.eos.includes(t) ? tokens.slice(0, -1) : tokens);
        if (delta) sse(chunkBody(id, model, created, { content: delta }, null));
      },
    });
    res.on("close", () => {
      if (!res.writableFinished) ticket.cancel("the client disconnected");
    });
    let c;
    try {
      c = await ticket.done;
    } catch (e) {
      if (!(e instanceof ServeError)) throw e;
      if (!r.stream || !res.headersSent) return sendError(res, e);
      // Mid-stream: the status is already 200, so the error travels as an event.
      sse(errorBody(e));
      res.end("data: [DONE]\n\n");
      return;
    }
    const ids = engine.eos.includes(c.tokens[c.tokens.length - 1]!) ? c.tokens.slice(0, -1) : c.tokens;
    log(`${id}: ${c.promptTokens} prompt + ${c.tokens.length} new tokens, prefill ${c.prefillMs.toFixed(1)} ms, batch <= ${c.maxBatch}`);
    if (!r.stream) return sendJson(res, 200, completionBody(id, model, created, engine.detokenize(ids), c));
    if (!res.headersSent) {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
      sse(chunkBody(id, model, created, { role: "assistant", content: "" }, null));
    }
    const tail = text.flush(ids);
    if (tail) sse(chunkBody(id, model, created, { content: tail }, null));
    sse(chunkBody(id, model, created, {}, c.finish, { usage: { prompt_tokens: c.promptTokens, completion_tokens: c.tokens.length, total_tokens: c.promptTokens + c.tokens.length }, zipvl: zipvlField(c) }));
    res.end("data: [DONE]\n\n");
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0]!;
    try {
      if (closing) throw new ServeError("ZV7028");
      if (req.method === "GET" && path === "/health") {
        const pool = engine.pool;
        return sendJson(res, 200, {
          status: "ok", model: engine.modelId, running: sched.running, queued: sched.queued,
          kv_pool: { pages: pool.geometry.numPages, free_pages: pool.freePages, available_pages: pool.availablePages, page_bytes: pool.pageBytes, used_bytes: pool.usedBytes, free_bytes: pool.freeBytes },
          steps: sched.stats.steps, max_batch_seen: sched.stats.maxBatch,
        });
      }
      if (req.method === "GET" && path === "/v1/models") {
        return sendJson(res, 200, { object: "list", data: [{ id: engine.modelId, object: "model", created: 0, owned_by: "zipvl" }] });
      }
      if (req.method === "POST" && path === "/v1/chat/completions") return await chat(req, res);
      throw new ServeError("ZV7029", [req.method ?? "?", path]);
    } catch (e) {
      if (e instanceof ServeError) return sendError(res, e);
      // Coded errors of lower layers (model, io) that reach here are the request's fault only if they say so;
      // anything else is a 500 with its message and no stack.
      const code = (e as { code?: unknown }).code;
      log(`internal error on ${req.method} ${path}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      sendJson(res, 500, { error: { code: typeof code === "string" ? code : "ZV7040", message: e instanceof Error ? e.message : String(e), type: "server_error" } });
    }
  }

  const server = createServer((req, res) => void handle(req, res));
  return {
    server,
    listen: (port, host = "127.0.0.1") =>
      new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => resolve(server.address() as AddressInfo));
      }),
    async close() {
      closing = true;
      const stopped = new Promise<void>((res) => server.close(() => res()));
      await sched.close();
      server.closeIdleConnections();
      await stopped;
    },
  };
}
