import type { ScramSha256Data } from 'pg-gateway';
import { ConflictError } from '../errors.js';

/**
 * The catalog records which databases exist and who may connect to them. One SQL implementation
 * (`SqlCatalog`) runs over a minimal query interface so the embedded PGlite catalog and an
 * external PostgreSQL behave the same.
 */

export type PoolMode = 'session' | 'transaction';

/** Who a writable database's clients are (issue 18); read-only databases are always `reader`. */
export type RoleMode = 'owner' | 'writer';

/** The incarnation of databases created before incarnations existed (their local copies are unmarked). */
export const LEGACY_INCARNATION = 'legacy';

export interface DatabaseRecord {
  id: string;
  readOnly: boolean;
  /** Per-database pool mode; null means the server default (POOL_MODE). */
  poolMode: PoolMode | null;
  createdAt: Date;
  /**
   * New each time the id is created: a local copy made for another incarnation is of a deleted
   * database that had the same id (storage/local-marks.ts).
   */
  incarnation: string;
  /** Unset/null: `owner` (the superuser). Ignored while readOnly. */
  roleMode?: RoleMode | null | undefined;
  /** The template the database was made from, the version it holds, its last failed migration. */
  template?: string | null | undefined;
  templateVersion?: number | null | undefined;
  migrationError?: string | null | undefined;
}

/** A database's effective access mode: what its clients run as. */
export function accessMode(db: Pick<DatabaseRecord, 'readOnly' | 'roleMode'>): 'owner' | 'writer' | 'reader' {
  return db.readOnly ? 'reader' : (db.roleMode ?? 'owner');
}

export interface TemplateRecord {
  name: string;
  /** The newest version: 1 is the template's SQL, each migration adds one. */
  version: number;
  createdAt: Date;
  updatedAt: Date;
  /** How many databases were made from it. */
  databases: number;
}

/** How a database's template state changes after an open or a migration. */
export interface TemplateStatePatch {
  templateVersion?: number;
  migrationError?: string | null;
}

export interface CredentialRecord {
  databaseId: string;
  username: string;
  scram: ScramSha256Data;
}

export interface CreateDatabaseInput {
  id: string;
  readOnly?: boolean;
  poolMode?: PoolMode | null;
  roleMode?: RoleMode | null;
  /** Made from this template at this version (the template must exist). */
  template?: { name: string; version: number };
  username: string;
  scram: ScramSha256Data;
}

/**
 * One archived snapshot of a database: the immutable object `<id>/<version>.tar.gz` in the archive
 * store. Recorded only after the upload completed and was verified.
 */
export interface VersionRecord {
  databaseId: string;
  /** Sortable, unique: `YYYYMMDDTHHMMSSmmmZ-<8 hex>` (see `storage/snapshots.ts`). */
  version: string;
  /** Hex sha256 of the archived bytes (the .tar.gz as stored). */
  sha256: string;
  /** Size in bytes of the archived object. */
  sizeBytes: number;
  createdAt: Date;
  /** The WAL position the snapshot's data directory holds everything up to (a base backup for WAL). */
  walLsn?: bigint | undefined;
  /**
   * WAL pieces shipped after this moment continue this base: when the directory was frozen for the
   * snapshot; for a restore, upload or clone, when the version was recorded (`createdAt`), so WAL
   * of the history it replaced is never replayed on top of it.
   */
  walSince: Date;
}

/**
 * Cluster mode: an archive record is accepted only while `nodeId` owns the database at
 * `generation` (checked on the placement row, locked, in the statement that records it), so a
 * paused or partitioned former owner can never record WAL or versions after another node claimed
 * the database. A refused write throws `FencedError`.
 */
export interface Fence {
  nodeId: string;
  generation: bigint;
}

/** An archive record refused because another node (a newer generation) owns the database. */
export class FencedError extends Error {}

export interface AddVersionInput {
  /** Cluster mode: refused unless this owner and generation still hold the database. */
  fence?: Fence | undefined;
  databaseId: string;
  version: string;
  sha256: string;
  sizeBytes: number;
  walLsn?: bigint | undefined;
  walSince?: Date | undefined;
}

/**
 * A piece of a database's WAL shipped to the archive: the bytes from `startLsn` to `endLsn`
 * (page-aligned start; a piece may repeat the last page of the one before, which it supersedes).
 */
