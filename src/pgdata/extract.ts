import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { Parser, type ReadEntry } from 'tar';
import {
  ChecksumMismatchError,
  Digest,
  hashed,
  MemberCheck,
  type PgDataIdentity,
  type PlannedMember,
  TarballRejectedError,
  validatePgData,
  writeAll,
} from './tarball.js';

/**
 * Unpacking PGDATA tarballs. Accepts our own tarballs and PGlite's `dumpDataDir()` output
 * (absolute member names such as `/PG_VERSION`, gzip or plain tar, told apart by the gzip magic
 * bytes), and treats every tarball as hostile: it writes only regular files and directories, into
 * a fresh temporary directory next to the destination, and refuses anything else. Only a
 * complete, valid PGDATA is renamed into place; a failed extraction removes its temporary
 * directory and leaves the destination untouched.
 */

export { safeMemberPath } from './tarball.js';

export interface ExtractOptions {
  /** Largest uncompressed tar stream accepted; extraction stops as soon as it is passed. */
  maxBytes: number;
  /** Largest number of members accepted. Default `DEFAULT_MAX_ENTRIES`. */
  maxEntries?: number;
  /** The PGDATA must match this (major version, control and catalog version). */
  expect?: PgDataIdentity;
  /** Expected sha256 (hex) of the archive bytes as read; a mismatch rejects the result. */
  sha256?: string;
  /** fsync every extracted file before the directory is renamed into place. Default true. */
  fsync?: boolean;
  /**
   * Puts a ready-made PGDATA of the same template at the given (absent) path and says whether it
   * did: the tarball is then written over it and what the tarball lacks is removed. On this kind
   * of disk creating a file costs ~10× rewriting one, and a PGDATA is ~1000 files, so a fetch
   * over a spare copy is several times faster than into an empty directory.
   */
  seed?: (dir: string) => Promise<boolean>;
}

export interface StagedDir {
  /** The extracted, validated PGDATA: a temporary directory the caller installs or removes. */
  dir: string;
  /** sha256 (hex) and size of the archive bytes read (compressed, as stored). */
  sha256: string;
  size: number;
}

/** A fresh, hidden (never a valid database id) path next to `target`. */
export function siblingTemp(target: string, purpose: string): string {
  return path.join(
    path.dirname(target),
    `.${path.basename(target)}.${purpose}-${randomBytes(6).toString('hex')}`,
  );
}

/**
 * Extracts `input` into a new temporary directory next to `target` (same file system, so it can be
 * renamed there), then checks the checksum and that the result is a PGDATA. On any failure the
 * temporary directory is removed and the error rethrown; `target` is never touched.
 */
export async function stageTarball(
  input: Readable,
  target: string,
  opts: ExtractOptions,
): Promise<StagedDir> {
  await mkdir(path.dirname(target), { recursive: true });
  const dir = siblingTemp(target, 'extract');
  const seeded = opts.seed ? await opts.seed(dir).catch(() => false) : false;
  if (!seeded) await mkdir(dir, { mode: 0o700 });
  try {
    const digest = new Digest();
    const members = await unpack(input, dir, digest, opts);
    if (seeded) await pruneExcept(dir, '', members);
    const sha256 = digest.sha256();
    if (opts.sha256 !== undefined && sha256 !== opts.sha256) {
      throw new ChecksumMismatchError(`archive checksum mismatch: got ${sha256}, expected ${opts.sha256}`);
    }
    await validatePgData(dir, opts.expect);
    return { dir, sha256, size: digest.bytes };
  } catch (err) {
    input.destroy();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * Moves the directory `staged` to `dest` atomically. Without `replace`, `dest` must not exist.
 * With `replace`, an existing `dest` is renamed aside, the new one renamed in, and the old one
 * removed: at every instant `dest` is either the complete old or the complete new directory
 * (or, for the moment between the two renames, absent).
 */
export async function installDir(
  staged: string,
  dest: string,
  opts: { replace?: boolean } = {},
): Promise<void> {
  const existing = await lstat(dest).catch(() => undefined);
  if (!existing) {
    await rename(staged, dest);
    await syncDir(path.dirname(dest));
    return;
  }
  if (!opts.replace) throw new Error(`destination already exists: ${dest}`);
  const aside = siblingTemp(dest, 'old');
  await rename(dest, aside);
  try {
    await rename(staged, dest);
  } catch (err) {
    await rename(aside, dest).catch(() => undefined);
    throw err;
  }
  await syncDir(path.dirname(dest));
  await rm(aside, { recursive: true, force: true });
}

/** fsyncs a directory so renames in it survive a crash; best effort (not every file system can). */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY).catch(() => undefined);
  if (!handle) return;
  try {
    await handle.sync();
  } catch {
    // EINVAL/EISDIR on file systems without directory fsync (some FUSE mounts).
  } finally {
    await handle.close();
  }
}

