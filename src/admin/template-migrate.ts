import { Counter, Gauge, register } from 'prom-client';
import type { Engine } from '../engine/engine.js';
import type { OpenBuildSession } from '../pgdata/template-build.js';
import {
  READ_TEMPLATE_VERSION_SQL,
  setTemplateVersionSql,
  TEMPLATE_OWNER_ROLE,
} from '../pgdata/template-roles.js';
import { backendMessages, firstRow } from '../wire/backend-scan.js';
import { Backend, query, readErrorFields } from '../wire/protocol.js';

/**
 * Migrating one open database to its template's newest version (issue 18): the pending
 * migrations run in one transaction as the template owner, inside the database's own session;
 * a failure rolls back and leaves the database at its version, open and usable.
 */

export const METRIC_TEMPLATE_MIGRATIONS = 'pglite_gateway_template_migrations_total';
export const METRIC_TEMPLATE_MIGRATION_FAILING = 'pglite_gateway_template_migration_failing';

let failingSource: (() => Promise<number>) | undefined;

/** Where the failing-migrations gauge reads its value when scraped (the catalog). */
export function setFailingSource(source: () => Promise<number>): void {
  failingSource = source;
  runsCounter(); // registers both metrics before the first migration
}

/** On prom-client's default registry; made once per process (several servers share it in tests). */
function runsCounter(): Counter<'outcome'> {
  const existing = register.getSingleMetric(METRIC_TEMPLATE_MIGRATIONS) as Counter<'outcome'> | undefined;
  if (existing) return existing;
  if (!register.getSingleMetric(METRIC_TEMPLATE_MIGRATION_FAILING)) {
    new Gauge({
      name: METRIC_TEMPLATE_MIGRATION_FAILING,
      help: 'Databases whose last template migration failed (they stay at their version, usable).',
      async collect() {
        this.set((await failingSource?.().catch(() => 0)) ?? 0);
      },
    });
  }
  return new Counter({
    name: METRIC_TEMPLATE_MIGRATIONS,
    help: 'Template migrations of databases, by outcome (migrated, failed).',
    labelNames: ['outcome'],
  });
}

/** Counts a migration's outcome. */
export function countMigration(outcome: 'migrated' | 'failed'): void {
  runsCounter().inc({ outcome });
}

/** The first ErrorResponse of a response, or undefined. */
function errorFields(response: Uint8Array): { code: string; message: string } | undefined {
  for (const m of backendMessages(response)) {
    if (m.code !== Backend.ErrorResponse) continue;
    const fields = readErrorFields(response.subarray(m.start, m.end));
    return { code: fields.get('C') ?? 'XX000', message: fields.get('M') ?? 'error' };
  }
  return undefined;
}

/** The first ErrorResponse of a response as `SQLSTATE: message`, or undefined. */
function errorOf(response: Uint8Array): string | undefined {
  const error = errorFields(response);
  return error && `${error.code}: ${error.message}`;
}

/**
 * Template builds in an engine worker (pgdata/template-build.ts): the server's event loop keeps
 * serving while PGlite starts and the template's SQL runs.
 */
export function engineBuildSession(engines: {
  open(dataDir: string, opts: { readOnly: boolean }): Promise<Engine>;
}): OpenBuildSession {
  return async (dataDir) => {
    const engine = await engines.open(dataDir, { readOnly: false });
    const exec = async (sql: string) => {
      const response = await engine.exec(query(sql));
      const error = errorFields(response);
      if (error) throw Object.assign(new Error(error.message), { code: error.code });
      return response;
    };
    return {
      exec: async (sql) => {
        await exec(sql);
      },
      value: async (sql) => firstRow(await exec(sql))?.[0] ?? undefined,
      close: () => engine.close(),
    };
  };
}

async function run(engine: Engine, sql: string): Promise<Uint8Array> {
  const response = await engine.exec(query(sql));
  const error = errorOf(response);
  if (error) throw new MigrationError(error);
  return response;
}

export class MigrationError extends Error {}

export type MigrationOutcome =
  | { kind: 'current'; version: number }
  | { kind: 'migrated'; from: number; version: number }
  | { kind: 'failed'; version: number; error: string };

/**
 * Brings the database whose session `engine` is to version `steps.length` of template `name`.
 * `steps[i]` is the SQL of version i + 1. The caller holds the session (nobody else uses it).
 * The session's identity is put back to its baseline afterwards, whatever happened.
 */
export async function migrateSession(
  engine: Engine,
  name: string,
  steps: readonly string[],
): Promise<MigrationOutcome> {
  const restore = `SET SESSION AUTHORIZATION postgres${engine.baselineSql ? `; ${engine.baselineSql}` : ''}`;
  try {
    const row = firstRow(
      await run(engine, `SET SESSION AUTHORIZATION ${TEMPLATE_OWNER_ROLE}; ${READ_TEMPLATE_VERSION_SQL}`),
    );
    const from = Number(row?.[0] ?? 0);
    const newest = steps.length;
    if (from >= newest) return { kind: 'current', version: from };
    const pending = steps.slice(from).join('\n;\n');
    try {
      // READ WRITE: a read-only database migrates too. SET LOCAL: a client's search_path
      // (transaction mode) must not decide where objects go.
      await run(
        engine,
        `BEGIN READ WRITE; SET LOCAL search_path = "$user", public; ${pending}\n; ${setTemplateVersionSql(name, newest)}; COMMIT`,
      );
    } catch (err) {
      await engine.exec(query('ROLLBACK')).catch(() => undefined);
      return { kind: 'failed', version: from, error: (err as Error).message };
    }
    return { kind: 'migrated', from, version: newest };
  } finally {
    await engine.exec(query(restore));
  }
}
