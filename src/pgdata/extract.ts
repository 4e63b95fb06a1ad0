import { randomBytes } from 'node:crypto';
import { lstat, mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { type FileFlush, flushNow } from './file-flush.js';
import { ChecksumMismatchError, Digest, type PgDataIdentity, validatePgData } from './tarball.js';
import { flushOf, pruneExcept, type UnpackOptions, unpack } from './unpack.js';

/**
 * Unpacking PGDATA tarballs. Accepts our own tarballs and PGlite's `dumpDataDir()` output
 * (absolute member names such as `/PG_VERSION`, gzip or plain tar, told apart by the gzip magic
 * bytes), and treats every tarball as hostile: it writes only regular files and directories, into
 * a fresh temporary directory next to the destination, and refuses anything else. Only a
 * complete, valid PGDATA is renamed into place; a failed extraction removes its temporary
 * directory and leaves the destination untouched.
 */

export { safeMemberPath } from './tarball.js';

export interface ExtractOptions extends UnpackOptions {
  /** The PGDATA must match this (major version, control and catalog version). */
  expect?: PgDataIdentity;
  /** Expected sha256 (hex) of the archive bytes as read; a mismatch rejects the result. */
  sha256?: string;
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
    const members = await unpack(input, dir, digest, opts, seeded);
    if (seeded) await pruneExcept(dir, '', members, flushOf(opts));
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
  opts: { replace?: boolean; flush?: FileFlush } = {},
): Promise<void> {
  const flush = opts.flush ?? flushNow;
  const existing = await lstat(dest).catch(() => undefined);
  if (!existing) {
    await rename(staged, dest);
    flush.moved(staged, dest);
    await flush.dir(path.dirname(dest));
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
  flush.moved(staged, dest);
  await flush.dir(path.dirname(dest));
  await rm(aside, { recursive: true, force: true });
}

/** Removes the directory `dir` in one step (renamed aside, then deleted): nothing sees it half-deleted. */
export async function removeDir(dir: string): Promise<void> {
  const aside = siblingTemp(dir, 'old');
  try {
    await rename(dir, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  await rm(aside, { recursive: true, force: true });
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
