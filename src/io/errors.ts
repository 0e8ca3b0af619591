// Errors from tensor file I/O. Each carries a stable code so the CLI and tests can branch on the
// kind of failure without parsing messages; messages name the file and, where relevant, the tensor.

export type IoErrorCode =
  | 'ZV2001' // file not found / cannot be opened
  | 'ZV2002' // not a safetensors file, truncated, or header length > 100 MB
  | 'ZV2003' // bad header JSON or tensor entry (missing fields, bad offsets, size mismatch, bad values)
  | 'ZV2004' // unsupported dtype
  | 'ZV2005'; // write failure (invalid tensor/metadata to write, or the filesystem refused)

export class IoError extends Error {
  readonly code: IoErrorCode;

  constructor(code: IoErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'IoError';
    this.code = code;
  }

  /** `ZV2003: bad header ...` — the form the CLI prints. */
  override toString(): string {
    return `${this.code}: ${this.message}`;
  }
}
