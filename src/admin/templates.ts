import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Catalog, DatabaseRecord, TemplateRecord } from '../catalog/catalog.js';
import type { Database, DatabaseRegistry } from '../databases/registry.js';
import type { Engine } from '../engine/engine.js';
import { ConflictError, InvalidRequestError, NotFoundError } from '../errors.js';
import type { Logger } from '../log.js';
import { TemplateSpares } from '../pgdata/spares.js';
import { createFromTemplate } from '../pgdata/template.js';
import {
  buildTemplateDir,
  type OpenBuildSession,
  pgliteSession,
  queryDataDirCopy,
  TemplateSqlError,
  templateVersionDir,
} from '../pgdata/template-build.js';
import { firstRow } from '../wire/backend-scan.js';
import { query } from '../wire/protocol.js';
import {
  countMigration,
  engineBuildSession,
  type MigrationOutcome,
  migrateSession,
  setFailingSource,
} from './template-migrate.js';
import { renderTypes } from './types-gen.js';
import { parseSchemaModel, SCHEMA_MODEL_SQL } from './types-schema.js';

/**
 * Templates (issue 18): a named SQL schema databases are made from. Each version's data directory
 * is built once (base template + the SQL, as the template owner) under `templatesDir` and copied
 * by `db create --template`; a node that lacks it (another node made it) builds it from the SQL
 * the catalog keeps. Databases migrate to the newest version when they next open.
 */

const TEMPLATE_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
/** Largest template SQL or migration accepted (it is kept in the catalog). */
export const MAX_TEMPLATE_SQL_BYTES = 1024 * 1024;

export interface TemplateDeps {
  catalog: Catalog;
  /** The base template (TEMPLATE_DIR). */
  baseDir: string;
  /** Where template versions are built: DATA_DIR/_templates. */
  templatesDir: string;
  /** Absent for the CLI on a stopped server: no migration of databases then. */
  registry?: DatabaseRegistry;
  logger?: Logger;
  /** Where builds run on a server (an EngineHost); absent: PGlite in this thread (the CLI). */
  engines?: { open(dataDir: string, opts: { readOnly: boolean }): Promise<Engine> };
  /**
   * Ready-made copies kept per template in use (SPARE_DATABASES), under `<templatesDir>/.spares`,
   * so a create from a template is a rename like a plain one; 0 or no logger = copy each time.
   */
  spares?: number;
}

/** One database's outcome of `template migrate --all` (or of a migration of one database). */
export interface MigrationResult {
  id: string;
  outcome: MigrationOutcome['kind'];
  version: number;
  error?: string;
}

export class TemplateManager {
  /** How builds reach Postgres: an engine worker on a server, PGlite in-process otherwise. */
  private readonly session: OpenBuildSession;
  /** Builds under way, per version directory: concurrent creates wait for the same build. */
  private readonly builds = new Map<string, Promise<void>>();
  /** Spares per template version directory (see `take`). */
  private readonly spares = new Map<string, Promise<TemplateSpares>>();

  constructor(private readonly deps: TemplateDeps) {
    this.session = deps.engines ? engineBuildSession(deps.engines) : pgliteSession;
    // The failing-migrations gauge reads the catalog when scraped (right after a restart too).
    setFailingSource(async () => (await deps.catalog.listDatabases()).filter((d) => d.migrationError).length);
  }

