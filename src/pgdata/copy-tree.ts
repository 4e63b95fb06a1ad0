import { constants } from 'node:fs';
import { copyFile, lstat, mkdir, open, readdir, readlink, symlink } from 'node:fs/promises';
import path from 'node:path';
import { TarballRejectedError } from './tarball.js';

/**
 * Copies a directory tree (a PGDATA: ~1000 mostly small files). `fs.cp` walks it one file at a
 * time with a stat and a chmod each and takes ~1 s; listing first and copying many files at once
 * through the libuv pool takes ~0.1 s, like `cp -r`. File modes come along with copyFile.
 * Symbolic links are copied as links (packing then refuses them); a device, FIFO or socket, which
 * cannot be copied and has no place in a PGDATA, fails the copy.
 */

/** Files copied at once: enough to keep the libuv pool busy, few enough not to exhaust fds. */
const CONCURRENCY = 16;

export interface CopyOptions {
  /** fsync every file and directory of the copy. */
  fsync?: boolean;
  /** Files copied at once. Default 16. */
  concurrency?: number;
  /** Awaited before each file is copied (a background copy pauses there). */
  beforeFile?: () => Promise<void>;
}

export async function copyTree(
  src: string,
  dest: string,
  skip: (name: string) => boolean = () => false,
  opts: CopyOptions = {},
): Promise<void> {
  const files: [string, string][] = [];
  const links: [string, string][] = [];
  const special: string[] = [];
  const dirs: string[] = [];
  const walk = async (from: string, to: string): Promise<void> => {
    const { mode } = await lstat(from);
    await mkdir(to, { mode: mode & 0o7777 });
    dirs.push(to);
    const subdirs: Promise<void>[] = [];
    for (const entry of await readdir(from, { withFileTypes: true })) {
      if (skip(entry.name)) continue;
      const pair: [string, string] = [path.join(from, entry.name), path.join(to, entry.name)];
      if (entry.isDirectory()) subdirs.push(walk(...pair));
      else if (entry.isFile()) files.push(pair);
      else if (entry.isSymbolicLink()) links.push(pair);
      else special.push(pair[0]);
    }
    await Promise.all(subdirs);
  };
  await walk(src, dest);
  // Thrown once the walk is over, so nothing is still writing under `dest` when the caller cleans up.
  if (special.length > 0) {
    throw new TarballRejectedError('special-file', `${special.join(', ')}: a device, FIFO or socket`);
  }
  let next = 0;
  const copier = async (): Promise<void> => {
    while (next < files.length) {
      const [from, to] = files[next++] as [string, string];
      await opts.beforeFile?.();
      await copyFile(from, to);
      if (opts.fsync) await syncPath(to);
    }
  };
  const copiers = Math.min(opts.concurrency ?? CONCURRENCY, files.length);
  await Promise.all(Array.from({ length: copiers }, copier));
  for (const [from, to] of links) await symlink(await readlink(from), to);
  if (opts.fsync) for (const dir of dirs) await syncPath(dir);
}

/** fsyncs a file or directory (a directory's entries survive a crash once it is synced). */
export async function syncPath(p: string): Promise<void> {
  const handle = await open(p, constants.O_RDONLY);
  try {
    await handle.sync();
  } catch (err) {
    // Directories on file systems without directory fsync (some FUSE mounts).
    if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
  } finally {
    await handle.close();
  }
}
