import type { ScramSha256Data } from 'pg-gateway';
import {
  type AddVersionInput,
  type AddWalInput,
  type Catalog,
  CatalogConflictError,
  type CreateDatabaseInput,
  type CredentialRecord,
  type DatabaseRecord,
  type Fence,
  FencedError,
  type PoolMode,
  type RoleMode,
  type SqlClient,
  type TemplateRecord,
  type TemplateStatePatch,
  type VersionRecord,
  type WalRecord,
} from './catalog.js';
import { MIGRATIONS } from './migrations.js';
import {
  CREDENTIAL_COLUMNS,
  type CredentialRow,
  DATABASE_COLUMNS,
  type DatabaseRow,
  first,
  toCredential,
  toDatabase,
  toDate,
  toVersion,
  toWal,
  VERSION_COLUMNS,
  type VersionRow,
  WAL_COLUMNS,
  type WalRow,
} from './sql-rows.js';
import * as templates from './sql-templates.js';

export { MIGRATIONS } from './migrations.js';

/**
 * Serialises migrations across every node sharing an external catalog: concurrent
 * `create table if not exists` can still fail on the pg_type unique index, so nodes queue here.
 * An arbitrary constant ("gate" in ASCII); a transaction-scoped lock cannot leak on crash.
 */
const MIGRATION_LOCK_KEY = 0x67617465;

const SQLSTATE_UNIQUE_VIOLATION = '23505';
const SQLSTATE_FOREIGN_KEY_VIOLATION = '23503';

/** The SQLSTATE of a server error; `pg` and PGlite both expose it as `.code`. */
export function sqlState(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null || !('code' in err)) return undefined;
  const code = (err as { code: unknown }).code;
  // Node system errors also have `.code` (ECONNREFUSED…); SQLSTATEs are exactly five characters.
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

export class SqlCatalog implements Catalog {
  constructor(private readonly sql: SqlClient) {}

  async migrate(): Promise<void> {
    await this.sql.transaction(async (tx) => {
      await tx.query(`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`);
      await tx.query(
        `create table if not exists gateway_schema_version (
          singleton boolean primary key default true check (singleton),
          version integer not null
        )`,
      );
      await tx.query(
        'insert into gateway_schema_version (singleton, version) values (true, 0) on conflict do nothing',
      );
      const { rows } = await tx.query<{ version: number }>('select version from gateway_schema_version');
      const current = Number(first(rows, 'schema version').version);
      if (current > MIGRATIONS.length) {
        // A newer node migrated the shared catalog; running against a schema we do not know is unsafe.
        throw new Error(
          `catalog schema version ${current} is newer than this server supports (${MIGRATIONS.length}); upgrade the server`,
        );
      }
      for (const step of MIGRATIONS.slice(current)) {
        for (const statement of step) await tx.query(statement);
      }
      if (current < MIGRATIONS.length) {
        await tx.query('update gateway_schema_version set version = $1', [MIGRATIONS.length]);
      }
    });
  }

  async getDatabase(id: string): Promise<DatabaseRecord | undefined> {
    const { rows } = await this.sql.query<DatabaseRow>(
      `select ${DATABASE_COLUMNS} from gateway_databases where id = $1`,
      [id],
    );
    return rows[0] && toDatabase(rows[0]);
  }

  async listDatabases(): Promise<DatabaseRecord[]> {
    const { rows } = await this.sql.query<DatabaseRow>(
      `select ${DATABASE_COLUMNS} from gateway_databases order by id`,
    );
    return rows.map(toDatabase);
  }

  async createDatabase(input: CreateDatabaseInput): Promise<DatabaseRecord> {
    try {
      return await this.sql.transaction(async (tx) => {
        const { rows } = await tx.query<DatabaseRow>(
          `insert into gateway_databases (id, read_only, pool_mode, role_mode, template_name, template_version)
           values ($1, $2, $3, $4, $5, $6) returning ${DATABASE_COLUMNS}`,
          [
            input.id,
            input.readOnly ?? false,
            input.poolMode ?? null,
            input.roleMode ?? null,
            input.template?.name ?? null,
            input.template?.version ?? null,
          ],
        );
        await tx.query(
          `insert into gateway_credentials (${CREDENTIAL_COLUMNS}) values ($1, $2, $3, $4, $5, $6)`,
          scramParams(input.id, input.username, input.scram),
        );
        return toDatabase(first(rows, 'insert database'));
      });
    } catch (err) {
      // No `cause`: the driver error may carry the bound parameters, i.e. the SCRAM verifier.
      if (sqlState(err) === SQLSTATE_UNIQUE_VIOLATION) {
        throw new CatalogConflictError(`database "${input.id}" already exists`);
      }
      throw err;
    }
  }

  async deleteDatabase(id: string): Promise<boolean> {
    const { rows } = await this.sql.query('delete from gateway_databases where id = $1 returning id', [id]);
    return rows.length > 0;
  }

