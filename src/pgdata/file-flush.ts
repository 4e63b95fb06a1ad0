import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import path from 'node:path';
import { mapLimited } from './map-limited.js';

/**
 * When the files that writing a PGDATA (a fetch's extraction, its WAL replay) produces reach the
 * disk:
 * - `flushNow`: each file is fdatasync'ed as it is written, and each changed directory fsync'ed,
 *   before the copy is put to use.
 * - `flushOff`: never (FSYNC=off).
 * - `FlushLater`: the files and directories are only recorded, and `flush()` makes them durable
 *   together, after the copy was put to use. A fetched copy serves reads at once while its flush
 *   runs; databases/archiving.ts holds back the acknowledgement of any write until it is done,
 *   and a marker (storage/local-marks.ts) makes a restart after an OS crash fetch the copy again.
 */
export interface FileFlush {
  /** A file's bytes are written (`handle`: it is still open). */
  file(file: string, handle?: FileHandle): Promise<void>;
  /** A directory's entries changed: a file created, removed or renamed in it. */
  dir(dir: string): Promise<void>;
  /** The directory `from` was renamed to `to`: what was recorded under it is now under `to`. */
  moved(from: string, to: string): void;
}

/** fsyncs `p` (fdatasync with `data`); false when it is gone. Directories on file systems without directory fsync pass. */
async function syncPresent(p: string, data = false): Promise<boolean> {
  const handle = await open(p, constants.O_RDONLY).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  });
  if (!handle) return false;
  try {
    await (data ? handle.datasync() : handle.sync());
  } catch (err) {
    // EINVAL: a directory on a file system that cannot fsync one (some FUSE mounts).
    if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
  } finally {
    await handle.close();
  }
  return true;
}

export const flushNow: FileFlush = {
  async file(file, handle) {
    // fdatasync: a file rewritten in place at its old size needs no journal commit for its mtime.
    if (handle) await handle.datasync();
    else await syncPresent(file, true);
  },
  dir: syncDir,
  moved() {},
};

/** fsyncs a directory so renames in it survive a crash; best effort (not every file system can). */
export async function syncDir(dir: string): Promise<void> {
  await syncPresent(dir).catch(() => undefined);
}

export const flushOff: FileFlush = {
  async file() {},
  async dir() {},
  moved() {},
};

/** Files or directories flushed at once by `FlushLater.flush`: it runs beside live work. */
const FLUSH_CONCURRENCY = 4;

export class FlushLater implements FileFlush {
  private files = new Set<string>();
  private dirs = new Set<string>();

  async file(file: string): Promise<void> {
    this.files.add(file);
  }

  async dir(dir: string): Promise<void> {
    this.dirs.add(dir);
  }

  moved(from: string, to: string): void {
    const rebase = (set: Set<string>) =>
      new Set(
        [...set].map((p) =>
          p === from || p.startsWith(`${from}${path.sep}`) ? to + p.slice(from.length) : p,
        ),
      );
    this.files = rebase(this.files);
    this.dirs = rebase(this.dirs);
  }

  /** Files and directories recorded so far. */
  get size(): number {
    return this.files.size + this.dirs.size;
  }

  /**
   * fdatasyncs every file recorded, then fsyncs the directories recorded and every recorded
   * file's directory (which holds its entry). Whatever is gone by now (the copy was dropped
   * meanwhile) is passed over. Returns how many files and directories were synced.
   */
  async flush(): Promise<{ files: number; dirs: number }> {
    const dirs = new Set(this.dirs);
    for (const file of this.files) dirs.add(path.dirname(file));
    const synced = await mapLimited([...this.files], FLUSH_CONCURRENCY, (file) => syncPresent(file, true));
    // Deepest first: a directory's entry in its parent is synced after the directory itself.
    const ordered = [...dirs].sort((a, b) => b.split(path.sep).length - a.split(path.sep).length);
    let dirCount = 0;
    for (const dir of ordered) if (await syncPresent(dir)) dirCount++;
    return { files: synced.filter(Boolean).length, dirs: dirCount };
  }
}
