/** Row shapes of the catalog's tables and their mapping to records; `pg` and PGlite return
 * bigint and timestamp columns differently, so every mapper accepts both. */
import type {
  CredentialRecord,
  DatabaseRecord,
  PoolMode,
  RoleMode,
  VersionRecord,
  WalRecord,
} from './catalog.js';

export interface DatabaseRow {
  id: string;
  read_only: boolean;
  pool_mode: PoolMode | null;
  created_at: Date | string;
  role_mode: RoleMode | null;
  template_name: string | null;
  template_version: number | null;
  migration_error: string | null;
  incarnation: string;
}

export interface CredentialRow {
  database_id: string;
  username: string;
  salt: string;
  iterations: number;
  stored_key: string;
  server_key: string;
}

export interface VersionRow {
  database_id: string;
  version: string;
  sha256: string;
  size_bytes: number | string | bigint;
  created_at: Date | string;
  wal_lsn: number | string | bigint | null;
  wal_since: Date | string | null;
}

export interface WalRow {
  database_id: string;
  start_lsn: number | string | bigint;
  end_lsn: number | string | bigint;
  object_key: string;
  sha256: string;
  size_bytes: number | string | bigint;
  written_at: Date | string;
  seq: number | string | bigint;
}

export const WAL_COLUMNS = 'database_id, start_lsn, end_lsn, object_key, sha256, size_bytes, written_at, seq';

export function toWal(row: WalRow): WalRecord {
  return {
    databaseId: row.database_id,
    startLsn: BigInt(row.start_lsn),
    endLsn: BigInt(row.end_lsn),
    key: row.object_key,
    sha256: row.sha256,
    sizeBytes: Number(row.size_bytes),
    writtenAt: row.written_at instanceof Date ? row.written_at : new Date(row.written_at),
    seq: BigInt(row.seq),
  };
}

export const DATABASE_COLUMNS =
  'id, read_only, pool_mode, created_at, role_mode, template_name, template_version, migration_error, incarnation';
export const CREDENTIAL_COLUMNS = 'database_id, username, salt, iterations, stored_key, server_key';
export const VERSION_COLUMNS = 'database_id, version, sha256, size_bytes, created_at, wal_lsn, wal_since';

export function toDatabase(row: DatabaseRow): DatabaseRecord {
  return {
    id: row.id,
    readOnly: row.read_only,
    poolMode: row.pool_mode,
    createdAt: row.created_at instanceof Date ? row.created_at : new Date(row.created_at),
    incarnation: row.incarnation,
    // Only when set, so a plain database's record stays as it was before templates.
    ...(row.role_mode ? { roleMode: row.role_mode } : {}),
    ...(row.template_name ? { template: row.template_name } : {}),
    ...(row.template_version !== null && row.template_version !== undefined
      ? { templateVersion: Number(row.template_version) }
      : {}),
    ...(row.migration_error ? { migrationError: row.migration_error } : {}),
  };
}

export function toCredential(row: CredentialRow): CredentialRecord {
  return {
    databaseId: row.database_id,
    username: row.username,
    scram: {
      salt: row.salt,
      iterations: Number(row.iterations),
      storedKey: row.stored_key,
      serverKey: row.server_key,
    },
  };
}

export function toVersion(row: VersionRow): VersionRecord {
  return {
    databaseId: row.database_id,
    version: row.version,
    sha256: row.sha256,
    // bigint: `pg` returns it as a string, PGlite as a number or BigInt.
    sizeBytes: Number(row.size_bytes),
    createdAt: row.created_at instanceof Date ? row.created_at : new Date(row.created_at),
    walLsn: row.wal_lsn === null || row.wal_lsn === undefined ? undefined : BigInt(row.wal_lsn),
    walSince: toDate(row.wal_since ?? row.created_at),
  };
}

export const toDate = (v: Date | string) => (v instanceof Date ? v : new Date(v));

export function first<T>(rows: T[], what: string): T {
  const row = rows[0];
  if (row === undefined) throw new Error(`catalog: ${what} returned no row`);
  return row;
}
