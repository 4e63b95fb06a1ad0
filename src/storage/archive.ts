import type { Readable } from 'node:stream';

/**
 * The durable home of database snapshots: an object store keyed by `<id>/<version>.tar.gz`.
 * Chosen by `ARCHIVE_URL`:
 *
 * - unset: no archive; databases live on local disk only.
 * - `file:///mnt/s3/dbs`: a directory (local disk, NFS, an s3fs/goofys mount) holding the objects
 *   as files.
 * - `s3://bucket/prefix`: S3-compatible object storage (AWS S3, Tigris, MinIO) through the AWS SDK,
 *   loaded lazily so a node without an archive never loads it.
 *
 * Objects are immutable: `put` refuses a key that already exists, and callers build keys from a
 * fresh unique version id, so a put can never replace a good version.
 */

export interface ArchiveObject {
  key: string;
  size: number;
}

/**
 * What `put` uploads. A factory may be called more than once: it lets the store retry the whole
 * upload after a dropped connection. A plain stream can be read only once, so it is not retried
 * beyond what the SDK does on its own buffered parts.
 */
export type BodySource = Readable | (() => Readable);

export interface ArchiveStore {
  /**
   * Stores `body` under `key`. Rejects with `ArchiveKeyExistsError` when the key already exists;
   * a failed put may leave a partial object at `key` (never at any other key).
   */
  put(key: string, body: BodySource, size?: number): Promise<void>;
  /** A stream of the object. Rejects with `ArchiveNotFoundError` when there is none. */
  get(key: string): Promise<Readable>;
  /** The object's size, or undefined when it does not exist. */
  head(key: string): Promise<ArchiveObject | undefined>;
  /** Every object whose key starts with `prefix`, in key order. */
  list(prefix: string): Promise<ArchiveObject[]>;
  /** Removes the object; no error when it does not exist. */
  delete(key: string): Promise<void>;
  /** Where the objects go, without secrets, for logs. */
  describe(): string;
  /** Releases connections (S3 client sockets). */
  close(): Promise<void>;
}

export class ArchiveKeyExistsError extends Error {
  override readonly name = 'ArchiveKeyExistsError';
  constructor(readonly key: string) {
    super(`archive object ${key} already exists; archive objects are never overwritten`);
  }
}

export class ArchiveNotFoundError extends Error {
  override readonly name = 'ArchiveNotFoundError';
  constructor(readonly key: string) {
    super(`archive object ${key} does not exist`);
  }
}

/** Keys are `/`-separated segments of `[A-Za-z0-9._-]`, none of them `.` or `..`. */
const SEGMENT = /^[A-Za-z0-9._-]+$/;

export function assertValidKey(key: string, { prefix = false } = {}): void {
  const segments = key.split('/');
  // A list prefix may end with '/', leaving one empty last segment.
  if (prefix && segments.length > 1 && segments.at(-1) === '') segments.pop();
  if (prefix && key === '') return;
  const ok = segments.every((s) => SEGMENT.test(s) && s !== '.' && s !== '..');
  if (!ok) throw new Error(`invalid archive key ${JSON.stringify(key)}`);
}

export type { S3Settings } from '../config.js';

/** Error codes of a connection that failed or dropped; worth retrying. */
const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ERR_STREAM_PREMATURE_CLOSE',
  'UND_ERR_SOCKET',
]);

const RETRYABLE_NAMES = new Set([
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeTooSkewed',
  'SlowDown',
  'InternalError',
  'ServiceUnavailable',
  'ThrottlingException',
  'Throttling',
]);

/** True for errors a later attempt may not hit: 5xx, 429, timeouts, dropped connections. */
export function isTransientError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const e = err as {
    name?: unknown;
    code?: unknown;
    message?: unknown;
    $metadata?: { httpStatusCode?: number };
    $retryable?: unknown;
    cause?: unknown;
  };
  const status = e.$metadata?.httpStatusCode;
  if (typeof status === 'number' && (status >= 500 || status === 429)) return true;
  if (e.$retryable) return true;
  if (typeof e.name === 'string' && RETRYABLE_NAMES.has(e.name)) return true;
  if (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) return true;
  if (
    typeof e.message === 'string' &&
    /socket hang up|aborted|premature close|ECONNRESET|EPIPE/i.test(e.message)
  ) {
    return true;
  }
  return e.cause !== undefined && e.cause !== err && isTransientError(e.cause);
}

/** Exponential backoff with full jitter: a random delay in [base·2^n / 2, base·2^n], capped. */
export function backoffMs(attempt: number, baseMs: number, capMs = 5_000): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Runs `op` up to `retries + 1` times while it fails with an error `retryable` accepts, sleeping
 * with backoff in between; `onRetry` hears about each failure that will be retried.
 */
export async function withRetries<T>(
  op: (attempt: number) => Promise<T>,
  opts: {
    retries: number;
    baseMs: number;
    retryable?: (err: unknown) => boolean;
    onRetry?: (err: unknown, attempt: number) => void;
  },
): Promise<T> {
  const retryable = opts.retryable ?? isTransientError;
  for (let attempt = 0; ; attempt++) {
    try {
      return await op(attempt);
    } catch (err) {
      if (attempt >= opts.retries || !retryable(err)) throw err;
      opts.onRetry?.(err, attempt);
      await sleep(backoffMs(attempt, opts.baseMs));
    }
  }
}
