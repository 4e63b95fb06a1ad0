import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, type Readable, Transform, type TransformCallback } from 'node:stream';
import type { ArchiveObject, ArchiveStore, BodySource } from '../../src/storage/archive.js';

/**
 * Test S3: a real s3rver (spoken to by the real AWS SDK) on port 0, behind a small HTTP fault
 * proxy that can answer with 5xx, drop a connection in the middle of a request body, store a
 * truncated upload while reporting success, or cut a download short.
 */

interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
type S3rverConstructor = new (options: {
  port: number;
  address: string;
  silent: boolean;
  directory: string;
  configureBuckets: { name: string }[];
}) => S3rverInstance;

// s3rver ships no type declarations.
const S3rver = createRequire(import.meta.url)('s3rver') as S3rverConstructor;

/** Which requests a fault applies to; default: any. */
export interface FaultMatch {
  method?: string;
  /** Tested against the request path (`/bucket/key?query`). */
  path?: RegExp;
}

type Fault =
  | { kind: 'status'; status: number; match: FaultMatch }
  | { kind: 'drop-upload'; afterBytes: number; match: FaultMatch }
  | { kind: 'truncate-upload'; toBytes: number; match: FaultMatch }
  | { kind: 'truncate-download'; afterBytes: number; match: FaultMatch };

/** Object bodies only: `/bucket/<...>.tar.gz`, not list or bucket requests. */
export const OBJECT_PATH = /\.tar\.gz(\?|$)/;

export class FaultProxy {
  private server: http.Server | undefined;
  private readonly agent = new http.Agent({ keepAlive: true });
  private readonly pending: Fault[] = [];
  /** What was injected so far, by kind. */
  readonly injected = { status: 0, dropUpload: 0, truncateUpload: 0, truncateDownload: 0 };
  /** Every request seen, as `METHOD /path`. */
  readonly requests: string[] = [];
  port = 0;

  constructor(private readonly upstreamPort: number) {}

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The next `times` matching requests get `status` (default 503 SlowDown-style) after their body is read. */
  fail(times: number, opts: { status?: number } & FaultMatch = {}): void {
    for (let i = 0; i < times; i++)
      this.pending.push({ kind: 'status', status: opts.status ?? 503, match: opts });
  }

  /** The next `times` matching requests with a body: forward `afterBytes` of it, then drop both connections. */
  dropUpload(afterBytes: number, opts: { times?: number } & FaultMatch = {}): void {
    const match = { method: 'PUT', ...opts };
    for (let i = 0; i < (opts.times ?? 1); i++) this.pending.push({ kind: 'drop-upload', afterBytes, match });
  }

  /**
   * The next `times` matching uploads reach S3 cut to `toBytes` (Content-Length rewritten), and the
   * client is told it succeeded: only a size/checksum verification can notice.
   */
  truncateUpload(toBytes: number, opts: { times?: number } & FaultMatch = {}): void {
    const match = { method: 'PUT', ...opts };
    for (let i = 0; i < (opts.times ?? 1); i++)
      this.pending.push({ kind: 'truncate-upload', toBytes, match });
  }

  /** The next `times` matching GETs send headers (full Content-Length) and `afterBytes` of body, then drop. */
  truncateDownload(afterBytes: number, opts: { times?: number } & FaultMatch = {}): void {
    const match = { method: 'GET', path: OBJECT_PATH, ...opts };
    for (let i = 0; i < (opts.times ?? 1); i++)
      this.pending.push({ kind: 'truncate-download', afterBytes, match });
  }

  /** Forgets faults not yet injected. */
  clear(): void {
    this.pending.length = 0;
  }

  get pendingCount(): number {
    return this.pending.length;
  }

