import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { createScramSha256Data } from 'pg-gateway';
import type { Catalog, DatabaseRecord, PoolMode } from '../catalog/catalog.js';
import { errors } from '../errors.js';
import { databasePath, isValidDatabaseId } from '../gateway/routing.js';
import type { Snapshots } from '../storage/snapshots.js';
import type { DatabaseRegistry } from './registry.js';
import type { TemplateSpares } from './spares.js';
import { createFromTemplate } from './template.js';

/**
 * Database lifecycle operations behind the admin API and the CLI: the catalog entry and the
 * PGDATA directory are created and removed together.
 */

export const DEFAULT_USER = 'postgres';

export interface CreatedDatabase {
  database: DatabaseRecord;
  username: string;
  /** Shown once; only a SCRAM verifier is stored. */
  password: string;
}

export class InvalidRequestError extends Error {}
export class NotFoundError extends Error {}

export function generatePassword(): string {
  return randomBytes(18).toString('base64url');
}

export class DatabaseManager {
  constructor(
    private readonly deps: {
      catalog: Catalog;
      dataDir: string;
      templateDir: string;
      /** Absent when the CLI works on a stopped server's data directory. */
      registry?: DatabaseRegistry;
      /** Ready-made template copies that make create instant; absent = copy each time. */
      spares?: TemplateSpares;
      /** The archive's versions, when ARCHIVE_URL is set. */
      snapshots?: Snapshots;
    },
  ) {}

  async create(
    id: string,
    opts: { readOnly?: boolean; username?: string; password?: string; poolMode?: PoolMode | null } = {},
  ): Promise<CreatedDatabase> {
    if (!isValidDatabaseId(id)) throw new InvalidRequestError(errors.invalidDatabaseId().hint);
    const username = opts.username ?? DEFAULT_USER;
    if (!/^[A-Za-z0-9_.-]{1,63}$/.test(username)) throw new InvalidRequestError('invalid user name');
    const password = opts.password ?? generatePassword();
    const scram = await createScramSha256Data(password);
    const database = await this.deps.catalog.createDatabase({
      id,
      readOnly: opts.readOnly ?? false,
      poolMode: opts.poolMode ?? null,
      username,
      scram,
    });
    try {
      const dest = databasePath(this.deps.dataDir, id);
      if (this.deps.spares) await this.deps.spares.take(dest);
      else await createFromTemplate(this.deps.templateDir, dest);
      // Archive it at once, so another node never takes a missing archive for an empty database.
      await this.deps.snapshots?.snapshot(id, dest);
    } catch (err) {
      // Nothing half-made stays behind: no catalog entry, no directory.
      await this.deps.catalog.deleteDatabase(id);
      await rm(databasePath(this.deps.dataDir, id), { recursive: true, force: true });
      throw err;
    }
    return { database, username, password };
  }

  list(): Promise<DatabaseRecord[]> {
    return this.deps.catalog.listDatabases();
  }

  async get(id: string): Promise<DatabaseRecord> {
    const record = isValidDatabaseId(id) ? await this.deps.catalog.getDatabase(id) : undefined;
    if (!record) throw new NotFoundError(`database "${id}" does not exist`);
    return record;
  }

  /** Disconnects its clients, closes it, and removes its catalog entry and data. */
  async delete(id: string): Promise<void> {
    await this.get(id);
    await this.deps.registry?.close(id);
    await this.deps.snapshots?.purge(id);
    await this.deps.catalog.deleteDatabase(id);
    await rm(databasePath(this.deps.dataDir, id), { recursive: true, force: true });
  }

  /**
   * Changes a database's flags. An open database is closed (its clients disconnected) so the next
   * open runs with the new identity and pool mode.
   */
  async update(
    id: string,
    patch: { readOnly?: boolean; poolMode?: PoolMode | null },
  ): Promise<DatabaseRecord> {
    await this.get(id);
    await this.deps.registry?.close(id);
    const updated = await this.deps.catalog.updateDatabase(id, patch);
    if (!updated) throw new NotFoundError(`database "${id}" does not exist`);
    return updated;
  }

  /** Sets a new password (generated when not given) for a user of the database. */
  async passwd(id: string, opts: { username?: string; password?: string } = {}) {
    await this.get(id);
    const username = opts.username ?? DEFAULT_USER;
    const password = opts.password ?? generatePassword();
    await this.deps.catalog.setCredential(id, username, await createScramSha256Data(password));
    return { username, password };
  }
}
