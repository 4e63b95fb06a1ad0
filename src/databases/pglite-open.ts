import { PGlite, type PGliteOptions } from '@electric-sql/pglite';

/**
 * Opening one PGlite with the gateway's settings. Runs inside a database's worker thread; the
 * compiled WASM modules and the FS bundle come from the parent so they are built once per process.
 */

/** A compiled WebAssembly.Module, typed through PGlite's options (Node's types lack the namespace). */
export type WasmModule = NonNullable<PGliteOptions['pgliteWasmModule']>;

export interface PgliteArtifacts {
  pgliteWasmModule: WasmModule;
  initdbWasmModule: WasmModule;
  fsBundle: Blob;
}

/**
 * Memory: an idle default PGlite costs ~165 MB RSS, mostly shared_buffers (128 MB) touched by
 * startup. 16 MB of shared buffers is plenty for small databases and brings an idle instance
 * down to tens of MB; larger working sets read through the OS page cache instead.
 */
export const MEMORY_SETTINGS = ['shared_buffers=16MB', 'wal_buffers=1MB', 'work_mem=4MB', 'temp_buffers=4MB'];

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

export async function openPglite(
  dataDir: string,
  readOnly: boolean,
  artifacts?: PgliteArtifacts,
): Promise<{ pg: PGlite; baselineSql: string; parameters: Record<string, string> }> {
  const defaults = (PGlite as unknown as { defaultStartParams: string[] }).defaultStartParams;
  const startParams = [...defaults, ...MEMORY_SETTINGS.flatMap((s) => ['-c', s])];
  const pg = new PGlite({ dataDir, startParams, ...(artifacts ?? {}) });
  try {
    await pg.waitReady;
    if (readOnly) {
      await pg.exec(READ_ONLY_SETUP_SQL);
      await pg.exec(READ_ONLY_BASELINE_SQL);
    }
    const { rows } = await pg.query<{ name: string; value: string }>(
      'SELECT name, pg_catalog.current_setting(name) AS value FROM pg_catalog.pg_settings WHERE name = ANY($1)',
      [REPORTED_PARAMETERS],
    );
    const parameters = Object.fromEntries(rows.map((r) => [r.name, r.value]));
    return { pg, baselineSql: readOnly ? READ_ONLY_BASELINE_SQL : '', parameters };
  } catch (err) {
    await pg.close().catch(() => undefined);
    throw err;
  }
}
