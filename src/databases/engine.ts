import { PGlite } from '@electric-sql/pglite';

/**
 * One open PGlite: the single Postgres session behind a database. Everything above talks to it
 * in raw protocol bytes, so the engine can later move into a worker thread unchanged.
 */
export interface Engine {
  /** Executes raw frontend messages and returns the raw backend response. */
  exec(messages: Uint8Array): Promise<Uint8Array>;
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

const READ_ONLY_ROLE_SQL = `
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${READ_ONLY_ROLE}') THEN
    CREATE ROLE ${READ_ONLY_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
  END IF;
END $$;
GRANT pg_read_all_data TO ${READ_ONLY_ROLE};
ALTER ROLE ${READ_ONLY_ROLE} SET default_transaction_read_only = on;
`;

class PgliteEngine implements Engine {
  constructor(private readonly pg: PGlite) {}

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

async function open(dataDir: string, username?: string): Promise<PGlite> {
  const pg = new PGlite(username ? { dataDir, username } : { dataDir });
  await pg.waitReady;
  return pg;
}

/**
 * Opens the database at `dataDir`. Read-only databases run as a non-superuser role that can read
 * everything and write nothing; the role is created on first read-only open.
 */
export async function openEngine(dataDir: string, opts: { readOnly: boolean }): Promise<Engine> {
  if (!opts.readOnly) return new PgliteEngine(await open(dataDir));
  try {
    return new PgliteEngine(await open(dataDir, READ_ONLY_ROLE));
  } catch (err) {
    if (!/role .* does not exist/.test(String(err))) throw err;
  }
  const admin = await open(dataDir);
  try {
    await admin.exec(READ_ONLY_ROLE_SQL);
  } finally {
    await admin.close();
  }
  return new PgliteEngine(await open(dataDir, READ_ONLY_ROLE));
}
