import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Catalog, VersionRecord } from '../catalog/catalog.js';
import { KeyedChain } from '../keyed-chain.js';
import type { Logger } from '../log.js';
import { installDir, type StagedDir, stageTarball } from '../pgdata/extract.js';
import type { FileFlush } from '../pgdata/file-flush.js';
import {
  type PackOptions,
  type PgDataIdentity,
  packToFile,
  TarballRejectedError,
} from '../pgdata/tarball.js';
import { deltaPacking, type TemplateFiles, type TemplateSource } from '../pgdata/template-delta.js';
import {
  ArchiveKeyExistsError,
  ArchiveNotFoundError,
  type ArchiveStore,
  backoffMs,
  sleep,
} from './archive.js';
import {
  DatabaseGoneError,
  DEFAULT_KEEP_VERSIONS,
  describeError,
  VERSION_PATTERN,
  VersionNotFoundError,
  VersionObjects,
  versionKey,
} from './version-objects.js';
import type { WalObjects } from './wal-objects.js';

/**
 * What every kind of version operation shares (snapshots.ts builds on it): the archive, the
 * catalog, spooling through `workDir`, storing a spooled tarball as a new verified version with
 * retention, staging a version for extraction, and point-in-time bases with their WAL.
 */

export interface SnapshotsOptions {
  archive: ArchiveStore;
  catalog: Pick<Catalog, 'addVersion' | 'listVersions' | 'getVersion' | 'deleteVersion'>;
  /** Spool files live here: local disk (not tmpfs), e.g. `DATA_DIR/.storage`. Created on demand. */
  workDir: string;
  logger: Logger;
  /** Versions kept per database (KEEP_VERSIONS); older ones are deleted. Default 10, minimum 1. */
  keepVersions?: number;
  /** Shipped WAL (DURABILITY=async|sync): replayed for point-in-time restores and clones. */
  wal?: WalObjects | undefined;
  /** PGDATA identity of this PGlite (`readPgDataIdentity(templateDir)`); fetched and uploaded data must match. */
  expect?: PgDataIdentity;
  /** Attempts of a whole upload (with verification) or download (with checksum). Default 3. */
  attempts?: number;
  /** First delay between attempts; doubles each time. Default 500 ms. */
  retryBaseMs?: number;
  /** After an upload, objects up to this size are downloaded again and their sha256 compared. Default 16 MiB. */
  readbackMaxBytes?: number;
  /** gzip level for snapshots. Default 6. */
  gzipLevel?: number;
  /** fsync extracted files before their directory is renamed into place. Default true. */
  fsync?: boolean;
  /**
   * This node's template (TEMPLATE_DIR, which its spares copy): bases are packed as deltas that
   * leave out the files it holds, and delta bases can be read (see template-delta.ts). Without
   * it bases are whole PGDATAs and a delta base is refused.
   */
  template?: TemplateFiles | undefined;
}

/** Where the template a delta base was made against is stored (content-addressed, never deleted). */
export function templateKey(hash: string): string {
  return `_templates/${hash}.tar.gz`;
}

/** Names `siblingTemp()` gives the temporary directories of extraction and replacement. */
export const TEMPORARY_SIBLING = /^\.[a-z0-9][a-z0-9-]*\.(extract|old)-[0-9a-f]{12}$/;

/** A size beyond any real PGDATA: fetched data is trusted by checksum, not by size. */
export const NO_SIZE_LIMIT = Number.MAX_SAFE_INTEGER;

export abstract class SnapshotStore {
  protected readonly archive: ArchiveStore;
  protected readonly catalog: SnapshotsOptions['catalog'];
  protected readonly logger: Logger;
  protected readonly keepVersions: number;
  /** In-flight fetches, keyed by database and destination: concurrent callers share one. */
  protected readonly fetching = new Map<string, Promise<VersionRecord>>();
  /** Per-database chain serialising writes (snapshot, restore, upload, clone target). */
  protected readonly writes = new KeyedChain();
  protected readonly objects: VersionObjects;
  /**
   * Where a fetch gets a ready-made copy of the template to write the version over (see
   * `ExtractOptions.seed`); set by the server once its spare directories exist.
   */
  seed: ((dir: string) => Promise<boolean>) | undefined;

  constructor(protected readonly opts: SnapshotsOptions) {
    this.archive = opts.archive;
    this.catalog = opts.catalog;
    this.logger = opts.logger;
    this.keepVersions = Math.max(1, opts.keepVersions ?? DEFAULT_KEEP_VERSIONS);
    this.objects = new VersionObjects({
      archive: opts.archive,
      logger: opts.logger,
      attempts: Math.max(1, opts.attempts ?? 3),
      retryBaseMs: opts.retryBaseMs ?? 500,
      readbackMaxBytes: opts.readbackMaxBytes ?? 16 * 1024 * 1024,
    });
  }

  describe(): string {
    return this.archive.describe();
  }