export interface WalRecord {
  databaseId: string;
  startLsn: bigint;
  endLsn: bigint;
  /** Archive key of the immutable object holding the bytes. */
  key: string;
  sha256: string;
  sizeBytes: number;
  /** When the bytes were read: every commit in them happened before. */
  writtenAt: Date;
  /** Ship order (increasing): where pieces overlap, the later one's bytes are the newer. */
  seq: bigint;
}

export type AddWalInput = Omit<WalRecord, 'writtenAt'> & { writtenAt?: Date; fence?: Fence | undefined };

export interface Catalog {
  /** Creates the schema if needed; idempotent and safe for several nodes at once. */
  migrate(): Promise<void>;
  getDatabase(id: string): Promise<DatabaseRecord | undefined>;
  listDatabases(): Promise<DatabaseRecord[]>;
  /** Throws `CatalogConflictError` when the id exists. */
  createDatabase(input: CreateDatabaseInput): Promise<DatabaseRecord>;
  /** Returns false when there was no such database. */
  deleteDatabase(id: string): Promise<boolean>;
  updateDatabase(
    id: string,
    patch: { readOnly?: boolean; poolMode?: PoolMode | null; roleMode?: RoleMode | null },
  ): Promise<DatabaseRecord | undefined>;
  /** Records a template's SQL as version 1; throws `CatalogConflictError` when the name exists. */
  createTemplate(name: string, sql: string): Promise<TemplateRecord>;
  getTemplate(name: string): Promise<TemplateRecord | undefined>;
  listTemplates(): Promise<TemplateRecord[]>;
  /**
   * Records `sql` as version `version` (the current one + 1); undefined when the template does
   * not exist, `CatalogConflictError` when another update recorded that version first.
   */
  addTemplateVersion(name: string, version: number, sql: string): Promise<TemplateRecord | undefined>;
  /** The SQL of versions 1..n in order (the template's SQL, then each migration). */
  templateSteps(name: string): Promise<string[]>;
  /** 'in-use' while a database was made from it (nothing is deleted then). */
  deleteTemplate(name: string): Promise<'deleted' | 'missing' | 'in-use'>;
  /** Records a database's template version and migration outcome; false when it does not exist. */
  setTemplateState(id: string, patch: TemplateStatePatch): Promise<boolean>;
  getCredential(databaseId: string, username: string): Promise<CredentialRecord | undefined>;
  /** Inserts or replaces the verifier for (database, user); false when the database does not exist. */
  setCredential(databaseId: string, username: string, scram: ScramSha256Data): Promise<boolean>;
  /**
   * Records an archived version. Returns undefined when the database does not exist; throws
   * `CatalogConflictError` when (database, version) is already recorded.
   */
  addVersion(input: AddVersionInput): Promise<VersionRecord | undefined>;
  /** The database's versions, newest first. */
  listVersions(databaseId: string): Promise<VersionRecord[]>;
  getVersion(databaseId: string, version: string): Promise<VersionRecord | undefined>;
  /** Returns false when there was no such version. */
  deleteVersion(databaseId: string, version: string): Promise<boolean>;
  /** Records a shipped WAL piece; false when the database no longer exists. */
  addWal(input: AddWalInput): Promise<boolean>;
  /** WAL pieces ending after `afterLsn`, in ship order. */
  listWal(databaseId: string, afterLsn?: bigint): Promise<WalRecord[]>;
  /** Forgets WAL pieces shipped before `time` (no kept base needs them); returns their keys. */
  deleteWalBefore(databaseId: string, time: Date): Promise<string[]>;
  /** When the oldest and the newest recorded WAL piece were shipped (undefined without any). */
  walRange(databaseId: string): Promise<{ first: Date; last: Date } | undefined>;
  close(): Promise<void>;
}

/** The minimal surface both backends provide: parameterised SQL with $1-style placeholders. */
export interface SqlClient {
  query<Row = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<{ rows: Row[] }>;
  /** Runs `fn` in one transaction on one connection. */
  transaction<T>(fn: (tx: Pick<SqlClient, 'query'>) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** A database id that already exists (HTTP 409 through the admin API). */
export class CatalogConflictError extends ConflictError {}
