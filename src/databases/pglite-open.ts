import { existsSync } from 'node:fs';
import path from 'node:path';
import { PGlite, type PGliteOptions } from '@electric-sql/pglite';
import { DeferredNodeFS } from './deferred-fs.js';
import { bundleSource, copyBundleFilesOnWrite } from './shared-bundle.js';

/**
 * Opening one PGlite with the gateway's settings, in two steps: `parkPglite` does everything that
 * does not depend on the database ahead of time, `openParked` starts Postgres on a data directory.
 * Runs inside a database's worker thread; the compiled WASM modules and the FS bundle come from
 * the parent so they are built once per process.
 */

/** A compiled WebAssembly.Module, typed through PGlite's options (Node's types lack the namespace). */
export type WasmModule = NonNullable<PGliteOptions['pgliteWasmModule']>;

export interface PgliteArtifacts {
  pgliteWasmModule: WasmModule;
  initdbWasmModule: WasmModule;
  /** The FS bundle, shared by all workers (see shared-bundle.ts). */
  fsBundle: SharedArrayBuffer;
}

/**
 * Memory: an idle default PGlite costs ~165 MB RSS. Postgres zeroes its whole shared memory at
 * startup, so every MB of shared memory is a MB of RSS for as long as the database is open:
 * shared_buffers (128 MB by default) dominates, then WAL buffers (1/32 of it) and the lock and
 * process tables sized by max_connections. The gateway runs one session per database, so those
 * tables are sized for a few backends; shared_buffers is configurable (SHARED_BUFFERS), and pages
 * beyond it are read through the OS page cache.
 */
export function postgresSettings(sharedBuffersBytes: number): string[] {
  return [
    `shared_buffers=${Math.floor(sharedBuffersBytes / 8192) * 8}kB`,
    'max_connections=10',
    'max_wal_senders=0',
    'autovacuum_worker_slots=1',
    'work_mem=4MB',
    'temp_buffers=4MB',
  ];
}

export const READ_ONLY_ROLE = 'gateway_readonly';

/**
 * PGlite always runs its session as the bootstrap superuser (its `username` option is only SET
 * ROLE, undone by RESET ROLE). A read-only database therefore switches the session authorization
 * to a role that can read everything and write nothing, and removes the ways back that run inside
 * Postgres: set_config, procedural languages (dynamic SQL) and temporary objects. The remaining
 * ways are plain statements, which the gateway refuses before they reach the database.
 */
const READ_ONLY_SETUP_SQL = `
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${READ_ONLY_ROLE}') THEN
    CREATE ROLE ${READ_ONLY_ROLE} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
  END IF;
END $$;
GRANT pg_read_all_data TO ${READ_ONLY_ROLE};
REVOKE TEMPORARY ON DATABASE postgres FROM PUBLIC;
REVOKE USAGE ON LANGUAGE plpgsql FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC;
`;

/** Puts a read-only session back into its restricted identity (after DISCARD ALL, too). */
export const READ_ONLY_BASELINE_SQL = `SET SESSION AUTHORIZATION ${READ_ONLY_ROLE}; SET default_transaction_read_only = on`;

/** What Postgres reports to every client at startup (GUC_REPORT parameters). */
export const REPORTED_PARAMETERS = [
  'server_version',
  'server_encoding',
  'client_encoding',
  'DateStyle',
  'IntervalStyle',
  'TimeZone',
  'integer_datetimes',
  'standard_conforming_strings',
  'application_name',
  'is_superuser',
  'session_authorization',
  'default_transaction_read_only',
  'in_hot_standby',
  'scram_iterations',
  'search_path',
] as const;

/** One row, a column per reported parameter; current_setting is far cheaper than pg_settings. */
const SETTINGS_SQL = `SELECT ${REPORTED_PARAMETERS.map((n) => `pg_catalog.current_setting('${n}', true) AS "${n}"`).join(', ')}`;

/** A PGlite with everything but Postgres started, waiting for its data directory. */
export interface ParkedPglite {
  readonly pg: PGlite;
  readonly fs: DeferredNodeFS;
}

export async function parkPglite(artifacts: PgliteArtifacts, settings: string[]): Promise<ParkedPglite> {
  const defaults = (PGlite as unknown as { defaultStartParams: string[] }).defaultStartParams;
  const fs = new DeferredNodeFS(copyBundleFilesOnWrite);
  const pg = new PGlite({
    fs,
    startParams: [...defaults, ...settings.flatMap((s) => ['-c', s])],
    pgliteWasmModule: artifacts.pgliteWasmModule,
    initdbWasmModule: artifacts.initdbWasmModule,
    fsBundle: bundleSource(artifacts.fsBundle),
  });
  // PGlite fetches array types after start for its JS type parsers; the gateway relays raw
  // protocol and never uses them, and the query costs ~20 ms of every open.
  (pg as unknown as { _initArrayTypes: () => Promise<void> })._initArrayTypes = async () => undefined;
  // waitReady only settles before parking when the preparation failed.
  await Promise.race([fs.parked, pg.waitReady]);
  return { pg, fs };
}

/** Starts Postgres of a parked PGlite on `dataDir` (an existing PGDATA) and reads its settings. */
export async function openParked(
  { pg, fs }: ParkedPglite,
  dataDir: string,
  readOnly: boolean,
): Promise<{ baselineSql: string; parameters: Record<string, string> }> {
  // PGlite runs initdb into a directory without PG_VERSION; a missing database must stay missing.
  // (Checked before mounting: a parked PGlite cannot be closed until it has started.)
  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) throw new Error(`no database at ${dataDir}`);
  try {
    fs.mount(dataDir);
    await pg.waitReady;
    if (readOnly) {
      await pg.exec(READ_ONLY_SETUP_SQL);
      await pg.exec(READ_ONLY_BASELINE_SQL);
    }
    const [row] = (await pg.query<Record<string, string | null>>(SETTINGS_SQL)).rows;
    const parameters = Object.fromEntries(
      Object.entries(row ?? {}).filter((e): e is [string, string] => e[1] !== null),
    );
    return { baselineSql: readOnly ? READ_ONLY_BASELINE_SQL : '', parameters };
  } catch (err) {
    await pg.close().catch(() => undefined);
    throw err;
  }
}
