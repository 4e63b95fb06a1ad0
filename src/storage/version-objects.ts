import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import path from 'node:path';
import type { VersionRecord } from '../catalog/catalog.js';
import type { Logger } from '../log.js';
import { ChecksumMismatchError, Digest, hashed, writeAll } from '../pgdata/tarball.js';
import {
  ArchiveKeyExistsError,
  ArchiveNotFoundError,
  type ArchiveStore,
  backoffMs,
  sleep,
  withRetries,
} from './archive.js';

/**
 * Database versions as objects in the archive: their names, and moving them in and out with
 * retries and verification. Snapshots (snapshots.ts) decides what is stored and records it.
 */

export const DEFAULT_KEEP_VERSIONS = 10;

/** Versions sort by time: `YYYYMMDDTHHMMSSmmmZ-<8 hex>`. */
export const VERSION_PATTERN = /^\d{8}T\d{9}Z-[0-9a-f]{8}$/;

export function newVersionId(now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:.]/g, '');
  return `${stamp}-${randomBytes(4).toString('hex')}`;
}

export function versionKey(databaseId: string, version: string): string {
  return `${databaseId}/${version}.tar.gz`;
}

export class VersionNotFoundError extends Error {
  override readonly name = 'VersionNotFoundError';
}

/** The uploaded object does not match what was sent (size or checksum); the version is not recorded. */
export class VerificationError extends Error {
  override readonly name = 'VerificationError';
}

/** The database vanished from the catalog while its snapshot was being stored. */
export class DatabaseGoneError extends Error {
  override readonly name = 'DatabaseGoneError';
}

/** A log-safe summary of an error (SDK errors carry large request metadata). */
export function describeError(err: unknown): { name?: string; message: string; code?: string } {
  if (!(err instanceof Error)) return { message: String(err) };
  const code = (err as NodeJS.ErrnoException).code;
  return { name: err.name, message: err.message, ...(typeof code === 'string' ? { code } : {}) };
}

export interface VersionObjectsOptions {
  archive: ArchiveStore;
  logger: Logger;
  attempts: number;
  retryBaseMs: number;
  readbackMaxBytes: number;
}

export class VersionObjects {
  constructor(private readonly opts: VersionObjectsOptions) {}

  /**
   * Uploads a spooled archive as a new version object and verifies it; returns the version id.
   * Each attempt writes a fresh key; a failed attempt's object is deleted (best effort), so
   * nothing half-written is ever under a key the catalog will name.
   */
  upload(id: string, spool: string, packed: { sha256: string; size: number }): Promise<string> {
    return withRetries(
      async () => {
        const candidate = newVersionId();
        const key = versionKey(id, candidate);
        try {
          await this.opts.archive.put(key, () => createReadStream(spool), packed.size);
          await this.verify(key, packed);
        } catch (err) {
          // Only our own (partial or wrong) object can be at this fresh key, unless put refused it.
          if (!(err instanceof ArchiveKeyExistsError))
            await this.opts.archive.delete(key).catch(() => undefined);
          throw err;
        }
        return candidate;
      },
      {
        retries: this.opts.attempts - 1,
        baseMs: this.opts.retryBaseMs,
        retryable: (err) => !(err instanceof ArchiveKeyExistsError),
        onRetry: (err, attempt) =>
          this.opts.logger.warn(
            { db: id, attempt: attempt + 1, err: describeError(err) },
            'snapshot upload failed; retrying',
          ),
      },
    );
  }

  /**
   * Downloads the version into a spool file (retrying drops, truncation and checksum mismatches)
   * and returns its path. The file's bytes match the catalog's sha256 and size.
   */
  async download(record: VersionRecord, spoolPath: string): Promise<string> {
    await mkdir(path.dirname(spoolPath), { recursive: true });
    const key = versionKey(record.databaseId, record.version);
    for (let attempt = 0; ; attempt++) {
      const spool = attempt === 0 ? spoolPath : `${spoolPath}.${attempt}`;
      try {
        const body = await this.opts.archive.get(key);
        const digest = new Digest();
        const handle = await open(spool, 'wx', 0o600);
        try {
          await writeAll(hashed(body, digest), handle);
        } finally {
          await handle.close();
        }
        if (digest.bytes !== record.sizeBytes || digest.sha256() !== record.sha256) {
          throw new ChecksumMismatchError(
            `downloaded ${key}: ${digest.bytes} bytes with sha256 ${digest.sha256()}, expected ${record.sizeBytes} bytes with ${record.sha256}`,
          );
        }
        return spool;
      } catch (err) {
        await rm(spool, { force: true });
        if (attempt + 1 >= this.opts.attempts || err instanceof ArchiveNotFoundError) throw err;
        this.opts.logger.warn(
          { db: record.databaseId, version: record.version, attempt: attempt + 1, err: describeError(err) },
          'download failed; retrying',
        );
        await sleep(backoffMs(attempt, this.opts.retryBaseMs));
      }
    }
  }

  /** Checks the stored object's size, and for small objects its sha256 by reading it back. */
  private async verify(key: string, expected: { sha256: string; size: number }): Promise<void> {
    const stored = await this.opts.archive.head(key);
    if (!stored) throw new VerificationError(`uploaded object ${key} is missing`);
    if (stored.size !== expected.size) {
      throw new VerificationError(
        `uploaded object ${key} has ${stored.size} bytes, expected ${expected.size}`,
      );
    }
    if (expected.size > this.opts.readbackMaxBytes) return;
    const digest = new Digest();
    const body = await this.opts.archive.get(key);
    for await (const chunk of body) digest.update(chunk as Buffer);
    if (digest.bytes !== expected.size || digest.sha256() !== expected.sha256) {
      throw new VerificationError(`uploaded object ${key} does not read back as written`);
    }
  }
}
