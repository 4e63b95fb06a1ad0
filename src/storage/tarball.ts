import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { type FileHandle, lstat, open, readdir } from 'node:fs/promises';
import path from 'node:path';
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { Pack } from 'tar';

/**
 * PGDATA directories as tarballs, streaming: nothing holds a whole tarball in memory. This file
 * packs (relative member names such as `PG_VERSION`, `base/1/112`, into a gzip stream), checks
 * that a directory is a PGDATA, and names the ways a tarball is refused; extract.ts unpacks.
 */

/** Why a tarball was refused. */
export type TarballProblem =
  | 'unsafe-path'
  | 'link'
  | 'special-file'
  | 'too-large'
  | 'too-many-entries'
  | 'corrupt'
  | 'not-pgdata'
  | 'incompatible';

export class TarballRejectedError extends Error {
  override readonly name = 'TarballRejectedError';
  constructor(
    readonly problem: TarballProblem,
    message: string,
  ) {
    super(message);
  }
}

export class ChecksumMismatchError extends Error {
  override readonly name = 'ChecksumMismatchError';
}

/** The facts that decide whether this PGlite can open a PGDATA (read from the template). */
export interface PgDataIdentity {
  /** Contents of PG_VERSION, e.g. '18'. */
  pgVersion: string;
  /** `pg_control_version` from global/pg_control. */
  controlVersion: number;
  /** `catalog_version_no` from global/pg_control: changes whenever the system catalogs do. */
  catalogVersion: number;
}

/** Files never archived: they describe a running server, not the data. */
export const NOT_ARCHIVED = new Set(['postmaster.pid', 'postmaster.opts', '.pglite-version']);

/** Default cap on members in one tarball; an empty PGlite PGDATA has about 1,000. */
export const DEFAULT_MAX_ENTRIES = 100_000;

/** sha256 and byte count of whatever flows through. Read `sha256()` after the stream ended. */
export class Digest extends Transform {
  bytes = 0;
  private readonly hash = createHash('sha256');
  private hex: string | undefined;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.update(chunk);
    callback(null, chunk);
  }

  update(chunk: Buffer): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
  }

  sha256(): string {
    this.hex ??= this.hash.digest('hex');
    return this.hex;
  }
}

/**
 * Writes every chunk of `source` to `handle`, one write at a time (natural backpressure). Used
 * instead of `handle.createWriteStream()` so the caller can fsync and close the handle itself:
 * on Node 20, closing a FileHandle that still has a non-autoClose stream attached never settles.
 */
export async function writeAll(source: AsyncIterable<Uint8Array>, handle: FileHandle): Promise<number> {
  let bytes = 0;
  for await (const chunk of source) {
    let offset = 0;
    while (offset < chunk.length) {
      const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset);
      offset += bytesWritten;
    }
    bytes += chunk.length;
  }
  return bytes;
}

/** Reads PG_VERSION and the version fields of global/pg_control (little-endian, as WASM writes it). */
export async function readPgDataIdentity(dir: string): Promise<PgDataIdentity> {
  const pgVersion = (await readSmallFile(path.join(dir, 'PG_VERSION'), 64)).toString('utf8').trim();
  const control = await readSmallFile(path.join(dir, 'global', 'pg_control'), 8192);
  if (control.length < 16) throw new Error('global/pg_control is too short');
  return { pgVersion, controlVersion: control.readUInt32LE(8), catalogVersion: control.readUInt32LE(12) };
}

async function readSmallFile(file: string, max: number): Promise<Buffer> {
  const info = await lstat(file);
  if (!info.isFile()) throw new Error(`${path.basename(file)} is not a regular file`);
  const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const buffer = Buffer.alloc(Math.min(info.size, max));
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/**
 * Throws `TarballRejectedError` unless `dir` is a PGDATA: PG_VERSION, global/pg_control,
 * global/pg_filenode.map, base/ and pg_wal/ present, and, when `expected` is given, the same major version, control and catalog version.
 */
export async function validatePgData(dir: string, expected?: PgDataIdentity): Promise<void> {
  for (const [name, kind] of [
    ['PG_VERSION', 'file'],
    [path.join('global', 'pg_control'), 'file'],
    [path.join('global', 'pg_filenode.map'), 'file'],
    ['base', 'directory'],
    ['pg_wal', 'directory'],
  ] as const) {
    const info = await lstat(path.join(dir, name)).catch(() => undefined);
    const ok = kind === 'file' ? info?.isFile() : info?.isDirectory();
    if (!ok) throw new TarballRejectedError('not-pgdata', `not a PGDATA: ${name} is missing`);
  }
  let found: PgDataIdentity;
  try {
    found = await readPgDataIdentity(dir);
  } catch (err) {
    throw new TarballRejectedError('not-pgdata', `not a PGDATA: ${(err as Error).message}`);
  }
  if (!expected) return;
  if (found.pgVersion !== expected.pgVersion) {
    throw new TarballRejectedError(
      'incompatible',
      `PGDATA is PostgreSQL ${JSON.stringify(found.pgVersion)}, this server runs ${expected.pgVersion}`,
    );
  }
  if (found.controlVersion !== expected.controlVersion || found.catalogVersion !== expected.catalogVersion) {
    throw new TarballRejectedError(
      'incompatible',
      `PGDATA was made by an incompatible PGlite (catalog version ${found.catalogVersion}, expected ${expected.catalogVersion})`,
    );
  }
}

/**
 * A gzip tarball of the PGDATA at `dir`, with relative member names, streamed. The directory must
 * not change while it is read: pack a closed database or a staged copy.
 */
export function packDataDir(dir: string, opts: { gzipLevel?: number } = {}): Readable {
  const gzip = createGzip({ level: opts.gzipLevel ?? 6 });
  async function* members(): AsyncGenerator<Buffer> {
    const names = (await readdir(dir)).filter((n) => !NOT_ARCHIVED.has(n)).sort();
    const pack = new Pack({ cwd: dir, portable: true });
    for (const name of names) pack.add(name);
    pack.end();
    for await (const chunk of pack) yield chunk as Buffer;
  }
  pipeline(members, gzip).catch((err: Error) => gzip.destroy(err));
  return gzip;
}

/** Packs `dir` into the file `file` (created, must not exist); returns the archive's sha256 and size. */
export async function packToFile(
  dir: string,
  file: string,
  opts: { gzipLevel?: number } = {},
): Promise<{ sha256: string; size: number }> {
  const digest = new Digest();
  const handle = await open(file, 'wx', 0o600);
  try {
    await writeAll(hashed(packDataDir(dir, opts), digest), handle);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return { sha256: digest.sha256(), size: digest.bytes };
}

/** The archive bytes, hashed as they pass. */
export async function* hashed(input: Readable, digest: Digest): AsyncGenerator<Buffer> {
  for await (const chunk of input) {
    const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
    digest.update(buffer);
    yield buffer;
  }
}