  async close(): Promise<void> {
    this.clear();
    this.agent.destroy();
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private take(req: http.IncomingMessage): Fault | undefined {
    const i = this.pending.findIndex(
      (f) =>
        (f.match.method === undefined || f.match.method === req.method) &&
        (f.match.path === undefined || f.match.path.test(req.url ?? '')),
    );
    return i < 0 ? undefined : this.pending.splice(i, 1)[0];
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.requests.push(`${req.method} ${req.url}`);
    const fault = this.take(req);
    if (fault?.kind === 'status') {
      this.injected.status++;
      req.resume();
      req.on('end', () => {
        res.writeHead(fault.status, { 'content-type': 'application/xml', connection: 'close' });
        res.end(
          `<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code><Message>injected fault</Message></Error>`,
        );
      });
      return;
    }
    const headers = { ...req.headers };
    delete headers.expect;
    let body: Readable = req;
    if (fault?.kind === 'truncate-upload') {
      this.injected.truncateUpload++;
      headers['content-length'] = String(fault.toBytes);
      body = req.pipe(limit(fault.toBytes));
    }
    const upstream = http.request({
      host: '127.0.0.1',
      port: this.upstreamPort,
      method: req.method,
      path: req.url,
      headers,
      agent: this.agent,
    });
    upstream.on('error', () => res.destroy());
    if (fault?.kind === 'drop-upload') {
      this.injected.dropUpload++;
      let seen = 0;
      req.on('data', (chunk: Buffer) => {
        const room = fault.afterBytes - seen;
        seen += chunk.length;
        if (room > 0) upstream.write(chunk.subarray(0, room));
        if (seen >= fault.afterBytes) {
          upstream.destroy();
          req.socket.destroy();
        }
      });
      req.on('end', () => {
        // The body was shorter than afterBytes: drop anyway.
        upstream.destroy();
        req.socket.destroy();
      });
      return;
    }
    body.pipe(upstream);
    upstream.on('response', (response) => {
      if (fault?.kind === 'truncate-download' && (response.statusCode ?? 0) < 300) {
        this.injected.truncateDownload++;
        res.writeHead(response.statusCode ?? 200, response.headers);
        let sent = 0;
        response.on('data', (chunk: Buffer) => {
          const room = fault.afterBytes - sent;
          if (room > 0) res.write(chunk.subarray(0, room));
          sent += chunk.length;
          if (sent >= fault.afterBytes) {
            response.destroy();
            res.socket?.destroy();
          }
        });
        return;
      }
      res.writeHead(response.statusCode ?? 502, response.headers);
      response.pipe(res);
    });
  }
}

/** Passes the first `bytes` bytes and swallows the rest. */
function limit(bytes: number): Transform {
  let left = bytes;
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      const part = chunk.subarray(0, Math.max(0, left));
      left -= part.length;
      callback(null, part.length > 0 ? part : undefined);
    },
  });
}

export interface TestS3 {
  /** Through the fault proxy: give this to the code under test. */
  endpoint: string;
  /** s3rver itself, bypassing faults. */
  directEndpoint: string;
  bucket: string;
  proxy: FaultProxy;
  /** Static credentials s3rver accepts (it checks no signatures). */
  credentials: { accessKeyId: string; secretAccessKey: string };
  /** A gateway's ARCHIVE_URL and AWS_* for `prefix` in the bucket (through the fault proxy unless `direct`). */
  env(prefix: string, opts?: { direct?: boolean }): Record<string, string>;
  close(): Promise<void>;
}

