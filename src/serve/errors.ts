// Coded errors of the serving layer (ZV70xx): the paged KV pool, the planner, the scheduler and the HTTP server.
// Codes are stable (tests and clients match on them); each carries the HTTP status the server answers with, so a
// rejected request gets `{"error": {"code", "message", "type"}}` with that status and never a stack trace.
export const SERVE_CODES = {
  // paged KV pool and paged decode
  ZV7001: { status: 500, message: "invalid paged KV pool geometry: {0}" },
  ZV7002: { status: 503, message: "the paged KV pool is out of pages: {0}" },
  ZV7003: { status: 500, message: "unknown sequence {0} in the paged KV pool" },
  ZV7004: { status: 500, message: "paged KV append: {0}" },
  ZV7005: { status: 500, message: "paged decode attention: {0}" },
  // planner and admission
  ZV7010: { status: 500, message: "memory plan: {0}" },
  ZV7011: { status: 400, message: "the prompt of {0} tokens cannot be served: {1}" },
  ZV7012: { status: 400, message: "max_tokens {0} is too large: {1}" },
  // requests
  ZV7020: { status: 400, message: "malformed JSON body: {0}" },
  ZV7021: { status: 400, message: "invalid request: {0}" },
  ZV7022: { status: 400, message: "bad image in messages[{0}].content[{1}]: {2}" },
  ZV7023: { status: 413, message: "request body is larger than {0} bytes" },
  ZV7024: { status: 429, message: "the request queue is full ({0} waiting); retry later" },
  ZV7025: { status: 408, message: "request timed out after {0} ms while waiting in the queue" },
  ZV7026: { status: 504, message: "request timed out after {0} ms while generating ({1} tokens generated)" },
  ZV7027: { status: 499, message: "request cancelled: {0}" },
  ZV7028: { status: 503, message: "the server is shutting down" },
  ZV7029: { status: 404, message: "no route {0} {1}; routes: POST /v1/chat/completions, GET /v1/models, GET /health" },
  ZV7030: { status: 400, message: "unknown model '{0}'; this server serves '{1}'" },
  // engine and command line
  ZV7040: { status: 500, message: "serving engine: {0}" },
  ZV7041: { status: 500, message: "zipvl serve: {0}" },
} as const;

export type ServeCode = keyof typeof SERVE_CODES;

export function formatServeMessage(code: ServeCode, args: readonly (string | number)[]): string {
  return SERVE_CODES[code].message.replace(/\{(\d+)\}/g, (_, i: string) => String(args[Number(i)] ?? ""));
}

export class ServeError extends Error {
  readonly code: ServeCode;
  readonly status: number;
  constructor(code: ServeCode, args: readonly (string | number)[] = [], options?: { cause?: unknown }) {
    super(`${code}: ${formatServeMessage(code, args)}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ServeError";
    this.code = code;
    this.status = SERVE_CODES[code].status;
  }
}

export function serveFail(code: ServeCode, args: readonly (string | number)[] = []): never {
  throw new ServeError(code, args);
}

/** The JSON error body of a coded error (OpenAI's error shape plus the stable code). */
export function errorBody(e: ServeError): { error: { code: string; message: string; type: string } } {
  const type = e.status === 429 ? "rate_limit_error" : e.status >= 500 ? "server_error" : "invalid_request_error";
  return { error: { code: e.code, message: e.message.slice(e.code.length + 2), type } };
}
