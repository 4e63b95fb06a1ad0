import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { syncPath } from '../pgdata/copy-tree.js';
import { syncDir } from '../pgdata/file-flush.js';

/**
 * "Everything this local copy holds is in the archive": a mark per database in
 * `DATA_DIR/_archived/<id>`, holding the sha256 of the copy's `global/pg_control` when it was
 * archived. Postgres rewrites pg_control at every checkpoint (and so at every close), so a copy
 * changed since no longer matches its mark. The mark is written when a closed copy is stored as a
 * version (snapshot, restore, clone, upload) or fetched, and removed when the database opens (so a
 * crash while it is open leaves no mark); a database closed without writes gets it back when it
 * had it at open. Only a marked copy may be dropped from local disk (databases/local-cache.ts).
 */

const MARKS = '_archived';

function markFile(dir: string): string {
  return path.join(path.dirname(dir), MARKS, path.basename(dir));
}

async function controlHash(dir: string): Promise<string | undefined> {
  const bytes = await readFile(path.join(dir, 'global', 'pg_control')).catch(() => undefined);
  return bytes ? createHash('sha256').update(bytes).digest('hex') : undefined;
}

/** Records that the copy at `dir`, as it is now, is in the archive. */
export async function markArchived(dir: string): Promise<void> {
  const hash = await controlHash(dir);
  if (!hash) return;
  const file = markFile(dir);
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  await writeFile(tmp, hash);
  await rename(tmp, file);
}

/** Whether the copy at `dir` is unchanged since it was marked archived. */
export async function isMarkedArchived(dir: string): Promise<boolean> {
  const mark = await readFile(markFile(dir), 'utf8').catch(() => undefined);
  return mark !== undefined && mark === (await controlHash(dir));
}

export async function unmarkArchived(dir: string): Promise<void> {
  await rm(markFile(dir), { force: true });
}

/** The marked databases of `dataDir`, with when each was marked (its last close, as a rule). */
export async function listMarked(dataDir: string): Promise<{ id: string; markedAt: number }[]> {
  const dir = path.join(dataDir, MARKS);
  const names = await readdir(dir).catch(() => [] as string[]);
  const marks: { id: string; markedAt: number }[] = [];
  for (const id of names) {
    if (id.endsWith('.tmp')) continue;
    const info = await stat(path.join(dir, id)).catch(() => undefined);
    if (info) marks.push({ id, markedAt: info.mtimeMs });
  }
  return marks;
}

/**
 * "This local copy was fetched and may not be on disk yet": a mark per database in
 * `DATA_DIR/_unflushed/<id>`, made durable before a fetch (FSYNC=on) writes anything and removed
 * once everything the fetch wrote was flushed (pgdata/file-flush.ts). Until then no write to the
 * copy is acknowledged (databases/archiving.ts), so a restart that finds the mark (an OS crash
 * mid-flush) drops the copy and fetches it again: nothing in it is missing from the archive.
 */
const UNFLUSHED = '_unflushed';

function unflushedFile(dir: string): string {
  return path.join(path.dirname(dir), UNFLUSHED, path.basename(dir));
}

/** Marks the copy at `dir` (not there yet) as not flushed, durably, before it is written. */
export async function markUnflushed(dir: string): Promise<void> {
  const file = unflushedFile(dir);
  const created = await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, '');
  await syncPath(file);
  await syncDir(path.dirname(file));
  if (created) await syncDir(path.dirname(path.dirname(file)));
}

/** Everything the fetch into `dir` wrote is on disk: its writes may be acknowledged from now on. */
export async function clearUnflushed(dir: string): Promise<void> {
  const file = unflushedFile(dir);
  await rm(file, { force: true });
  await syncDir(path.dirname(file));
}

/** The databases of `dataDir` whose fetched copy was not flushed when the node last stopped. */
export async function listUnflushed(dataDir: string): Promise<string[]> {
  return readdir(path.join(dataDir, UNFLUSHED)).catch(() => [] as string[]);
}

/**
 * "This local copy belongs to this incarnation of the id": `DATA_DIR/_incarnation/<id>` holds the
 * catalog's incarnation of the database the copy was made for. A database deleted and created
 * again under the same id gets a new incarnation, so a copy another node kept of the earlier one
 * is never served as the new one (cluster/node.ts). Written durably: a lost mark only costs a
 * fetch, but a mark must never outlive the copy it describes by naming a newer incarnation.
 */
const INCARNATION = '_incarnation';

function incarnationFile(dir: string): string {
  return path.join(path.dirname(dir), INCARNATION, path.basename(dir));
}

/** The incarnation the copy at `dir` was made for; undefined when unknown (no mark). */
export async function readIncarnation(dir: string): Promise<string | undefined> {
  return readFile(incarnationFile(dir), 'utf8').catch(() => undefined);
}

/** Records that the copy at `dir` (or the one about to be made there) is of `incarnation`. */
export async function writeIncarnation(dir: string, incarnation: string): Promise<void> {
  const file = incarnationFile(dir);
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  await writeFile(tmp, incarnation);
  await syncPath(tmp);
  await rename(tmp, file);
  await syncDir(path.dirname(file));
}

export async function forgetIncarnation(dir: string): Promise<void> {
  await rm(incarnationFile(dir), { force: true });
}
