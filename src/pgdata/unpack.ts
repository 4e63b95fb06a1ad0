import { constants } from 'node:fs';
import { mkdir, open, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { Parser, type ReadEntry } from 'tar';
import { type FileFlush, flushNow, flushOff } from './file-flush.js';
import {
  DEFAULT_MAX_ENTRIES,
  DELTA_MEMBER,
  type Digest,
  hashed,
  MemberCheck,
  type PlannedMember,
  TarballRejectedError,
  writeAll,
} from './tarball.js';
import {
  fillFromTemplate,
  MAX_MANIFEST_BYTES,
  parseManifest,
  type TemplateSource,
} from './template-delta.js';

/**
 * The writing half of extraction (extract.ts stages, validates and installs): parses a gzip or
 * plain tar stream member by member, judges each by `MemberCheck`, and writes regular files and
 * directories under a root, many small files at once. A delta base's manifest (its first member)
 * has the files it names put in place from the template before anything else is written.
 */

export interface UnpackOptions {
  /** Largest uncompressed tar stream accepted; extraction stops as soon as it is passed. */
  maxBytes: number;
  /** Largest number of members accepted. Default `DEFAULT_MAX_ENTRIES`. */
  maxEntries?: number;
  /** fsync every extracted file before the directory is renamed into place. Default true. */
  fsync?: boolean;
  /** How written files reach the disk (file-flush.ts); given, it overrides `fsync`. */
  flush?: FileFlush | undefined;
  /** Where the files a delta base leaves out come from (template-delta.ts); without it one is refused. */
  template?: TemplateSource | undefined;
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
  flush: FileFlush,
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
  await writeFileAt(target, entry, flush);
}

/**
 * Creates `target` (O_NOFOLLOW: belt and braces, since nothing here creates a symlink) with
 * `data`, or writes over the file there (a seed's copy) in place and cuts it to the new size.
 * Not O_TRUNC: ext4 (auto_da_alloc) flushes a file truncated to zero and rewritten when it is
 * closed, so every rewritten file waited for the disk, hundreds of ms when it was busy.
 */
async function writeFileAt(target: string, data: AsyncIterable<Uint8Array>, flush: FileFlush): Promise<void> {
  const handle = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  try {
    const written = await writeAll(data, handle);
    if ((await handle.stat()).size !== written) await handle.truncate(written);
    await flush.file(target, handle);
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
export async function pruneExcept(
  root: string,
  relative: string,
  keep: ReadonlySet<string>,
  flush: FileFlush = flushOff,
): Promise<void> {
  const dir = path.join(root, relative);
  const entries = await readdir(dir, { withFileTypes: true });
  let removed = false;
  await Promise.all(
    entries.map(async (entry) => {
      const name = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (!keep.has(name)) {
        await rm(path.join(root, name), { recursive: true, force: true });
        removed = true;
      } else if (entry.isDirectory()) await pruneExcept(root, name, keep, flush);
    }),
  );
  // A removed file must not come back after a crash (a stale WAL segment or relation file).
  if (removed) await flush.dir(dir);
}

/** How `opts` has written files reach the disk. */
export function flushOf(opts: Pick<UnpackOptions, 'fsync' | 'flush'>): FileFlush {
  return opts.flush ?? ((opts.fsync ?? true) ? flushNow : flushOff);
}

/** Unpacks into `root`; returns the relative paths written (files, directories and their parents). */
export async function unpack(
  input: Readable,
  root: string,
  digest: Digest,
  opts: UnpackOptions,
  seeded: boolean,
): Promise<Set<string>> {
  const check = new MemberCheck(opts.maxEntries);
  const flush = flushOf(opts);
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
    // The member may have been written whole already, with nobody listening for its errors: an
    // 'error' with no listener would throw out of this function, inside the promise handler
    // that called it, and surface as an unhandled rejection (a crash in production).
    current?.on('error', () => undefined);
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
  // A delta base's manifest comes first; nothing is written until the files it names are in place.
  let ready: Promise<void> = Promise.resolve();
  const whenReady = () => Promise.race([ready, failed]);
  const readManifest = (entry: ReadEntry) => {
    const template = opts.template;
    if (check.entries !== 1 || !template) {
      throw check.entries !== 1
        ? new TarballRejectedError('corrupt', `${DELTA_MEMBER} must be the first member`)
        : new TarballRejectedError('incompatible', 'a delta base needs a template to fill in; none is given');
    }
    const chunks: Buffer[] = [];
    let size = 0;
    entry.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_MANIFEST_BYTES + 1) chunks.push(chunk);
    });
    ready = new Promise<void>((resolve) => entry.on('end', resolve))
      .then(async () => {
        const manifest = parseManifest(Buffer.concat(chunks), opts.maxEntries ?? DEFAULT_MAX_ENTRIES);
        for (const [name] of manifest.files) remember(name);
        await fillFromTemplate(root, manifest, template, { seeded, flush });
      })
      .catch((err: unknown) => fail(err));
  };
  const writeBuffered = (entry: ReadEntry, planned: PlannedMember) => {
    const chunks: Buffer[] = [];
    entry.on('data', (chunk: Buffer) => chunks.push(chunk));
    entry.on('end', () => {
      const size = entry.size;
      buffered += size;
      const write: Promise<void> = (async () => {
        await whenReady();
        if (failure !== undefined) return;
        const target = path.join(root, planned.relative);
        if (!made.has(path.dirname(target))) {
          await mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
          made.add(path.dirname(target));
        }
        await writeFileAt(target, fromChunks(chunks), flush);
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
      if (planned.kind === 'file' && planned.relative === DELTA_MEMBER) {
        readManifest(entry);
        return;
      }
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
      await whenReady();
      await Promise.all(writing);
      current = entry;
      await writeMember(root, entry, planned, flush, made).catch((err: unknown) => {
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
  await whenReady();
  if (failure !== undefined) {
    input.destroy();
    throw failure;
  }
  // A tar stream that ends without members is not an error to the parser; it is not a PGDATA either.
  if (check.entries === 0) throw new TarballRejectedError('not-pgdata', 'the tarball has no members');
  return members;
}