  /** The database's versions, newest first. */
  list(id: string): Promise<VersionRecord[]> {
    return this.catalog.listVersions(id);
  }

  async latest(id: string): Promise<VersionRecord | undefined> {
    return (await this.catalog.listVersions(id))[0];
  }

  /** The newest base taken at or before `at`: the one a point-in-time restore starts from. */
  protected async baseAt(id: string, at: Date): Promise<VersionRecord> {
    const base = (await this.catalog.listVersions(id)).find((v) => v.walSince <= at);
    if (!base)
      throw new VersionNotFoundError(`no archived version of "${id}" is older than ${at.toISOString()}`);
    return base;
  }

  /**
   * Stores a staged base as a new version: as it was, or, when `at` is given (a point in time) or
   * WAL was shipped after it (`at` undefined means the newest state), with that WAL written into
   * it and repacked. Postgres replays it when the database opens.
   */
  protected async storeWithWal(
    id: string,
    base: VersionRecord,
    stagedDir: string,
    spool: string,
    at: Date | undefined,
    replayWal = at !== undefined,
  ): Promise<VersionRecord> {
    const replayed =
      replayWal && this.opts.wal
        ? await this.opts.wal.replayInto(base.databaseId, stagedDir, base, at)
        : undefined;
    if (!replayed || replayed.pieces === 0)
      return this.store(id, spool, { sha256: base.sha256, size: base.sizeBytes });
    const repacked = this.spoolPath(id, 'pitr.tar.gz');
    try {
      const packed = await packToFile(stagedDir, repacked, this.packOptions());
      return await this.store(id, repacked, packed, { walLsn: replayed.end, walSince: new Date() });
    } finally {
      await rm(repacked, { force: true });
    }
  }

  protected extractOptions() {
    return {
      ...(this.opts.expect ? { expect: this.opts.expect } : {}),
      fsync: this.opts.fsync ?? true,
      template: this.templateSource(),
    };
  }

  private templateStored: Promise<void> | undefined;
  private readonly writerTemplates = new Map<string, Promise<string>>();

  private templateSource(): TemplateSource | undefined {
    const local = this.opts.template;
    return local && { local, fetch: (hash) => this.writerTemplate(hash) };
  }

  /**
   * Stores this node's template in the archive unless it is there: every base packed here may
   * leave out its files, so it must be stored before the first such base is recorded.
   */
  protected ensureTemplateStored(): Promise<void> {
    const template = this.opts.template;
    if (!template) return Promise.resolve();
    this.templateStored ??= (async () => {
      const { hash } = await template.contents();
      const key = templateKey(hash);
      if (await this.archive.head(key)) return;
      const spool = this.spoolPath('_template', 'tar.gz');
      try {
        const packed = await packToFile(template.dir, spool, {
          gzipLevel: this.opts.gzipLevel ?? 6,
          ...(this.opts.expect ? { expect: this.opts.expect } : {}),
        });
        // Another node storing the same contents first is as good.
        await this.archive
          .put(key, () => createReadStream(spool), packed.size)
          .catch((err: unknown) => {
            if (!(err instanceof ArchiveKeyExistsError)) throw err;
          });
        this.logger.info({ key, bytes: packed.size }, 'template stored in the archive');
      } finally {
        await rm(spool, { force: true });
      }
    })().catch((err: unknown) => {
      this.templateStored = undefined;
      throw err;
    });
    return this.templateStored;
  }

  /** The template a delta base names, from the archive, unpacked once per process under workDir. */
  private writerTemplate(hash: string): Promise<string> {
    let dir = this.writerTemplates.get(hash);
    if (!dir) {
      const target = path.join(this.opts.workDir, `template-${hash}`);
      dir = (async () => {
        const staged = await stageTarball(await this.archive.get(templateKey(hash)), target, {
          maxBytes: NO_SIZE_LIMIT,
          ...(this.opts.expect ? { expect: this.opts.expect } : {}),
          fsync: false,
        });
        await installDir(staged.dir, target, { replace: true });
        return target;
      })();
      dir.catch(() => this.writerTemplates.delete(hash));
      this.writerTemplates.set(hash, dir);
    }
    return dir;
  }

  /**
   * A snapshot the extraction rules refuse is not stored: it would be a version no restore or
   * clone accepts, and retention would delete a good one to make room for it. Logs it as such.
   */
  protected refusal(id: string, err: unknown): unknown {
    if (!(err instanceof TarballRejectedError)) return err;
    this.logger.error(
      { db: id, problem: err.problem, err: describeError(err) },
      'snapshot refused: the data directory holds what no restore would accept (remove it to resume snapshots); no version recorded, the earlier versions stay',
    );
    return new TarballRejectedError(err.problem, `snapshot of "${id}" refused: ${err.message}`);
  }