  async updateDatabase(
    id: string,
    patch: { readOnly?: boolean; poolMode?: PoolMode | null; roleMode?: RoleMode | null },
  ): Promise<DatabaseRecord | undefined> {
    const sets: string[] = [];
    const params: unknown[] = [id];
    if (patch.roleMode !== undefined) {
      params.push(patch.roleMode);
      sets.push(`role_mode = $${params.length}`);
    }
    if (patch.readOnly !== undefined) {
      params.push(patch.readOnly);
      sets.push(`read_only = $${params.length}`);
    }
    if (patch.poolMode !== undefined) {
      params.push(patch.poolMode);
      sets.push(`pool_mode = $${params.length}`);
    }
    if (sets.length === 0) return this.getDatabase(id);
    const { rows } = await this.sql.query<DatabaseRow>(
      `update gateway_databases set ${sets.join(', ')} where id = $1 returning ${DATABASE_COLUMNS}`,
      params,
    );
    return rows[0] && toDatabase(rows[0]);
  }

  createTemplate(name: string, sql: string): Promise<TemplateRecord> {
    return templates.createTemplate(this.sql, name, sql);
  }

  getTemplate(name: string): Promise<TemplateRecord | undefined> {
    return templates.getTemplate(this.sql, name);
  }

  listTemplates(): Promise<TemplateRecord[]> {
    return templates.listTemplates(this.sql);
  }

  addTemplateVersion(name: string, version: number, sql: string): Promise<TemplateRecord | undefined> {
    return templates.addTemplateVersion(this.sql, name, version, sql);
  }

  templateSteps(name: string): Promise<string[]> {
    return templates.templateSteps(this.sql, name);
  }

  deleteTemplate(name: string): Promise<'deleted' | 'missing' | 'in-use'> {
    return templates.deleteTemplate(this.sql, name);
  }

  setTemplateState(id: string, patch: TemplateStatePatch): Promise<boolean> {
    return templates.setTemplateState(this.sql, id, patch);
  }

  async getCredential(databaseId: string, username: string): Promise<CredentialRecord | undefined> {
    const { rows } = await this.sql.query<CredentialRow>(
      `select ${CREDENTIAL_COLUMNS} from gateway_credentials where database_id = $1 and username = $2`,
      [databaseId, username],
    );
    return rows[0] && toCredential(rows[0]);
  }

  async setCredential(databaseId: string, username: string, scram: ScramSha256Data): Promise<boolean> {
    try {
      // The `where exists` answers "no such database" without raising an error (and a server log
      // line); the FK catch below covers a delete racing between the check and the insert.
      const { rows } = await this.sql.query(
        `insert into gateway_credentials (${CREDENTIAL_COLUMNS})
         select $1::text, $2::text, $3::text, $4::integer, $5::text, $6::text
         where exists (select 1 from gateway_databases where id = $1)
         on conflict (database_id, username) do update set
           salt = excluded.salt, iterations = excluded.iterations, stored_key = excluded.stored_key,
           server_key = excluded.server_key, updated_at = now()
         returning database_id`,
        scramParams(databaseId, username, scram),
      );
      return rows.length > 0;
    } catch (err) {
      if (sqlState(err) === SQLSTATE_FOREIGN_KEY_VIOLATION) return false;
      throw err;
    }
  }

  async addVersion(input: AddVersionInput): Promise<VersionRecord | undefined> {
    try {
      const params = [
        input.databaseId,
        input.version,
        input.sha256,
        input.sizeBytes,
        input.walLsn?.toString() ?? null,
        input.walSince?.toISOString() ?? null,
      ];
      const insert = `insert into gateway_versions (database_id, version, sha256, size_bytes, wal_lsn, wal_since)
         select $1::text, $2::text, $3::text, $4::bigint, $5::bigint, $6::timestamptz
         where exists (select 1 from gateway_databases where id = $1)`;
      if (input.fence) {
        const rows = await this.fenced<VersionRow>(
          input.fence,
          insert,
          `returning ${VERSION_COLUMNS}`,
          params,
        );
        return rows[0] && toVersion(rows[0]);
      }
      const { rows } = await this.sql.query<VersionRow>(`${insert} returning ${VERSION_COLUMNS}`, params);
      return rows[0] && toVersion(rows[0]);
    } catch (err) {
      if (sqlState(err) === SQLSTATE_FOREIGN_KEY_VIOLATION) return undefined;
      if (sqlState(err) === SQLSTATE_UNIQUE_VIOLATION) {
        throw new CatalogConflictError(`version "${input.version}" of "${input.databaseId}" already exists`);
      }
      throw err;
    }
  }

  async listVersions(databaseId: string): Promise<VersionRecord[]> {
    const { rows } = await this.sql.query<VersionRow>(
      `select ${VERSION_COLUMNS} from gateway_versions where database_id = $1
       order by created_at desc, version desc`,
      [databaseId],
    );
    return rows.map(toVersion);
  }

