import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import { type FileHandle, lstat, open, readdir } from 'node:fs/promises';
import path from 'node:path';
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { Pack, type ReadEntry, type WriteEntry } from 'tar';
import { PG_VERSION, readPgVersion, readSmallFile } from './pg-version.js';

/**
 * PGDATA directories as tarballs, streaming: nothing holds a whole tarball in memory. This file
 * packs (relative member names such as `PG_VERSION`, `base/1/112`, into a gzip stream), checks
 * that a directory is a PGDATA, and names the ways a tarball is refused; extract.ts unpacks.
 * Packing and unpacking judge members by the same rules (`MemberCheck`, `validatePgData`), so a
 * tarball made here is one extraction accepts: a snapshot that could not be restored fails
 * instead of being stored.
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

/** The first member of a delta base (template-delta.ts): its manifest, never written to disk. */
export const DELTA_MEMBER = 'pg_gateway_delta';

/** Default cap on members in one tarball; an empty PGlite PGDATA has about 1,000. */
export const DEFAULT_MAX_ENTRIES = 100_000;

/** What extraction does with a member. */
export interface PlannedMember {
  /** 'skip': read and discarded (files describing a running server, e.g. postmaster.pid). */
  kind: 'file' | 'directory' | 'skip';
  /** Normalised relative path; '' for the root directory entry itself. */
  relative: string;
}

/** A tar member as far as the rules look at it (tar's `ReadEntry` is one). */
export interface MemberHeader {
  path: string;
  /** tar's type name: 'File', 'Directory', 'SymbolicLink', 'Link', 'FIFO', ... */
  type: string;
  linkpath?: string | undefined;
}

const FILE_TYPES = new Set(['File', 'OldFile', 'ContiguousFile']);

/**
 * Maps a member name to a path relative to the extraction root, or throws. A leading '/' is
 * re-rooted (PGlite's dumpDataDir writes `/PG_VERSION`), so an absolute name can never leave the
 * root; any `..` component is refused outright, as are NUL bytes and backslashes.
 */
export function safeMemberPath(name: string): string {
  if (name.includes('\0') || name.includes('\\')) {
    throw new TarballRejectedError('unsafe-path', `unsafe member name ${JSON.stringify(name)}`);
  }
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) {
    throw new TarballRejectedError(
      'unsafe-path',
      `member name escapes the directory: ${JSON.stringify(name)}`,
    );
  }
  return parts.join('/');
}

/**
 * Names a PGDATA has at its top level. Anything else is refused: it would be junk at best, and
 * this is what turns an absolute name outside the data directory (`/etc/cron.d/x`, re-rooted to
 * `etc/cron.d/x`) into a rejection rather than a stray file.
 */
const PGDATA_TOP_LEVEL =
  /^(PG_VERSION|base|global|pg_[a-z_]+|pg_hba\.conf|pg_ident\.conf|postgresql\.conf|postgresql\.auto\.conf|postmaster\.pid|postmaster\.opts|current_logfiles|log|backup_label|backup_manifest|tablespace_map|standby\.signal|recovery\.signal|\.pglite-version)$/;

/**
 * The rules every member of a PGDATA tarball must pass, whether it is being unpacked (extract.ts)
 * or packed (`packDataDir`): a safe path inside a PGDATA, a regular file or a directory (no links,
 * devices, FIFOs), and at most `maxEntries` members. Throws `TarballRejectedError`.
 */
export class MemberCheck {
  /** Members seen so far. */
  entries = 0;
  /** Paths of the file members so far: a second one would be written at the same time as the first. */
  private readonly files = new Set<string>();

  constructor(private readonly maxEntries = DEFAULT_MAX_ENTRIES) {}

  plan(member: MemberHeader): PlannedMember {
    if (++this.entries > this.maxEntries) {
      throw new TarballRejectedError('too-many-entries', `more than ${this.maxEntries} members`);
    }
    const relative = safeMemberPath(member.path);
    const top = relative.split('/')[0] ?? '';
    if (relative !== '' && !PGDATA_TOP_LEVEL.test(top)) {
      throw new TarballRejectedError(
        'unsafe-path',
        `member ${JSON.stringify(member.path)} is not part of a PGDATA`,
      );
    }
    if (member.type === 'Directory') return { kind: 'directory', relative };
    if (FILE_TYPES.has(member.type)) {
      if (relative === '') throw new TarballRejectedError('unsafe-path', 'file member without a name');
      if (NOT_ARCHIVED.has(relative)) return { kind: 'skip', relative };
      // tar allows a later copy to replace an earlier one; here the two would be written at once
      // and interleave. No PGDATA tarball has one.
      if (this.files.has(relative)) {
        throw new TarballRejectedError('corrupt', `member ${JSON.stringify(member.path)} is named twice`);
      }
      this.files.add(relative);
      return { kind: 'file', relative };
    }
    if (member.type === 'SymbolicLink' || member.type === 'Link') {
      throw new TarballRejectedError(
        'link',
        `link member ${JSON.stringify(member.path)} -> ${JSON.stringify(member.linkpath ?? '')}: a PGDATA has no links`,
      );
    }
    throw new TarballRejectedError(
      'special-file',
      `member ${JSON.stringify(member.path)} has unsupported type ${member.type}`,
    );
  }
}

