import {
  accessMode,
  type DatabaseRecord,
  type TemplateRecord,
  type VersionRecord,
} from '../catalog/catalog.js';
import type { ConnectionInfo } from './connection-info.js';
import type { CreatedDatabase, UploadedDatabase } from './service.js';

/**
 * JSON views of the database service's results: what the admin API answers and what the CLI
 * reads back from it (or builds itself when no server runs). One place, so the two agree.
 */

/** JSON shape of a database in API responses. */
export interface DatabaseJson {
  id: string;
  readOnly: boolean;
  poolMode: DatabaseRecord['poolMode'];
  createdAt: string;
  /** Who its clients run as, when a role mode was chosen (issue 18); read-only wins: `reader`. */
  roleMode?: 'owner' | 'writer' | 'reader';
  /** Made from this template, at this version; the error of its last failed migration. */
  template?: string;
  templateVersion?: number;
  migrationError?: string;
}

export interface CreatedDatabaseJson {
  id: string;
  readOnly: boolean;
  username: string;
  password: string;
  connectionString: string;
  psql: string;
}

export type PasswordJson = Omit<CreatedDatabaseJson, 'id' | 'readOnly'>;

export const databaseJson = (r: DatabaseRecord): DatabaseJson => ({
  id: r.id,
  readOnly: r.readOnly,
  poolMode: r.poolMode,
  createdAt: r.createdAt.toISOString(),
  ...(r.roleMode ? { roleMode: accessMode(r) } : {}),
  ...(r.template ? { template: r.template, templateVersion: r.templateVersion ?? 0 } : {}),
  ...(r.migrationError ? { migrationError: r.migrationError } : {}),
});

/** JSON shape of a template in API responses. */
export interface TemplateJson {
  name: string;
  version: number;
  databases: number;
  createdAt: string;
  updatedAt: string;
}

export const templateJson = (t: TemplateRecord): TemplateJson => ({
  name: t.name,
  version: t.version,
  databases: t.databases,
  createdAt: t.createdAt.toISOString(),
  updatedAt: t.updatedAt.toISOString(),
});

export interface VersionJson {
  version: string;
  sha256: string;
  sizeBytes: number;
  createdAt: string;
}

export interface RestoredJson {
  id: string;
  /** The version asked for. */
  restoredFrom: string;
  /** Its content, recorded again as the newest version. */
  version: VersionJson;
}

export interface ClonedJson extends CreatedDatabaseJson {
  source: string;
  /** The clone's own first version. */
  version: VersionJson;
}

export interface UploadedJson {
  id: string;
  /** True when the upload created the database (then `password` is set, shown once). */
  created: boolean;
  readOnly: boolean;
  username: string;
  password?: string;
  /** Without `password` for an existing database: its credentials did not change. */
  connectionString: string;
  psql: string;
  /** The version the upload was stored as; null without an archive. */
  version: VersionJson | null;
}

export const versionJson = (v: VersionRecord): VersionJson => ({
  version: v.version,
  sha256: v.sha256,
  sizeBytes: v.sizeBytes,
  createdAt: v.createdAt.toISOString(),
});

export type Info = (id: string, username: string, password: string | undefined) => ConnectionInfo;

export function clonedJson(
  cloned: CreatedDatabase & { version: VersionRecord },
  source: string,
  info: Info,
): ClonedJson {
  return {
    id: cloned.database.id,
    readOnly: cloned.database.readOnly,
    username: cloned.username,
    password: cloned.password,
    ...info(cloned.database.id, cloned.username, cloned.password),
    source,
    version: versionJson(cloned.version),
  };
}

export function uploadedJson(uploaded: UploadedDatabase, info: Info): UploadedJson {
  return {
    id: uploaded.database.id,
    created: uploaded.created,
    readOnly: uploaded.database.readOnly,
    username: uploaded.username,
    ...(uploaded.password !== undefined ? { password: uploaded.password } : {}),
    ...info(uploaded.database.id, uploaded.username, uploaded.password),
    version: uploaded.version ? versionJson(uploaded.version) : null,
  };
}