  /** Packing checks what extraction will (`expect` included), so no stored version is refused later. */
  protected packOptions(): PackOptions {
    return {
      gzipLevel: this.opts.gzipLevel ?? 6,
      ...(this.opts.expect ? { expect: this.opts.expect } : {}),
      ...(this.opts.template ? { delta: deltaPacking(this.opts.template) } : {}),
    };
  }

  protected spoolPath(id: string, what: string): string {
    return path.join(this.opts.workDir, `${id}.${randomBytes(6).toString('hex')}.${what}`);
  }

  protected async resolve(id: string, version: string | undefined): Promise<VersionRecord> {
    if (version !== undefined && !VERSION_PATTERN.test(version)) {
      throw new VersionNotFoundError(`invalid version id ${JSON.stringify(version)}`);
    }
    const record = version ? await this.catalog.getVersion(id, version) : await this.latest(id);
    if (!record) {
      throw new VersionNotFoundError(
        version ? `database "${id}" has no version ${version}` : `database "${id}" has no archived version`,
      );
    }
    return record;
  }

  /**
   * Uploads the spooled archive as a new version, verifies it, records it, applies retention.
   * Each attempt writes a fresh key; a failed attempt's object is deleted (best effort) and never
   * recorded, so the latest recorded version stays the last good one.
   */
  protected async store(
    id: string,
    spool: string,
    packed: { sha256: string; size: number },
    wal: { walLsn?: bigint | undefined; walSince?: Date } = {},
  ): Promise<VersionRecord> {
    await this.ensureTemplateStored();
    const version = await this.objects.upload(id, spool, packed);
    const record = await this.catalog.addVersion({
      databaseId: id,
      version,
      sha256: packed.sha256,
      sizeBytes: packed.size,
      ...wal,
    });
    if (!record) {
      await this.archive.delete(versionKey(id, version)).catch(() => undefined);
      throw new DatabaseGoneError(`database "${id}" no longer exists; its snapshot was discarded`);
    }
    await this.applyRetention(id);
    return record;
  }

  /** Keeps the newest `keepVersions`; removes the rest from the catalog first, then the archive. */
  protected async applyRetention(id: string): Promise<void> {
    try {
      const versions = await this.catalog.listVersions(id);
      // WAL shipped before the oldest kept base is needed by no restore.
      const oldest = versions.slice(0, this.keepVersions).at(-1);
      if (oldest && versions.length > this.keepVersions)
        await this.opts.wal?.purgeBefore(id, oldest.walSince);
      for (const old of versions.slice(this.keepVersions)) {
        await this.catalog.deleteVersion(id, old.version);
        // An object whose delete fails is unreferenced, never wrong: it only costs space.
        await this.archive.delete(versionKey(id, old.version)).catch((err: unknown) => {
          this.logger.warn(
            { db: id, version: old.version, err: describeError(err) },
            'could not delete old version',
          );
        });
      }
    } catch (err) {
      this.logger.warn({ db: id, err: describeError(err) }, 'retention failed');
    }
  }

  /**
   * Extracts the version straight from the archive's stream into a staged directory next to
   * `target`, checking its sha256 at the end (a mismatch removes the staged directory). A dropped,
   * truncated or corrupt download is retried from the start.
   */
  protected async stageStreamed(
    record: VersionRecord,
    target: string,
    flush?: FileFlush,
  ): Promise<StagedDir> {
    const key = versionKey(record.databaseId, record.version);
    const attempts = Math.max(1, this.opts.attempts ?? 3);
    for (let attempt = 0; ; attempt++) {
      try {
        return await stageTarball(await this.archive.get(key), target, {
          maxBytes: NO_SIZE_LIMIT,
          sha256: record.sha256,
          ...this.extractOptions(),
          ...(flush ? { flush } : {}),
          ...(this.seed ? { seed: this.seed } : {}),
        });
      } catch (err) {
        if (attempt + 1 >= attempts || err instanceof ArchiveNotFoundError) throw err;
        this.logger.warn(
          { db: record.databaseId, version: record.version, attempt: attempt + 1, err: describeError(err) },
          'download failed; retrying',
        );
        await sleep(backoffMs(attempt, this.opts.retryBaseMs ?? 500));
      }
    }
  }

  /** Runs `fn` with the version downloaded (spool) and extracted (staged); cleans both up after. */
  protected async withStagedVersion<T>(
    record: VersionRecord,
    target: string,
    fn: (staged: StagedDir, spool: string) => Promise<T>,
  ): Promise<T> {
    const spool = await this.objects.download(record, this.spoolPath(record.databaseId, 'down.tar.gz'));
    try {
      const staged = await stageTarball(createReadStream(spool), target, {
        maxBytes: NO_SIZE_LIMIT,
        sha256: record.sha256,
        ...this.extractOptions(),
      });
      try {
        return await fn(staged, spool);
      } finally {
        await rm(staged.dir, { recursive: true, force: true });
      }
    } finally {
      await rm(spool, { force: true });
    }
  }
}

export async function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}