  async create(name: string, sql: string): Promise<TemplateRecord> {
    checkName(name);
    checkSql(sql);
    if (await this.deps.catalog.getTemplate(name))
      throw new ConflictError(`template "${name}" already exists`);
    // Built before it is recorded: SQL that fails is a 400 and leaves nothing behind.
    const dir = templateVersionDir(this.deps.templatesDir, name, 1);
    await this.build(name, [sql], dir);
    try {
      return await this.deps.catalog.createTemplate(name, sql);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  list(): Promise<TemplateRecord[]> {
    return this.deps.catalog.listTemplates();
  }

  async get(name: string): Promise<TemplateRecord> {
    const found = TEMPLATE_NAME.test(name) ? await this.deps.catalog.getTemplate(name) : undefined;
    if (!found) throw new NotFoundError(`template "${name}" does not exist`);
    return found;
  }

  /** Refused (409) while a database made from it exists. */
  async delete(name: string): Promise<void> {
    await this.get(name);
    const outcome = await this.deps.catalog.deleteTemplate(name);
    if (outcome === 'missing') throw new NotFoundError(`template "${name}" does not exist`);
    if (outcome === 'in-use') {
      const users = (await this.deps.catalog.listDatabases()).filter((d) => d.template === name).length;
      throw new ConflictError(`template "${name}" is used by ${users} database(s); delete them first`);
    }
    await this.dropOlderDirs(name, Number.POSITIVE_INFINITY);
    await rm(path.join(this.deps.templatesDir, name), { recursive: true, force: true });
    await rm(path.join(this.deps.templatesDir, '.spares', name), { recursive: true, force: true });
  }

  /**
   * Records `sql` as the next version. The new version's directory is built first (so a migration
   * that fails on the template itself is a 400 and changes nothing); older directories go.
   */
  async update(name: string, sql: string): Promise<TemplateRecord> {
    checkSql(sql);
    const current = await this.get(name);
    const steps = await this.deps.catalog.templateSteps(name);
    const version = current.version + 1;
    const dir = templateVersionDir(this.deps.templatesDir, name, version);
    await this.build(name, [...steps, sql], dir);
    const updated = await this.deps.catalog
      .addTemplateVersion(name, version, sql)
      .catch(async (err: unknown) => {
        await rm(dir, { recursive: true, force: true });
        throw err;
      });
    if (!updated) throw new NotFoundError(`template "${name}" does not exist`);
    await this.dropOlderDirs(name, version);
    return updated;
  }

  /** The newest version's data directory (built here if this node lacks it), and that version. */
  async dirFor(name: string): Promise<{ dir: string; version: number }> {
    const template = await this.get(name);
    const dir = templateVersionDir(this.deps.templatesDir, name, template.version);
    const built = await stat(path.join(dir, 'PG_VERSION')).then(
      () => true,
      () => false,
    );
    if (!built) {
      const steps = await this.deps.catalog.templateSteps(name);
      await this.build(name, steps.slice(0, template.version), dir);
    }
    return { dir, version: template.version };
  }

  /**
   * Puts a new data directory made from the template's newest version at `dest`: a spare when
   * one is ready, otherwise a copy. Returns the version it holds.
   */
  async take(name: string, dest: string): Promise<number> {
    const { dir, version } = await this.dirFor(name);
    const { logger, spares: count = 0 } = this.deps;
    if (count <= 0 || !logger) {
      await createFromTemplate(dir, dest);
      return version;
    }
    let spares: Promise<TemplateSpares> | undefined = this.spares.get(dir);
    if (!spares) {
      const made = new TemplateSpares(
        dir,
        path.join(this.deps.templatesDir, '.spares', name, `v${version}`),
        count,
        logger,
      );
      spares = made.start().then(() => made);
      this.spares.set(dir, spares);
    }
    await (await spares).take(dest);
    return version;
  }

  /** Waits for spares being made (shutdown, tests). */
  async idle(): Promise<void> {
    for (const spares of this.spares.values()) await (await spares.catch(() => undefined))?.idle();
  }

  /** The template's TypeScript types (see types-gen.ts). */
  async types(name: string): Promise<string> {
    const { dir, version } = await this.dirFor(name);
    const text = await queryDataDirCopy(dir, SCHEMA_MODEL_SQL, this.session);
    return renderTypes(
      parseSchemaModel(text ?? '{"relations":[],"types":[]}'),
      typesHeader(`template "${name}" v${version}`),
    );
  }

  /**
   * Migrates an open database made from a template to the template's newest version, if it is
   * behind; records the outcome in the catalog. Runs while no client uses the session.
   */
  async migrateOpen(database: Database): Promise<MigrationResult | undefined> {
    const record = await this.deps.catalog.getDatabase(database.id);
    if (!record?.template) return undefined;
    const template = await this.deps.catalog.getTemplate(record.template);
    if (!template) return undefined;
    const at = record.templateVersion ?? 0;
    if (at >= template.version && !record.migrationError)
      return { id: record.id, outcome: 'current', version: at };
    const steps = await this.deps.catalog.templateSteps(record.template);
    const owner = Symbol('template migration');
    await database.hold.acquire(owner);
    let outcome: MigrationOutcome;
    try {
      outcome = await migrateSession(database.engine, record.template, steps.slice(0, template.version));
    } finally {
      database.hold.release(owner);
    }
    return this.record(record, outcome);
  }

  /** Migrates every database made from `name` now (each opened if closed), one at a time. */
  async migrateAll(name: string, onResult?: (r: MigrationResult, done: number, total: number) => void) {
    await this.get(name);
    const databases = (await this.deps.catalog.listDatabases()).filter((d) => d.template === name);
    const results: MigrationResult[] = [];
    for (const record of databases) {
      const result = await this.migrateOne(record);
      results.push(result);
      onResult?.(result, results.length, databases.length);
    }
    return results;
  }

  /** Opens the database (its open migrates it) or migrates it where it is open. */
  async migrateOne(record: DatabaseRecord): Promise<MigrationResult> {
    const registry = this.deps.registry;
    if (!registry) throw new InvalidRequestError('migrating databases needs a running server');
    if (!record.template)
      throw new InvalidRequestError(`database "${record.id}" was not made from a template`);
    const before = record.templateVersion ?? 0;
    let lease: Awaited<ReturnType<DatabaseRegistry['connect']>>;
    try {
      // Opening a closed database migrates it (the registry's open hook).
      lease = await registry.connect(record);
    } catch (err) {
      // It could not open: this database's outcome, not the request's.
      const error = err instanceof Error ? err.message : String(err);
      return { id: record.id, outcome: 'failed', version: before, error };
    }
    try {
      const result = (await this.migrateOpen(lease.database).catch(
        (err: unknown): MigrationResult => ({
          id: record.id,
          outcome: 'failed',
          version: before,
          error: err instanceof Error ? err.message : String(err),
        }),
      )) ?? {
        id: record.id,
        outcome: 'current' as const,
        version: before,
      };
      // Migrated by the open just before: say so.
      return result.outcome === 'current' && result.version > before
        ? { ...result, outcome: 'migrated' }
        : result;
    } finally {
      lease.release();
    }
  }

  /** The TypeScript types of an open database (the caller holds a lease on it). */
  async typesOf(database: Database): Promise<string> {
    const owner = Symbol('types');
    await database.hold.acquire(owner);
    try {
      const row = firstRow(await database.engine.exec(query(SCHEMA_MODEL_SQL)));
      if (!row?.[0]) throw new Error(`database "${database.id}": could not read its schema`);
      return renderTypes(parseSchemaModel(row[0]), typesHeader(`database "${database.id}"`));
    } finally {
      database.hold.release(owner);
    }
  }

  private async record(record: DatabaseRecord, outcome: MigrationOutcome): Promise<MigrationResult> {
    const wasFailing = Boolean(record.migrationError);
    const log = this.deps.logger;
    if (outcome.kind === 'failed') {
      await this.deps.catalog.setTemplateState(record.id, {
        templateVersion: outcome.version,
        migrationError: outcome.error,
      });
      countMigration('failed');
      log?.warn(
        { db: record.id, template: record.template, error: outcome.error },
        'template migration failed',
      );
      return { id: record.id, outcome: 'failed', version: outcome.version, error: outcome.error };
    }
    if (wasFailing || record.templateVersion !== outcome.version) {
      await this.deps.catalog.setTemplateState(record.id, {
        templateVersion: outcome.version,
        migrationError: null,
      });
    }
    if (outcome.kind === 'migrated') {
      countMigration('migrated');
      log?.info(
        { db: record.id, template: record.template, from: outcome.from, to: outcome.version },
        'database migrated',
      );
    }
    return { id: record.id, outcome: outcome.kind, version: outcome.version };
  }

  private build(name: string, steps: readonly string[], dir: string): Promise<void> {
    let running = this.builds.get(dir);
    if (!running) {
      running = buildTemplateDir({ baseDir: this.deps.baseDir, dest: dir, name, steps }, this.session)
        .catch((err: unknown) => {
          if (err instanceof TemplateSqlError) throw new InvalidRequestError(err.message);
          throw err;
        })
        .finally(() => this.builds.delete(dir));
      this.builds.set(dir, running);
    }
    return running;
  }

  /** Removes the template's versions before `keep` (all with `keep` infinite), and their spares. */
  private async dropOlderDirs(name: string, keep: number): Promise<void> {
    const root = path.join(this.deps.templatesDir, name);
    const sparesRoot = path.join(this.deps.templatesDir, '.spares', name);
    const older = (entry: string) => {
      const v = /^v(\d+)$/.exec(entry);
      return v !== null && Number(v[1]) < keep;
    };
    for (const [dir, spares] of this.spares) {
      if (path.dirname(dir) !== root || !older(path.basename(dir))) continue;
      this.spares.delete(dir);
      await (await spares.catch(() => undefined))?.idle();
    }
    for (const parent of [root, sparesRoot]) {
      for (const entry of await readdir(parent).catch(() => [] as string[])) {
        if (older(entry)) await rm(path.join(parent, entry), { recursive: true, force: true });
      }
    }
  }
}

function checkName(name: string): void {
  if (!TEMPLATE_NAME.test(name)) {
    throw new InvalidRequestError(
      'invalid template name: 1-63 of a-z, 0-9, _ and -, starting with a letter or digit',
    );
  }
}

function checkSql(sql: string): void {
  if (sql.trim() === '') throw new InvalidRequestError('the template SQL is empty');
  if (Buffer.byteLength(sql) > MAX_TEMPLATE_SQL_BYTES) {
    throw new InvalidRequestError(`the template SQL exceeds ${MAX_TEMPLATE_SQL_BYTES} bytes`);
  }
}

const typesHeader = (what: string) => `Generated by pglite-gateway from ${what}: do not edit.`;