/** Starts s3rver on port 0 in a temp dir with one bucket, plus the fault proxy in front of it. */
export async function startS3(opts: { bucket?: string } = {}): Promise<TestS3> {
  const bucket = opts.bucket ?? 'archive';
  const directory = await mkdtemp(path.join(tmpdir(), 's3rver-'));
  const s3rver = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory,
    configureBuckets: [{ name: bucket }],
  });
  const { port } = await s3rver.run();
  const proxy = new FaultProxy(port);
  await proxy.start();
  return {
    endpoint: proxy.endpoint,
    directEndpoint: `http://127.0.0.1:${port}`,
    bucket,
    proxy,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    env: (prefix, opts = {}) => ({
      ARCHIVE_URL: `s3://${bucket}/${prefix}`,
      AWS_ENDPOINT_URL_S3: opts.direct ? `http://127.0.0.1:${port}` : proxy.endpoint,
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
      AWS_REGION: 'us-east-1',
    }),
    close: async () => {
      await proxy.close();
      await s3rver.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

/**
 * The same faults for any archive store (used for file:// archives, which have no wire to break):
 * a decorator that fails operations, breaks or truncates upload bodies, and cuts downloads short.
 * It also counts operations, for both kinds of archive.
 */
export class FaultyArchive implements ArchiveStore {
  readonly calls = { put: 0, get: 0, head: 0, list: 0, delete: 0 };
  /** Faults injected so far. */
  injected = 0;
  private failures = 0;
  private drops: number[] = [];
  private truncatedUploads: number[] = [];
  private truncatedDownloads: number[] = [];

  constructor(readonly inner: ArchiveStore) {}

  /** The next `times` operations fail with a transient error before reaching the store. */
  fail(times: number): void {
    this.failures += times;
  }
  /** The next `times` uploads fail after `afterBytes` bytes of body (the store sees a broken stream). */
  dropUpload(afterBytes: number, times = 1): void {
    for (let i = 0; i < times; i++) this.drops.push(afterBytes);
  }
  /** The next `times` uploads store only `toBytes` bytes, and report success. */
  truncateUpload(toBytes: number, times = 1): void {
    for (let i = 0; i < times; i++) this.truncatedUploads.push(toBytes);
  }
  /** The next `times` downloads end cleanly after `afterBytes` bytes. */
  truncateDownload(afterBytes: number, times = 1): void {
    for (let i = 0; i < times; i++) this.truncatedDownloads.push(afterBytes);
  }
  clear(): void {
    this.failures = 0;
    this.drops = [];
    this.truncatedUploads = [];
    this.truncatedDownloads = [];
  }

  private maybeFail(): void {
    if (this.failures > 0) {
      this.failures--;
      this.injected++;
      throw Object.assign(new Error('injected: service unavailable'), {
        $metadata: { httpStatusCode: 503 },
      });
    }
  }

  async put(key: string, body: BodySource, size?: number): Promise<void> {
    this.calls.put++;
    this.maybeFail();
    const open = () => (typeof body === 'function' ? body() : body);
    const drop = this.drops.shift();
    if (drop !== undefined) {
      this.injected++;
      return this.inner.put(key, () => cut(open(), drop, new Error('injected: connection reset')), size);
    }
    const truncate = this.truncatedUploads.shift();
    if (truncate !== undefined) {
      this.injected++;
      return this.inner.put(key, () => cut(open(), truncate));
    }
    return this.inner.put(key, body, size);
  }

  async get(key: string): Promise<Readable> {
    this.calls.get++;
    this.maybeFail();
    const stream = await this.inner.get(key);
    const truncate = this.truncatedDownloads.shift();
    if (truncate === undefined) return stream;
    this.injected++;
    return cut(stream, truncate);
  }

  async head(key: string): Promise<ArchiveObject | undefined> {
    this.calls.head++;
    this.maybeFail();
    return this.inner.head(key);
  }

  async list(prefix: string): Promise<ArchiveObject[]> {
    this.calls.list++;
    this.maybeFail();
    return this.inner.list(prefix);
  }

  async delete(key: string): Promise<void> {
    this.calls.delete++;
    this.maybeFail();
    return this.inner.delete(key);
  }

  describe(): string {
    return `faulty ${this.inner.describe()}`;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** The first `bytes` bytes of `source`, then an end (or `error`). */
function cut(source: Readable, bytes: number, error?: Error): Readable {
  const out = new PassThrough();
  let sent = 0;
  source.on('data', (chunk: Buffer) => {
    const room = bytes - sent;
    if (room > 0) out.write(chunk.subarray(0, room));
    sent += chunk.length;
    if (sent >= bytes) {
      source.destroy();
      if (error) out.destroy(error);
      else out.end();
    }
  });
  source.on('end', () => (error ? out.destroy(error) : out.end()));
  source.on('error', (err) => out.destroy(err));
  return out;
}
