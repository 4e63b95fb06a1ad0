import { mkdir, readdir, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { pgliteStartParams, postgresSettings } from '../engine/pglite-open.js';
import { hasPgVersion } from '../pgdata/pg-version.js';
import { createFromTemplate } from '../pgdata/template.js';
import type { Catalog, SqlClient } from './catalog.js';
import { openSqlCatalog } from './sql-catalog.js';

export interface EmbeddedCatalogOptions {
  /** PGDATA of the catalog (the app uses `DATA_DIR/_catalog`); created from the template when absent. */
  dir: string;
  /** Pre-initialised PGlite PGDATA (see `databases/template.ts`), copied instead of running initdb. */
  templateDir: string;
}

/**
 * The catalog is a few small tables read on every login, so it gets the databases' pinned
 * settings (see postgresSettings) with 8 MiB of shared_buffers: PGlite's defaults (128 MB
 * shared_buffers, 100 connections) kept ~260 MB resident for as long as the node ran, the largest
 * part of its memory at rest; this way it is ~125 MB (BENCHMARKS.md, memory at rest).
 */
const CATALOG_SHARED_BUFFERS = 8 * 1024 * 1024;

/**
 * PGlite attaches the bound parameters to its errors (`err.params`); for the catalog those are
 * SCRAM verifiers, which must not reach logs. SQLSTATE, message and query text are kept.
 */
function scrub(err: unknown): unknown {
  if (typeof err === 'object' && err !== null && 'params' in err) {
    (err as { params: unknown }).params = undefined;
  }
  return err;
}

async function scrubbed<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    throw scrub(err);
  }
}

/** Copies the template into `dir` unless it already holds a PGDATA. */
async function materialise(dir: string, templateDir: string): Promise<void> {
  if (await hasPgVersion(dir)) return;
  const entries = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (entries !== undefined) {
    // Never overwrite something we did not create; an empty directory (e.g. a fresh volume mount
    // point) is the only thing safe to take over.
    if (entries.length > 0) throw new Error(`catalog directory ${dir} is not empty and holds no PGDATA`);
    await rmdir(dir);
  }
  await mkdir(path.dirname(dir), { recursive: true });
  await createFromTemplate(templateDir, dir);
}

/** The embedded catalog's PGlite, with what archiving it needs beyond SQL. */
export interface EmbeddedPglite {
  client: SqlClient;
  /** Runs `fn` while no query runs (a crash-consistent moment to copy the directory). */
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
  /** How far the WAL was written to the files (pg_current_wal_lsn), as a byte position. */
  walLsn(): Promise<bigint>;
  /** CHECKPOINT: bounds the WAL a copy of the directory replays. */
  checkpoint(): Promise<void>;
}

/**
 * A `SqlClient` over a PGlite at `dir`. PGlite runs one query at a time and `transaction()` holds
 * its transaction mutex, so concurrent callers queue rather than interleave inside a transaction.
 * Only one process may open `dir` at a time.
 */
export async function openEmbeddedPglite(options: EmbeddedCatalogOptions): Promise<EmbeddedPglite> {
  const dir = path.resolve(options.dir);
  await materialise(dir, options.templateDir);
  const pg = await PGlite.create({
    dataDir: dir,
    startParams: pgliteStartParams(postgresSettings(CATALOG_SHARED_BUFFERS)),
  });
  const client: SqlClient = {
    query: <Row>(sql: string, params?: unknown[]) => scrubbed(() => pg.query<Row>(sql, params)),
    transaction: <T>(fn: (tx: Pick<SqlClient, 'query'>) => Promise<T>) =>
      scrubbed(() =>
        pg.transaction((tx) =>
          fn({ query: <Row>(sql: string, params?: unknown[]) => tx.query<Row>(sql, params) }),
        ),
      ),
    close: async () => {
      if (!pg.closed) await pg.close();
    },
  };
  return {
    client,
    exclusive: (fn) => pg.runExclusive(fn),
    walLsn: async () => {
      const { rows } = await pg.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn');
      const m = /^([0-9A-F]+)\/([0-9A-F]+)$/i.exec(rows[0]?.lsn ?? '');
      if (!m) throw new Error(`catalog: unexpected WAL position ${rows[0]?.lsn}`);
      return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
    },
    checkpoint: async () => {
      await pg.exec('CHECKPOINT');
    },
  };
}

export async function openEmbeddedSqlClient(options: EmbeddedCatalogOptions): Promise<SqlClient> {
  return (await openEmbeddedPglite(options)).client;
}

/** Opens (creating if needed) and migrates the embedded catalog. */
export async function openEmbeddedCatalog(options: EmbeddedCatalogOptions): Promise<Catalog> {
  return openSqlCatalog(await openEmbeddedSqlClient(options));
}