  async getVersion(databaseId: string, version: string): Promise<VersionRecord | undefined> {
    const { rows } = await this.sql.query<VersionRow>(
      `select ${VERSION_COLUMNS} from gateway_versions where database_id = $1 and version = $2`,
      [databaseId, version],
    );
    return rows[0] && toVersion(rows[0]);
  }

  async deleteVersion(databaseId: string, version: string): Promise<boolean> {
    const { rows } = await this.sql.query(
      'delete from gateway_versions where database_id = $1 and version = $2 returning version',
      [databaseId, version],
    );
    return rows.length > 0;
  }

  async addWal(input: AddWalInput): Promise<boolean> {
    try {
      const params = [
        input.databaseId,
        input.startLsn.toString(),
        input.endLsn.toString(),
        input.key,
        input.sha256,
        input.sizeBytes,
        (input.writtenAt ?? new Date()).toISOString(),
        input.seq.toString(),
      ];
      const insert = `insert into gateway_wal (database_id, start_lsn, end_lsn, object_key, sha256, size_bytes, written_at, seq)
         select $1::text, $2::bigint, $3::bigint, $4::text, $5::text, $6::bigint, $7::timestamptz, $8::bigint
         where exists (select 1 from gateway_databases where id = $1)`;
      if (input.fence)
        return (
          (await this.fenced(input.fence, insert, 'on conflict do nothing returning end_lsn', params))
            .length > 0
        );
      const { rows } = await this.sql.query(`${insert} on conflict do nothing returning end_lsn`, params);
      return rows.length > 0;
    } catch (err) {
      if (sqlState(err) === SQLSTATE_FOREIGN_KEY_VIOLATION) return false;
      throw err;
    }
  }

  /**
   * Runs `insert` (whose `$1` is the database id) only while the fence's node owns the database
   * at its generation, in one statement: the placement row is locked `for share`, so a claim
   * (which updates it) either waits for this record to commit, and the new owner then sees it, or
   * has committed first, and the record is refused with `FencedError`.
   */
  private async fenced<Row>(fence: Fence, insert: string, tail: string, params: unknown[]): Promise<Row[]> {
    const n = params.length;
    const { rows } = await this.sql.query<{ owned: boolean; rows: Row[] | null }>(
      `with fence as (
         select 1 from gateway_placements
         where database_id = $1 and owner = $${n + 1} and generation = $${n + 2}::bigint for share
       ), unowned as (
         -- Generation -1: a node writing for a database it does not own (a new database's first
         -- version): accepted only while no node owns it.
         select 1 where $${n + 2}::bigint = -1 and not exists (
           select 1 from gateway_placements where database_id = $1 and owner is not null)
       ), allowed as (select 1 from fence union all select 1 from unowned),
       ins as (${insert} and exists (select 1 from allowed) ${tail})
       select exists (select 1 from allowed) as owned, (select json_agg(ins) from ins) as rows`,
      [...params, fence.nodeId, fence.generation.toString()],
    );
    if (!rows[0]?.owned)
      throw new FencedError(
        `${String(params[0])}: not owned by ${fence.nodeId} at generation ${fence.generation}; the write is refused`,
      );
    return rows[0].rows ?? [];
  }

  async listWal(databaseId: string, afterLsn = 0n): Promise<WalRecord[]> {
    const { rows } = await this.sql.query<WalRow>(
      `select ${WAL_COLUMNS} from gateway_wal where database_id = $1 and end_lsn > $2::bigint
       order by seq`,
      [databaseId, afterLsn.toString()],
    );
    return rows.map(toWal);
  }

  async deleteWalBefore(databaseId: string, time: Date): Promise<string[]> {
    const { rows } = await this.sql.query<{ object_key: string }>(
      'delete from gateway_wal where database_id = $1 and written_at < $2::timestamptz returning object_key',
      [databaseId, time.toISOString()],
    );
    return rows.map((r) => r.object_key);
  }

  async walRange(databaseId: string): Promise<{ first: Date; last: Date } | undefined> {
    const { rows } = await this.sql.query<{ first: Date | string | null; last: Date | string | null }>(
      'select min(written_at) as first, max(written_at) as last from gateway_wal where database_id = $1',
      [databaseId],
    );
    const row = rows[0];
    if (!row?.first || !row.last) return undefined;
    return { first: toDate(row.first), last: toDate(row.last) };
  }

  close(): Promise<void> {
    return this.sql.close();
  }
}

/**
 * A migrated `SqlCatalog` over `sql`. When the migration (or the connection under it) fails, the
 * client is closed and that error thrown: a failing close must not replace it.
 */
export async function openSqlCatalog(sql: SqlClient): Promise<SqlCatalog> {
  const catalog = new SqlCatalog(sql);
  try {
    await catalog.migrate();
  } catch (err) {
    await catalog.close().catch(() => undefined);
    throw err;
  }
  return catalog;
}

function scramParams(databaseId: string, username: string, scram: ScramSha256Data): unknown[] {
  return [databaseId, username, scram.salt, scram.iterations, scram.storedKey, scram.serverKey];
}
