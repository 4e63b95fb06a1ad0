import { rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { createScramSha256Data } from 'pg-gateway';
import type { Catalog, DatabaseRecord, PoolMode, RoleMode, VersionRecord } from '../catalog/catalog.js';
import type { DatabaseRegistry } from '../databases/registry.js';
import { errors, InvalidRequestError, NotFoundError, PayloadTooLargeError } from '../errors.js';
import { databasePath, isReservedDatabaseId, isValidDatabaseId } from '../ids.js';
import { KeyedChain } from '../keyed-chain.js';
import { extractTarball } from '../pgdata/extract.js';
import type { TemplateSpares } from '../pgdata/spares.js';
import { type PgDataIdentity, readPgDataIdentity, TarballRejectedError } from '../pgdata/tarball.js';
import { createFromTemplate } from '../pgdata/template.js';
import { forgetIncarnation, writeIncarnation } from '../storage/local-marks.js';
import { type Snapshots, VERSION_PATTERN, VersionNotFoundError } from '../storage/snapshots.js';
import type { WalObjects } from '../storage/wal-objects.js';
import { DEFAULT_USER, generatePassword, passwordToStore, userName } from './credential-rules.js';
import type { TemplateManager } from './templates.js';

/**
 * Database lifecycle operations behind the admin API and the CLI: the catalog entry and the
 * PGDATA directory are created and removed together.
 */

export interface CreateOptions {
  readOnly?: boolean;
  username?: string;
  password?: string;
  poolMode?: PoolMode | null;
  /** Made from this template (issue 18); the role mode then defaults to `writer`. */
  template?: string;
  roleMode?: RoleMode | null;
}

export interface CreatedDatabase {
  database: DatabaseRecord;
  username: string;
  /** Shown once; only a SCRAM verifier is stored. */
  password: string;
}

export interface UploadedDatabase {
  database: DatabaseRecord;
  /** True when the upload created the database. */
  created: boolean;
  username: string;
  /** Only for a database the upload created (shown once); an existing one keeps its credentials. */
  password?: string;
  /** The version the upload was stored as; undefined without an archive. */
  version?: VersionRecord;
}

export { DEFAULT_USER, generatePassword, InvalidRequestError, NotFoundError, PayloadTooLargeError };

export const NO_ARCHIVE_MESSAGE = 'no archive configured (set ARCHIVE_URL)';

/** Storage errors a client caused, as the errors the API maps to 4xx; anything else unchanged. */
function clientError(err: unknown): unknown {
  if (err instanceof TarballRejectedError) {
    const message = `upload rejected: ${err.message}`;
    return err.problem === 'too-large' ? new PayloadTooLargeError(message) : new InvalidRequestError(message);
  }
  if (err instanceof VersionNotFoundError) return new NotFoundError(err.message);
  return err;
}

export class DatabaseManager {
  private identity: Promise<PgDataIdentity> | undefined;

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
      /** Shipped WAL, when ARCHIVE_URL is set (the restorable range). */
      wal?: WalObjects | undefined;
      /** Shortest password accepted (MIN_PASSWORD_LENGTH); default 12. */
      minPasswordLength?: number;
      /** Templates databases can be made from (issue 18). */
      templates?: TemplateManager;
      /**
       * Cluster mode: a command that rewrites a database's files runs only on its owner
       * (Cluster.whileLocal claims it and keeps it, or refuses with 409 naming the owner).
       */
      ownership?: {
        whileLocal<T>(id: string, fn: () => Promise<T>): Promise<T>;
        forgetLocal(id: string): void;
      };
    },
  ) {}

  /**
   * Creating and deleting one id run one at a time on this node: a delete racing a create could
   * otherwise answer 204 before the create's 201 and leave its directory behind with no catalog
   * entry, and two creates of one id could collide on the directory (500) instead of the second
   * hearing 409.
   */
  private readonly byId = new KeyedChain<string>();

  create(id: string, opts: CreateOptions = {}): Promise<CreatedDatabase> {
    return this.byId.run(id, () => this.createNow(id, opts));
  }

  private async createNow(id: string, opts: CreateOptions): Promise<CreatedDatabase> {
    // A template's newest version (its directory built on this node first if it lacks it).
    const { template: name, ...rest } = opts;
    const template =
      name === undefined ? undefined : { name, version: (await this.templates().get(name)).version };
    const created = await this.register(id, { ...rest, ...(template ? { template } : {}) });
    try {
      const dest = databasePath(this.deps.dataDir, id);
      if (template) {
        const version = await this.templates().take(template.name, dest);
        // An update landed in between: the copy holds the newer version (nothing to migrate later).
        if (version !== template.version)
          await this.deps.catalog.setTemplateState(id, { templateVersion: version });
      } else if (this.deps.spares) await this.deps.spares.take(dest);
      else await createFromTemplate(this.deps.templateDir, dest);
      // Archive it at once, so another node never takes a missing archive for an empty database.
      await this.deps.snapshots?.snapshot(id, dest);
    } catch (err) {
      await this.discard(id);
      throw err;
    }
    return created;
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
  delete(id: string): Promise<void> {
    return this.byId.run(id, () => this.deleteNow(id));
  }

  private async deleteNow(id: string): Promise<void> {
    await this.get(id);
    await this.local(id, async () => {
      await this.deps.registry?.close(id);
      await this.deps.snapshots?.purge(id);
      await this.deps.catalog.deleteDatabase(id);
    });
    this.deps.ownership?.forgetLocal(id);
    this.deps.registry?.forget(id);
    await rm(databasePath(this.deps.dataDir, id), { recursive: true, force: true });
    await forgetIncarnation(databasePath(this.deps.dataDir, id));
  }

  /**
   * Changes a database's flags. An open database is closed (its clients disconnected) so the next
   * open runs with the new identity and pool mode.
   */
  async update(
    id: string,
    patch: { readOnly?: boolean; poolMode?: PoolMode | null; roleMode?: RoleMode | null },
  ): Promise<DatabaseRecord> {
    await this.get(id);
    await this.deps.registry?.close(id);
    const updated = await this.deps.catalog.updateDatabase(id, patch);
    if (!updated) throw new NotFoundError(`database "${id}" does not exist`);
    return updated;
  }

  /** Sets a new password (generated when not given) for a user of the database. */
  async passwd(id: string, opts: { username?: string; password?: string } = {}) {
    const username = userName(opts.username);
    const password = this.passwordFor(opts.password);
    await this.get(id);
    await this.deps.catalog.setCredential(id, username, await createScramSha256Data(password));
    return { username, password };
  }

  /** The database's archived versions, newest first. */
  async versions(id: string): Promise<VersionRecord[]> {
    const snapshots = this.archive();
    await this.get(id);
    return snapshots.list(id);
  }

  /**
   * The points in time a restore or clone `--at` can reach: from the oldest kept base to the
   * newest shipped WAL (or the newest base, without WAL). Undefined without any version.
   */
  async restorableRange(id: string): Promise<{ earliest: Date; latest: Date } | undefined> {
    const versions = await this.versions(id);
    const oldest = versions.at(-1);
    const newest = versions[0];
    if (!oldest || !newest) return undefined;
    const shipped = await this.deps.wal?.latestPoint(id);
    const latest = shipped && shipped > newest.walSince ? shipped : newest.walSince;
    return { earliest: oldest.walSince, latest };
  }

  /**
   * Replaces a database with one of its versions, or with its state at a point in time `at` (the
   * newest base before it plus the WAL shipped by then). Exactly one of the two. Its clients are
   * disconnected, it is closed (and snapshotted if written), its local copy replaced, and the
   * restored content recorded as the newest version.
   */
  async restore(id: string, version: string | undefined, at?: Date): Promise<VersionRecord> {
    const snapshots = this.archive();
    await this.get(id);
    if ((version === undefined) === (at === undefined)) {
      throw new InvalidRequestError('give either a version or a point in time (at)');
    }
    if (version !== undefined) await this.requireVersion(id, version);
    const dest = databasePath(this.deps.dataDir, id);
    try {
      return await this.whileClosed(id, () => snapshots.restoreInto(id, version, dest, at));
    } catch (err) {
      throw clientError(err);
    }
  }

  /**
   * A new database `newId` (new credentials, writable, default pool mode) holding a version of
   * `sourceId`: `version`, or the latest archived one (an open database's last snapshot).
   */
  async clone(
    sourceId: string,
    newId: string,
    opts: { version?: string; at?: Date; username?: string; password?: string } = {},
  ): Promise<CreatedDatabase & { version: VersionRecord }> {
    const snapshots = this.archive();
    await this.get(sourceId);
    if (opts.version !== undefined && opts.at !== undefined) {
      throw new InvalidRequestError('give a version or a point in time (at), not both');
    }
    if (opts.version !== undefined) await this.requireVersion(sourceId, opts.version);
    else if (!(await snapshots.latest(sourceId))) {
      throw new NotFoundError(`database "${sourceId}" has no archived version`);
    }
    return this.byId.run(newId, async () => {
      const created = await this.register(newId, opts);
      try {
        const version = await this.whileClosed(newId, () =>
          snapshots.cloneTo(sourceId, opts.version, newId, databasePath(this.deps.dataDir, newId), opts.at),
        );
        return { ...created, version };
      } catch (err) {
        await this.discard(newId);
        throw clientError(err);
      }
    });
  }

  /**
   * Installs a PGDATA tarball (PGlite `dumpDataDir()` output, gzip or plain) as the database:
   * validated while it streams in (at most `maxBytes` uncompressed), stored as a new version when
   * there is an archive, and made the local copy. With `create` the database is created (with a
   * generated password unless given); otherwise it must exist, its clients are disconnected and
   * its credentials stay. A rejected tarball changes nothing.
   */
  async upload(
    id: string,
    body: Readable,
    opts: { create?: boolean; maxBytes: number; username?: string; password?: string },
  ): Promise<UploadedDatabase> {
    try {
      if (opts.create) {
        return await this.byId.run(id, async () => {
          const created = await this.register(id, opts);
          try {
            const version = await this.whileClosed(id, () => this.install(id, body, opts.maxBytes));
            return { ...created, created: true as const, ...(version ? { version } : {}) };
          } catch (err) {
            await this.discard(id);
            throw err;
          }
        });
      }
      const database = await this.get(id);
      const version = await this.whileClosed(id, () => this.install(id, body, opts.maxBytes));
      return {
        database,
        created: false,
        username: opts.username ?? DEFAULT_USER,
        ...(version ? { version } : {}),
      };
    } catch (err) {
      body.destroy();
      throw clientError(err);
    }
  }

  // --- internals -------------------------------------------------------------------------------

  /** Validates the id and user name and records the database with new credentials. */
  private async register(
    id: string,
    opts: Omit<CreateOptions, 'template'> & { template?: { name: string; version: number } },
  ): Promise<CreatedDatabase> {
    if (!isValidDatabaseId(id))
      throw new InvalidRequestError(errors.invalidDatabaseId().hint ?? 'invalid database id');
    // A dbname of `postgres` or a template names no database (routing), so such an id is unreachable.
    if (isReservedDatabaseId(id)) throw new InvalidRequestError(`database id "${id}" is reserved`);
    const username = userName(opts.username);
    const password = this.passwordFor(opts.password);
    const scram = await createScramSha256Data(password);
    const database = await this.deps.catalog.createDatabase({
      id,
      readOnly: opts.readOnly ?? false,
      poolMode: opts.poolMode ?? null,
      // Databases made from a template default to the writer role (the template's objects protected).
      roleMode: opts.roleMode ?? (opts.template ? 'writer' : null),
      ...(opts.template ? { template: opts.template } : {}),
      username,
      scram,
    });
    // The id is new to the catalog, so whatever its path holds is of a deleted database of the
    // same id; the copy made next is marked as this incarnation (cluster/node.ts trusts only that).
    const dest = databasePath(this.deps.dataDir, id);
    try {
      await rm(dest, { recursive: true, force: true });
      await writeIncarnation(dest, database.incarnation);
    } catch (err) {
      await this.discard(id);
      throw err;
    }
    return { database, username, password };
  }

  /** The password to store (see passwordToStore). */
  private passwordFor(given: string | undefined): string {
    return passwordToStore(given, this.deps.minPasswordLength);
  }

  /** Undoes a half-made database: no catalog entry, no directory, no archived objects stay. */
  private async discard(id: string): Promise<void> {
    await this.deps.catalog.deleteDatabase(id);
    this.deps.registry?.forget(id);
    await rm(databasePath(this.deps.dataDir, id), { recursive: true, force: true });
    await forgetIncarnation(databasePath(this.deps.dataDir, id));
    await this.deps.snapshots?.purge(id).catch(() => undefined);
  }

  private templates(): TemplateManager {
    if (!this.deps.templates) throw new InvalidRequestError('templates are not available here');
    return this.deps.templates;
  }

  /** The database's TypeScript types (issue 18): read from its open session (it is opened if needed). */
  async types(id: string): Promise<string> {
    const record = await this.get(id);
    const registry = this.deps.registry;
    if (!registry) throw new InvalidRequestError('db types needs a running server');
    const lease = await registry.connect(record);
    try {
      return await this.templates().typesOf(lease.database);
    } finally {
      lease.release();
    }
  }

  /** Migrates one database made from a template to the template's newest version now. */
  async migrate(id: string) {
    return this.templates().migrateOne(await this.get(id));
  }

  private archive(): Snapshots {
    if (!this.deps.snapshots) throw new InvalidRequestError(NO_ARCHIVE_MESSAGE);
    return this.deps.snapshots;
  }

  private async requireVersion(id: string, version: string): Promise<void> {
    const found = VERSION_PATTERN.test(version) && (await this.deps.catalog.getVersion(id, version));
    if (!found) throw new NotFoundError(`database "${id}" has no version ${JSON.stringify(version)}`);
  }

  /** Runs `fn` while the database is closed and its clients wait (see `DatabaseRegistry.closeWhile`). */
  /** Closed meanwhile; in cluster mode also owned by this node throughout (see `ownership`). */
  private whileClosed<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.local(id, () => (this.deps.registry ? this.deps.registry.closeWhile(id, fn) : fn()));
  }

  private local<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.deps.ownership ? this.deps.ownership.whileLocal(id, fn) : fn();
  }

  /** Stages, validates and installs the tarball as the local copy; stores it as a version when archived. */
  private async install(id: string, body: Readable, maxBytes: number): Promise<VersionRecord | undefined> {
    const dest = databasePath(this.deps.dataDir, id);
    if (this.deps.snapshots) {
      return this.deps.snapshots.upload(id, body, { maxBytes, destDir: dest, replace: true });
    }
    this.identity ??= readPgDataIdentity(this.deps.templateDir);
    await extractTarball(body, dest, { maxBytes, expect: await this.identity, replace: true });
    return undefined;
  }
}