/** tar's type name for a file system entry (tar itself leaves out all but the first three). */
function typeOf(stat: Stats): string {
  if (stat.isFile()) return 'File';
  if (stat.isDirectory()) return 'Directory';
  if (stat.isSymbolicLink()) return 'SymbolicLink';
  if (stat.isFIFO()) return 'FIFO';
  if (stat.isCharacterDevice()) return 'CharacterDevice';
  if (stat.isBlockDevice()) return 'BlockDevice';
  return stat.isSocket() ? 'Socket' : 'Unknown';
}

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
  const pgVersion = await readPgVersion(dir);
  const control = await readSmallFile(path.join(dir, 'global', 'pg_control'), 8192);
  if (control.length < 16) throw new Error('global/pg_control is too short');
  return { pgVersion, controlVersion: control.readUInt32LE(8), catalogVersion: control.readUInt32LE(12) };
}

/**
 * Throws `TarballRejectedError` unless `dir` is a PGDATA: PG_VERSION, global/pg_control,
 * global/pg_filenode.map, base/ and pg_wal/ present, and, when `expected` is given, the same major version, control and catalog version.
 */
export async function validatePgData(dir: string, expected?: PgDataIdentity): Promise<void> {
  for (const [name, kind] of [
    [PG_VERSION, 'file'],
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

export interface PackOptions {
  /** gzip level. Default 6. */
  gzipLevel?: number;
  /** The PGDATA must match this, as extraction will require (see `validatePgData`). */
  expect?: PgDataIdentity;
  /** Largest number of members, as for extraction. Default `DEFAULT_MAX_ENTRIES`. */
  maxEntries?: number;
  /**
   * Packs a delta base (template-delta.ts `deltaPacking`): `first` is written as the first
   * member, and the files named in `omit` (relative paths) are left out.
   */
  delta?: (dir: string) => Promise<{ first: Buffer; omit: ReadonlySet<string> }>;
}

/**
 * A gzip tarball of the PGDATA at `dir`, with relative member names, streamed. The directory must
 * not change while it is read: pack a closed database or a staged copy. The stream fails with
 * `TarballRejectedError` when `dir` is not a PGDATA extraction would accept: `validatePgData`
 * first, then `MemberCheck` judges every member as its header is written, so what is checked is
 * what is stored. Entries tar would silently leave out (devices, FIFOs, sockets) are refused too.
 */
export function packDataDir(dir: string, opts: PackOptions = {}): Readable {
  const gzip = createGzip({ level: opts.gzipLevel ?? 6 });
  async function* members(): AsyncGenerator<Buffer> {
    await validatePgData(dir, opts.expect);
    let refused: unknown;
    const refuse = (err: unknown) => {
      refused ??= err;
    };
    const check = new MemberCheck(opts.maxEntries);
    const delta = opts.delta ? await opts.delta(dir) : undefined;
    const omit = delta?.omit ?? new Set<string>();
    // Called with each member just before its header is written, as extraction will read it.
    const onWriteEntry = (entry: WriteEntry) => {
      try {
        check.plan({ path: entry.path, type: entry.type ?? 'Unsupported', linkpath: entry.linkpath });
      } catch (err) {
        refuse(err);
      }
    };
    const filter = (name: string, stat: Stats | ReadEntry) => {
      if (omit.has(name)) return false;
      // Packing a directory, tar passes its lstat results (ReadEntry is for re-packing a tarball).
      const type = 'isFIFO' in stat ? typeOf(stat) : stat.type;
      if (type === 'File' || type === 'Directory' || type === 'SymbolicLink') return true;
      try {
        new MemberCheck().plan({ path: name, type });
      } catch (err) {
        refuse(err);
      }
      return false;
    };
    const names = (await readdir(dir)).filter((n) => !NOT_ARCHIVED.has(n)).sort();
    const pack = new Pack({ cwd: dir, portable: true, filter, onWriteEntry });
    let packed = false;
    try {
      if (delta) {
        check.plan({ path: DELTA_MEMBER, type: 'File' });
        yield delta.first;
      }
      for (const name of names) pack.add(name);
      pack.end();
      for await (const chunk of pack) {
        if (refused !== undefined) throw refused;
        yield chunk as Buffer;
      }
      packed = true;
      if (refused !== undefined) throw refused;
    } finally {
      // Left midway (refused, or the consumer failed): let the rest flow to nowhere so its open
      // files close. Destroying the Pack instead makes its pending entries throw, uncaught.
      if (!packed) {
        pack.on('error', () => undefined);
        pack.resume();
      }
    }
  }
  pipeline(members, gzip).catch((err: Error) => gzip.destroy(err));
  return gzip;
}

/** Packs `dir` into the file `file` (created, must not exist); returns the archive's sha256 and size. */
export async function packToFile(
  dir: string,
  file: string,
  opts: PackOptions = {},
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