/** Stages and installs in one step; returns the archive's sha256 and size. */
export async function extractTarball(
  input: Readable,
  destDir: string,
  opts: ExtractOptions & { replace?: boolean },
): Promise<{ sha256: string; size: number }> {
  const staged = await stageTarball(input, destDir, opts);
  try {
    await installDir(staged.dir, destDir, { replace: opts.replace ?? false });
  } catch (err) {
    await rm(staged.dir, { recursive: true, force: true });
    throw err;
  }
  return { sha256: staged.sha256, size: staged.size };
}

const GZIP_MAGIC = [0x1f, 0x8b] as const;
const isGzip = (b: Buffer) => b[0] === GZIP_MAGIC[0] && b[1] === GZIP_MAGIC[1];

/** The plain tar stream: gunzipped when the archive starts with the gzip magic bytes. */
async function* plainTar(source: AsyncGenerator<Buffer>): AsyncGenerator<Buffer> {
  let head = Buffer.alloc(0);
  let ended = false;
  while (head.length < 2) {
    const next = await source.next();
    if (next.done) {
      ended = true;
      break;
    }
    head = Buffer.concat([head, next.value]);
  }
  async function* rest(): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head;
    if (!ended) yield* source;
  }
  if (!isGzip(head)) {
    yield* rest();
    return;
  }
  const gunzip = createGunzip({ chunkSize: 256 * 1024 });
  const done = pipeline(rest, gunzip);
  done.catch(() => undefined);
  try {
    for await (const chunk of gunzip) yield chunk as Buffer;
    await done;
  } catch (err) {
    // zlib errors (Z_DATA_ERROR, Z_BUF_ERROR for a truncated stream) mean a bad archive; anything
    // else (the source failing) is passed on as it is.
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code.startsWith('Z_')) {
      throw new TarballRejectedError('corrupt', `corrupt gzip stream: ${(err as Error).message}`);
    }
    throw err;
  } finally {
    gunzip.destroy();
  }
}

async function writeMember(
  root: string,
  entry: ReadEntry,
  planned: PlannedMember,
  fsync: boolean,
  made: Set<string>,
): Promise<void> {
  if (planned.kind === 'skip') {
    entry.resume();
    return;
  }
  const target = path.join(root, planned.relative);
  const ensureDir = async (dir: string) => {
    if (made.has(dir)) return;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    made.add(dir);
  };
  if (planned.kind === 'directory') {
    entry.resume();
    await ensureDir(target);
    return;
  }
  await ensureDir(path.dirname(target));
  await writeFileAt(target, entry, fsync);
}

/** Creates `target` (O_NOFOLLOW: belt and braces, since nothing here creates a symlink) with `data`. */
async function writeFileAt(target: string, data: AsyncIterable<Uint8Array>, fsync: boolean): Promise<void> {
  const handle = await open(
    target,
    constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    await writeAll(data, handle);
    if (fsync) await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * A PGDATA is ~1000 mostly small files: written one after another, each file's open, write,
 * fsync and close round trips through the libuv pool dominate a fetch. Members up to this size are
 * read into memory and written concurrently (bounded by count and bytes); larger ones stream.
 */
const SMALL_MEMBER = 2 * 1024 * 1024;

async function* fromChunks(chunks: Buffer[]): AsyncGenerator<Buffer> {
  yield* chunks;
}
const MAX_CONCURRENT_WRITES = 16;
const MAX_BUFFERED_BYTES = 32 * 1024 * 1024;

/**
 * A member that collides with an earlier one (a file where a directory is, or the reverse) is a
 * malformed tarball, not a server fault.
 */
function asConflict(err: unknown, member: string): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EISDIR' || code === 'ENOTDIR' || code === 'EEXIST' || code === 'ELOOP') {
    return new TarballRejectedError(
      'corrupt',
      `member ${JSON.stringify(member)} conflicts with another member`,
    );
  }
  return err;
}

/** Removes everything under `root/relative` that is not one of `keep` (relative paths). */
async function pruneExcept(root: string, relative: string, keep: ReadonlySet<string>): Promise<void> {
  const entries = await readdir(path.join(root, relative), { withFileTypes: true });
  await Promise.all(
    entries.map(async (entry) => {
      const name = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (!keep.has(name)) await rm(path.join(root, name), { recursive: true, force: true });
      else if (entry.isDirectory()) await pruneExcept(root, name, keep);
    }),
  );
}

