import { Readable, Transform, type TransformCallback } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import {
  ArchiveKeyExistsError,
  ArchiveNotFoundError,
  type ArchiveObject,
  type ArchiveStore,
  assertValidKey,
  type BodySource,
  type S3Settings,
  withRetries,
} from './archive.js';

/**
 * An archive in an S3-compatible bucket (`s3://bucket/prefix`): AWS S3, Tigris, MinIO.
 *
 * Uploads go through lib-storage's `Upload` (multipart above `partSize`, parts buffered so the SDK
 * can retry them). On top of the SDK's per-request retries, every operation is retried as a whole
 * on 5xx and network errors, with backoff: a connection dropped in the middle of an upload starts
 * that upload again from a fresh body (when `put` was given a body factory).
 *
 * Never overwriting: `put` first checks with HEAD that the key does not exist. S3 conditional
 * writes (If-None-Match: *) are not relied on because not every compatible store honours them
 * (s3rver, older MinIO); instead callers make collisions impossible by construction: every key
 * holds a fresh, unique version id (timestamp plus random suffix), and a retry of the same put may
 * only ever replace its own partial object.
 *
 * SDK checksums are requested only when an operation requires them: newer SDKs otherwise send
 * aws-chunked bodies with trailing CRCs that some S3-compatible stores store verbatim. Integrity is
 * checked end to end instead (sha256 recorded in the catalog, size verified after upload).
 */
export class S3Archive implements ArchiveStore {
  private readonly client: S3Client;
  private readonly retries: number;
  private readonly retryBaseMs: number;
  private readonly partSize: number;
  private readonly queueSize: number;

  constructor(
    readonly bucket: string,
    readonly prefix: string,
    private readonly settings: S3Settings = {},
  ) {
    assertValidKey(bucket);
    if (prefix !== '') assertValidKey(prefix);
    const config: S3ClientConfig = {
      region: settings.region ?? 'us-east-1',
      forcePathStyle: settings.forcePathStyle ?? settings.endpoint !== undefined,
      maxAttempts: settings.maxAttempts ?? 3,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: {
        requestTimeout: settings.requestTimeoutMs ?? 60_000,
        connectionTimeout: 10_000,
      },
    };
    if (settings.endpoint !== undefined) config.endpoint = settings.endpoint;
    if (settings.accessKeyId !== undefined && settings.secretAccessKey !== undefined) {
      config.credentials = {
        accessKeyId: settings.accessKeyId,
        secretAccessKey: settings.secretAccessKey,
        ...(settings.sessionToken !== undefined ? { sessionToken: settings.sessionToken } : {}),
      };
    }
    this.client = new S3Client(config);
    this.retries = settings.retries ?? 3;
    this.retryBaseMs = settings.retryBaseMs ?? 200;
    this.partSize = settings.partSize ?? 8 * 1024 * 1024;
    this.queueSize = settings.queueSize ?? 4;
  }

  /** `s3://bucket/some/prefix` → bucket `bucket`, prefix `some/prefix`. */
  static fromUrl(url: URL, settings: S3Settings): S3Archive {
    const bucket = url.hostname;
    if (bucket === '') throw new Error('s3:// archive URL needs a bucket: s3://bucket/prefix');
    if (url.username || url.password) {
      throw new Error('put S3 credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, not in ARCHIVE_URL');
    }
    const prefix = decodeURIComponent(url.pathname).replace(/^\/+|\/+$/g, '');
    return new S3Archive(bucket, prefix, settings);
  }

  describe(): string {
    const where = this.settings.endpoint ? ` at ${this.settings.endpoint}` : '';
    return `s3://${this.bucket}${this.prefix ? `/${this.prefix}` : ''}${where}`;
  }

  private fullKey(key: string): string {
    assertValidKey(key);
    return this.prefix ? `${this.prefix}/${key}` : key;
  }

  private retry<T>(op: () => Promise<T>): Promise<T> {
    return withRetries(op, { retries: this.retries, baseMs: this.retryBaseMs });
  }

  async put(key: string, body: BodySource, size?: number): Promise<void> {
    const Key = this.fullKey(key);
    if (await this.head(key)) throw new ArchiveKeyExistsError(key);
    const factory = typeof body === 'function' ? body : undefined;
    let single: Readable | undefined = typeof body === 'function' ? undefined : body;
    await withRetries(
      async () => {
        const source = factory ? factory() : single;
        single = undefined;
        if (!source) throw new Error('put body stream already consumed');
        const counter = new ByteCounter();
        source.on('error', (err) => counter.destroy(err));
        const upload = new Upload({
          client: this.client,
          params: { Bucket: this.bucket, Key, Body: source.pipe(counter), ContentType: 'application/gzip' },
          partSize: this.partSize,
          queueSize: this.queueSize,
          // lib-storage's own abort replaces the part's error with the abort's when the abort fails
          // (s3rver has no AbortMultipartUpload), which would hide a retryable error; abort here.
          leavePartsOnError: true,
        });
        try {
          await upload.done();
        } catch (err) {
          source.destroy();
          counter.destroy();
          if (upload.uploadId !== undefined) await this.abortMultipart(Key, upload.uploadId);
          throw err;
        }
        if (size !== undefined && counter.bytes !== size) {
          throw new Error(`archive put ${key}: sent ${counter.bytes} bytes, expected ${size}`);
        }
      },
      // A plain stream cannot be replayed: only the SDK's own (buffered) part retries apply.
      { retries: factory ? this.retries : 0, baseMs: this.retryBaseMs },
    );
  }

  /**
   * Best effort: parts of an abandoned multipart upload cost storage until aborted. A bucket
   * lifecycle rule (AbortIncompleteMultipartUpload) is the backstop for aborts that fail.
   */
  private async abortMultipart(Key: string, UploadId: string): Promise<void> {
    await this.client
      .send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId }))
      .catch(() => undefined);
  }

  async get(key: string): Promise<Readable> {
    const Key = this.fullKey(key);
    const response = await this.retry(() =>
      this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key })).catch((err: unknown) => {
        if (isNotFound(err)) throw new ArchiveNotFoundError(key);
        throw err;
      }),
    );
    const body = response.Body;
    if (!(body instanceof Readable)) throw new Error(`archive get ${key}: response has no stream body`);
    return body;
  }

  async head(key: string): Promise<ArchiveObject | undefined> {
    const Key = this.fullKey(key);
    return this.retry(async () => {
      try {
        const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }));
        return { key, size: Number(out.ContentLength ?? 0) };
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    });
  }

  async list(prefix: string): Promise<ArchiveObject[]> {
    assertValidKey(prefix, { prefix: true });
    const base = this.prefix ? `${this.prefix}/` : '';
    const found: ArchiveObject[] = [];
    let token: string | undefined;
    do {
      const page = await this.retry(() =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: `${base}${prefix}`,
            ...(token !== undefined ? { ContinuationToken: token } : {}),
          }),
        ),
      );
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined || !object.Key.startsWith(base)) continue;
        found.push({ key: object.Key.slice(base.length), size: Number(object.Size ?? 0) });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    return found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(key: string): Promise<void> {
    const Key = this.fullKey(key);
    await this.retry(() => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key })));
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}

class ByteCounter extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    callback(null, chunk);
  }
}
