import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';

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
