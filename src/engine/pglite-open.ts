import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { PGlite, type PGliteOptions } from '@electric-sql/pglite';
import { hasPgVersion } from '../pgdata/pg-version.js';
import { WRITER_BASELINE_SQL, WRITER_SETUP_SQL } from '../pgdata/template-roles.js';
import { DeferredNodeFS, type PgliteModule } from './deferred-fs.js';
import { bundleSource, copyBundleFilesOnWrite, mapSharedFiles, type SharedFiles } from './shared-bundle.js';

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
  /** The allowed extensions' files, shared by all workers too (see extensions.ts). */
  extensions?: SharedFiles | undefined;
}

/**
 * Memory: an idle default PGlite costs ~165 MB RSS. Postgres zeroes its whole shared memory at
 * startup, so every MB of shared memory is a MB of RSS for as long as the database is open:
 * shared_buffers (128 MB by default) dominates, then WAL buffers (1/32 of it) and the lock and
 * process tables sized by max_connections. The gateway runs one session per database, so those
 * tables are sized for a few backends; shared_buffers is configurable (SHARED_BUFFERS), and pages
 * beyond it are read through the OS page cache.
 *
 * Every setting that sizes memory at startup or decides whether Postgres starts at all is pinned
 * here: `-c` settings beat postgresql.conf and postgresql.auto.conf, so no file in a tenant's data
 * directory (written by an old ALTER SYSTEM, by COPY ... TO, or uploaded) can change them.
 * Role and database settings (ALTER ROLE/DATABASE ... SET) never apply: PGlite runs Postgres in
 * single-user mode, where Postgres skips pg_db_role_setting.
 */
export function postgresSettings(sharedBuffersBytes: number): string[] {
  return [`shared_buffers=${Math.floor(sharedBuffersBytes / 8192) * 8}kB`, ...PINNED_SETTINGS];
}

/** PGlite's own start parameters followed by `settings` as `-c` options (the later ones win). */
export function pgliteStartParams(settings: readonly string[]): string[] {
  const defaults = (PGlite as unknown as { defaultStartParams: string[] }).defaultStartParams;
  return [...defaults, ...settings.flatMap((s) => ['-c', s])];
}

/** See postgresSettings; values are the defaults unless a comment says why not. */
const PINNED_SETTINGS = [
  // ALTER SYSTEM fails (0A000) instead of writing postgresql.auto.conf (Postgres 17+).
  'allow_alter_system=off',
  // Shared memory sized by backend slots: the gateway runs one session per database.
  'max_connections=10',
  // Reserved slots must stay below max_connections or Postgres refuses to start.
  'superuser_reserved_connections=3',
  'reserved_connections=0',
  'max_wal_senders=0',
  'autovacuum_worker_slots=1',
  'max_worker_processes=0',
  'max_logical_replication_workers=4',
  // At their defaults: lower values refuse to start a database that has slots or origins.
  'max_replication_slots=10',
  'max_active_replication_origins=10',
  // Lock tables, sized per slot.
  'max_locks_per_transaction=64',
  'max_pred_locks_per_transaction=64',
  'max_prepared_transactions=0',
  // WAL and SLRU buffers: -1/0 size them from shared_buffers.
  'wal_buffers=-1',
  'commit_timestamp_buffers=0',
  'subtransaction_buffers=0',
  'transaction_buffers=0',
  'multixact_member_buffers=32',
  'multixact_offset_buffers=16',
  'notify_buffers=16',
  'serializable_buffers=32',
  'max_notify_queue_pages=1048576',
  'track_activity_query_size=1024',
  'min_dynamic_shared_memory=0',
  'io_method=sync',
  'io_max_concurrency=-1',
  'io_max_combine_limit=128kB',
  'wal_decode_buffer_size=512kB',
  // How shared memory is mapped: anything else fails in WASM.
  'huge_pages=off',
  'huge_page_size=0',
  'shared_memory_type=mmap',
  'dynamic_shared_memory_type=posix',
  // Libraries loaded at start: a missing one stops Postgres from starting.
  'shared_preload_libraries=',
  'session_preload_libraries=',
  'local_preload_libraries=',
  // Where the data is (PGDATA inside PGlite's filesystem, see deferred-fs.ts), and how WAL is kept.
  'data_directory=/pglite/data',
  'external_pid_file=',
  'wal_level=replica',
  'archive_mode=off',
  'track_commit_timestamp=off',
  'max_files_per_process=1000',
  // The read-only setup at open writes (CREATE ROLE, GRANT); its baseline turns this on with SET.
  'default_transaction_read_only=off',
  'work_mem=4MB',
  'temp_buffers=4MB',
];

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

/**
 * Who a database's clients are: `owner` the superuser (a plain database), `writer` a role that
 * cannot touch what a template owns (pgdata/template-roles.ts), `reader` the read-only role.
 */