/** Unpacks into `root`; returns the relative paths written (files, directories and their parents). */
async function unpack(
  input: Readable,
  root: string,
  digest: Digest,
  opts: ExtractOptions,
): Promise<Set<string>> {
  const check = new MemberCheck(opts.maxEntries);
  const members = new Set<string>();
  const remember = (relative: string) => {
    for (let p = relative; p !== '' && p !== '.' && !members.has(p); p = path.posix.dirname(p))
      members.add(p);
  };
  const parser = new Parser({ strict: true, zstd: false, brotli: false });
  let failure: unknown;
  let signalFailure: () => void = () => undefined;
  const failed = new Promise<void>((resolve) => {
    signalFailure = resolve;
  });
  /** The member whose body is being written; destroyed on failure so its write ends. */
  let current: ReadEntry | undefined;
  const fail = (err: unknown) => {
    if (failure !== undefined) return;
    failure = err;
    signalFailure();
    current?.destroy(err instanceof Error ? err : new Error(String(err)));
  };
  let declared = 0;
  /** Directories known to exist (created here; nothing but this code writes under `root`). */
  const made = new Set<string>([root]);
  // Large members are written one after another (the parser waits for each to be consumed);
  // small ones are buffered and written concurrently, bounded below before more input is parsed.
  let chain = Promise.resolve();
  const writing = new Set<Promise<void>>();
  let buffered = 0;
  const writeBuffered = (entry: ReadEntry, planned: PlannedMember) => {
    const chunks: Buffer[] = [];
    entry.on('data', (chunk: Buffer) => chunks.push(chunk));
    entry.on('end', () => {
      const size = entry.size;
      buffered += size;
      const write: Promise<void> = (async () => {
        const target = path.join(root, planned.relative);
        if (!made.has(path.dirname(target))) {
          await mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
          made.add(path.dirname(target));
        }
        await writeFileAt(target, fromChunks(chunks), opts.fsync ?? true);
      })()
        .catch((err: unknown) => fail(asConflict(err, entry.path)))
        .finally(() => {
          buffered -= size;
          writing.delete(write);
        });
      writing.add(write);
    });
  };
  const roomToWrite = async () => {
    while (failure === undefined && (writing.size >= MAX_CONCURRENT_WRITES || buffered > MAX_BUFFERED_BYTES))
      await Promise.race([...writing, failed]);
  };
  parser.on('entry', (entry: ReadEntry) => {
    let planned: PlannedMember;
    try {
      if (failure !== undefined) throw failure;
      planned = check.plan(entry);
      if (planned.kind !== 'skip') remember(planned.relative);
      declared += entry.size;
      if (declared > opts.maxBytes) {
        throw new TarballRejectedError('too-large', `contents exceed ${opts.maxBytes} bytes`);
      }
    } catch (err) {
      fail(err);
      entry.resume();
      return;
    }
    if (planned.kind === 'file' && entry.size <= SMALL_MEMBER) {
      writeBuffered(entry, planned);
      return;
    }
    chain = chain.then(async () => {
      if (failure !== undefined) {
        entry.resume();
        return;
      }
      // Its directory may be one a buffered write is still creating.
      await Promise.all(writing);
      current = entry;
      await writeMember(root, entry, planned, opts.fsync ?? true, made).catch((err: unknown) => {
        fail(asConflict(err, entry.path));
        entry.resume();
      });
      current = undefined;
    });
  });
  parser.on('error', (err: Error) =>
    fail(new TarballRejectedError('corrupt', `corrupt tar stream: ${err.message}`)),
  );
  const ended = new Promise<void>((resolve) => parser.on('end', () => resolve()));

  const tar = plainTar(hashed(input, digest));
  let total = 0;
  try {
    for await (const chunk of tar) {
      if (failure !== undefined) break;
      if (total === 0 && isGzip(chunk)) {
        fail(new TarballRejectedError('corrupt', 'nested compression is not accepted'));
        break;
      }
      total += chunk.length;
      if (total > opts.maxBytes) {
        fail(new TarballRejectedError('too-large', `tarball exceeds ${opts.maxBytes} bytes uncompressed`));
        break;
      }
      if (!parser.write(chunk)) {
        await Promise.race([new Promise((resolve) => parser.once('drain', resolve)), failed]);
      }
      await roomToWrite();
    }
  } catch (err) {
    fail(err);
  }
  if (failure === undefined) {
    parser.end();
    await Promise.race([ended, failed]);
  }
  await chain;
  await Promise.all(writing);
  if (failure !== undefined) {
    input.destroy();
    throw failure;
  }
  // A tar stream that ends without members is not an error to the parser; it is not a PGDATA either.
  if (check.entries === 0) throw new TarballRejectedError('not-pgdata', 'the tarball has no members');
  return members;
}
