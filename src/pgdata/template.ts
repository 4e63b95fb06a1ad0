import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { type CopyOptions, copyTree } from './copy-tree.js';
import { hasPgVersion } from './pg-version.js';

/**
 * New databases are copies of a pre-initialised PGDATA (the template) because PGlite's initdb
 * costs seconds while a copy costs ~0.1 s. The template is rebuilt when the PGlite version (or
 * the initdb options) change.
 */

const STAMP = '.pglite-version';

/** The installed PGlite version, read from its package.json (not exported, so found by path). */
export function pgliteVersion(): string {
  const require = createRequire(import.meta.url);
  const entry = require.resolve('@electric-sql/pglite');
  const pkg = path.join(entry.slice(0, entry.lastIndexOf(`${path.sep}dist${path.sep}`)), 'package.json');
  return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/**
 * initdb options of the template. 1 MB WAL segments instead of 16 MB: a new database is ~23 MB
 * instead of ~39 MB, most of it a freshly zeroed WAL segment, so creating one copies less.
 */
const INITDB_ARGS = ['--wal-segsize=1'];
/**
 * The one start after initdb needs little memory. A node that builds its template keeps much of
 * what the build touched resident until it restarts; PGlite's defaults (128 MB shared_buffers,
 * 100 connections) added ~20-40 MB to that.
 */
export const TEMPLATE_START_PARAMS = [
  ...(PGlite as unknown as { defaultStartParams: string[] }).defaultStartParams,
  ...['-c', 'shared_buffers=2MB', '-c', 'max_connections=10'],
];
/** Changes whenever the template's making changes, so older templates are rebuilt. */
const RECIPE = 'trimmed-wal';

/** Ensures `templateDir` holds a PGDATA made by this PGlite version; returns its path. */
export async function ensureTemplate(templateDir: string): Promise<string> {
  const version = `${pgliteVersion()} ${INITDB_ARGS.join(' ')} ${RECIPE}`;
  const stamp = await readFile(path.join(templateDir, STAMP), 'utf8').catch(() => undefined);
  if (stamp?.trim() === version && (await hasPgVersion(templateDir))) return templateDir;

  await mkdir(path.dirname(templateDir), { recursive: true });
  const tmp = `${templateDir}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const pg = new PGlite({
      dataDir: tmp,
      initDbStartParams: INITDB_ARGS,
      startParams: TEMPLATE_START_PARAMS,
    });
    await pg.waitReady;
    const { rows } = await pg.query<{ file_name: string; file_offset: number }>(
      'SELECT file_name, file_offset FROM pg_catalog.pg_walfile_name_offset(pg_catalog.pg_current_wal_lsn())',
    );
    await pg.close();
    const current = rows[0];
    if (current) await dropRecycledWal(tmp, current.file_name, current.file_offset);
    await writeFile(path.join(tmp, STAMP), `${version}\n`);
    // Another process may have raced us; whichever rename lands first wins, both are equivalent.
    await rm(templateDir, { recursive: true, force: true });
    await rename(tmp, templateDir).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
    });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return templateDir;
}

/**
 * initdb leaves WAL segments past the current one: old segments renamed for reuse, holding
 * stale bytes. A new database does not need them (Postgres creates segments as it goes), and
 * each is 1 MB to copy for every new database. Only done when the shutdown checkpoint written
 * after `current` surely fits in the same segment.
 */
async function dropRecycledWal(dataDir: string, current: string, offset: number): Promise<void> {
  if (offset > 1024 * 1024 - 64 * 1024) return;
  const walDir = path.join(dataDir, 'pg_wal');
  const segment = /^[0-9A-F]{24}$/;
  for (const name of await readdir(walDir)) {
    if (segment.test(name) && name > current) await rm(path.join(walDir, name));
  }
}

/**
 * Materialises a new PGDATA at `dest` from the template, atomically: a crash mid-copy leaves a
 * temp directory, never a half database at `dest`. Fails if `dest` exists. With `fsync`, every
 * file and directory of the copy is flushed before it gets its name.
 */
export async function createFromTemplate(
  templateDir: string,
  dest: string,
  opts: CopyOptions = {},
): Promise<void> {
  if (await exists(dest)) throw new Error(`data directory already exists: ${dest}`);
  const tmp = `${dest}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    await copyTree(templateDir, tmp, (name) => name === STAMP, opts);
    await rename(tmp, dest);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
