import { PGlite } from '@electric-sql/pglite';

/**
 * One open PGlite: the single Postgres session behind a database. Everything above talks to it
 * in raw protocol bytes, so the engine can later move into a worker thread unchanged.
 */
export interface Engine {
  /** Executes raw frontend messages and returns the raw backend response. */
  exec(messages: Uint8Array): Promise<Uint8Array>;
  /** SQL that restores the session's baseline identity after it was reset; empty when none. */
  readonly baselineSql: string;
  /** Values of the parameters a real server reports in ParameterStatus at startup. */
  reportedParameters(): Promise<Record<string, string>>;
  close(): Promise<void>;
}

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
const READ_ONLY_BASELINE_SQL = `SET SESSION AUTHORIZATION ${READ_ONLY_ROLE}; SET default_transaction_read_only = on`;

class PgliteEngine implements Engine {
  constructor(
    private readonly pg: PGlite,
    readonly baselineSql: string,
  ) {}

  exec(messages: Uint8Array): Promise<Uint8Array> {
    return this.pg.execProtocolRaw(messages);
  }

  async reportedParameters(): Promise<Record<string, string>> {
    const { rows } = await this.pg.query<{ name: string; value: string }>(
      'SELECT name, pg_catalog.current_setting(name) AS value FROM pg_catalog.pg_settings WHERE name = ANY($1)',
      [REPORTED_PARAMETERS],
    );
    return Object.fromEntries(rows.map((r) => [r.name, r.value]));
  }

  async close(): Promise<void> {
    if (!this.pg.closed) await this.pg.close();
  }
}

/** Opens the database at `dataDir`; read-only databases get the restricted identity above. */
export async function openEngine(dataDir: string, opts: { readOnly: boolean }): Promise<Engine> {
  const pg = new PGlite({ dataDir });
  await pg.waitReady;
  if (!opts.readOnly) return new PgliteEngine(pg, '');
  try {
    await pg.exec(READ_ONLY_SETUP_SQL);
    await pg.exec(READ_ONLY_BASELINE_SQL);
  } catch (err) {
    await pg.close();
    throw err;
  }
  return new PgliteEngine(pg, READ_ONLY_BASELINE_SQL);
}
