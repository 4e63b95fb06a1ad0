import { constants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import path from 'node:path';

/**
 * PG_VERSION, the file that marks a directory as a PGDATA (initdb writes it; PGlite runs initdb
 * into a directory without it). Every "is there a database here?" check goes through here.
 */

export const PG_VERSION = 'PG_VERSION';

/** Whether `dir` holds a PGDATA: its PG_VERSION is a regular file (not followed if a symlink). */
export async function hasPgVersion(dir: string): Promise<boolean> {
  return lstat(path.join(dir, PG_VERSION)).then(
    (info) => info.isFile(),
    () => false,
  );
}

/** The major version in `dir`'s PG_VERSION (e.g. '17'), trimmed. Throws when it is missing or not a file. */
export async function readPgVersion(dir: string): Promise<string> {
  return (await readSmallFile(path.join(dir, PG_VERSION), 64)).toString('utf8').trim();
}

/** Up to `max` bytes of a regular file, refusing symlinks and anything else that is not a file. */
export async function readSmallFile(file: string, max: number): Promise<Buffer> {
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