export type AccessMode = 'owner' | 'writer' | 'reader';

/** What `openParked` runs once Postgres started, and what restores the identity later. */
const ACCESS_SQL: Record<AccessMode, { setup: string; baseline: string }> = {
  owner: { setup: '', baseline: '' },
  writer: { setup: WRITER_SETUP_SQL, baseline: WRITER_BASELINE_SQL },
  reader: { setup: READ_ONLY_SETUP_SQL, baseline: READ_ONLY_BASELINE_SQL },
};

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

export async function parkPglite(
  artifacts: PgliteArtifacts,
  settings: string[],
  /** Also given the WASM module before Postgres starts (the worker's durability layer). */
  onModule: (mod: PgliteModule) => void = () => undefined,
  /** Largest WASM heap the database may grow to (MAX_DATABASE_MEMORY; 0 = PGlite's 2 GiB). */
  maxHeapBytes = 0,
): Promise<ParkedPglite> {
  let module: PgliteModule | undefined;
  const fs = new DeferredNodeFS((mod) => {
    module = mod;
    copyBundleFilesOnWrite(mod);
    onModule(mod);
  }, maxHeapBytes);
  const pg = new PGlite({
    fs,
    startParams: pgliteStartParams(settings),
    pgliteWasmModule: artifacts.pgliteWasmModule,
    initdbWasmModule: artifacts.initdbWasmModule,
    fsBundle: bundleSource(artifacts.fsBundle),
  });
  // PGlite fetches array types after start for its JS type parsers; the gateway relays raw
  // protocol and never uses them, and the query costs ~20 ms of every open.
  (pg as unknown as { _initArrayTypes: () => Promise<void> })._initArrayTypes = async () => undefined;
  // waitReady only settles before parking when the preparation failed.
  await Promise.race([fs.parked, pg.waitReady]);
  // Where Postgres looks for extensions (/pglite/share, /pglite/lib), beside the bundle's files.
  if (module && artifacts.extensions) mapSharedFiles(module, module.WASM_PREFIX, artifacts.extensions);
  return { pg, fs };
}

/** Starts Postgres of a parked PGlite on `dataDir` (an existing PGDATA) and reads its settings. */
export async function openParked(
  { pg, fs }: ParkedPglite,
  dataDir: string,
  /** `true`/`false`: reader/owner (the callers from before access modes). */
  access: AccessMode | boolean,
): Promise<{ baselineSql: string; parameters: Record<string, string>; clearedSettings: string[] }> {
  const mode = typeof access === 'boolean' ? (access ? 'reader' : 'owner') : access;
  const { setup, baseline } = ACCESS_SQL[mode];
  // PGlite runs initdb into a directory without PG_VERSION; a missing database must stay missing.
  // (Checked before mounting: a parked PGlite cannot be closed until it has started.)
  if (!(await hasPgVersion(dataDir))) throw new Error(`no database at ${dataDir}`);
  // Reported back to the gateway, which logs it (the worker has no logger of its own).
  const clearedSettings = await clearAutoConf(dataDir);
  try {
    fs.mount(dataDir);
    await pg.waitReady;
    if (setup) await pg.exec(setup);
    if (baseline) await pg.exec(baseline);
    const [row] = (await pg.query<Record<string, string | null>>(SETTINGS_SQL)).rows;
    const parameters = Object.fromEntries(
      Object.entries(row ?? {}).filter((e): e is [string, string] => e[1] !== null),
    );
    return { baselineSql: baseline, parameters, clearedSettings };
  } catch (err) {
    await pg.close().catch(() => undefined);
    throw err;
  }
}

/** What Postgres writes at the top of postgresql.auto.conf: all that file may hold now. */
export const AUTO_CONF_HEADER =
  '# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n';

/**
 * Removes every setting from `dataDir`'s postgresql.auto.conf (written by ALTER SYSTEM before it
 * was refused, by COPY ... TO, or uploaded), leaving its header, so a database that one of them
 * made too costly or unable to start opens again. Returns the lines removed.
 */
export async function clearAutoConf(dataDir: string): Promise<string[]> {
  const file = path.join(dataDir, 'postgresql.auto.conf');
  // O_NOFOLLOW: a link (put there by hand) is an error, never a way to write outside the directory.
  const handle = await open(file, constants.O_RDWR | constants.O_NOFOLLOW).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  });
  if (!handle) return [];
  try {
    const lines = (await handle.readFile('utf8')).split('\n').map((l) => l.trim());
    const settings = lines.filter((l) => l !== '' && !l.startsWith('#'));
    if (settings.length === 0) return [];
    await handle.truncate(0);
    await handle.write(AUTO_CONF_HEADER, 0);
    await handle.sync();
    return settings;
  } finally {
    await handle.close();
  }
}
