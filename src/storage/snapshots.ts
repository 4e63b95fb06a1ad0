import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { Catalog, VersionRecord } from '../catalog/catalog.js';
import { KeyedChain } from '../keyed-chain.js';
import type { Logger } from '../log.js';
import { copyTree } from '../pgdata/copy-tree.js';
import { installDir, type StagedDir, stageTarball } from '../pgdata/extract.js';
import { hasPgVersion } from '../pgdata/pg-version.js';
import {
  type PackOptions,
  type PgDataIdentity,
  packToFile,
  TarballRejectedError,
} from '../pgdata/tarball.js';
import type { ArchiveStore } from './archive.js';
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
 * Versions of databases in the archive. Every snapshot is a new immutable object
 * `<id>/<version>.tar.gz`, recorded in the catalog (with its sha256 and size) only after the upload
 * completed and was verified; the previous good version is never touched, so a failed or
 * truncated upload cannot make things worse than they were.
 *
 * Transfers are spooled through a file in `workDir` (never held in memory): a snapshot is packed
 * to a file (hashing as it goes), then uploaded from that file, so a dropped upload can be retried
 * from the start; a download is written to a file and checked against the catalog's sha256 before a
 * single byte is extracted, so a truncated or corrupted download never reaches the data directory.
 */

export {
  DatabaseGoneError,
  DEFAULT_KEEP_VERSIONS,
  describeError,
  newVersionId,
  VERSION_PATTERN,
  VerificationError,
  VersionNotFoundError,
  versionKey,
} from './version-objects.js';

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
}

export interface SnapshotOptions {
  /**
   * For a database that is open: called first, must make the directory consistent and stable
   * (hold the session, CHECKPOINT) and return the function that releases it. The directory is
   * copied while frozen and packed after the release, so clients wait only for the copy.
   */
  freeze?: () => Promise<() => void | Promise<void>>;
  /**
   * When the packed bytes equal the latest version's (sha256 and size), store nothing and return
   * that version. Packing is deterministic for unchanged files, but opening a database with
   * PGlite rewrites some (pg_control, WAL), so this only saves uploads of data nobody opened.
   */
  skipIfUnchanged?: boolean;
  /** Read once the directory is frozen: the WAL position the copy holds everything up to. */
  walLsn?: () => bigint | undefined;
}

export interface UploadOptions {
  /** Largest uncompressed tarball accepted (MAX_UPLOAD_BYTES). */
  maxBytes: number;
  /** Also install the uploaded data as the local copy at this path. */
  destDir?: string;
  /** With `destDir`: replace an existing local copy. Default false (then `destDir` must not exist). */
  replace?: boolean;
}

/** Names `siblingTemp()` gives the temporary directories of extraction and replacement. */
const TEMPORARY_SIBLING = /^\.[a-z0-9][a-z0-9-]*\.(extract|old)-[0-9a-f]{12}$/;

/** A size beyond any real PGDATA: fetched data is trusted by checksum, not by size. */
const NO_SIZE_LIMIT = Number.MAX_SAFE_INTEGER;

export class Snapshots {
  private readonly archive: ArchiveStore;
  private readonly catalog: SnapshotsOptions['catalog'];
  private readonly logger: Logger;
  private readonly keepVersions: number;
  /** In-flight fetches, keyed by database and destination: concurrent callers share one. */
  private readonly fetching = new Map<string, Promise<VersionRecord>>();
  /** Per-database chain serialising writes (snapshot, restore, upload, clone target). */
  private readonly writes = new KeyedChain();

  private readonly objects: VersionObjects;

  constructor(private readonly opts: SnapshotsOptions) {
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

  /**
   * Makes sure `dataDir` holds the database: 'present' when it already does, 'fetched' after
   * downloading the latest version, 'absent' when the archive has no version of it either.
   */
  async ensureLocal(id: string, dataDir: string): Promise<'present' | 'fetched' | 'absent'> {
    if (await hasPgVersion(dataDir)) return 'present';
    if (!(await this.latest(id))) return 'absent';
    await this.fetch(id, dataDir);
    return 'fetched';
  }

  /** Packs `dataDir` and stores it as a new version. The directory must not change meanwhile (see `freeze`). */
  snapshot(id: string, dataDir: string, opts: SnapshotOptions = {}): Promise<VersionRecord> {
    return this.writes.run(id, async () => {
      const started = performance.now();
      await mkdir(this.opts.workDir, { recursive: true });
      let source = dataDir;
      let staged: string | undefined;
      const wal: { walLsn?: bigint | undefined; walSince?: Date } = {};
      if (opts.freeze) {
        staged = this.spoolPath(id, 'stage');
        const release = await opts.freeze();
        wal.walSince = new Date();
        wal.walLsn = opts.walLsn?.();
        try {
          await copyTree(dataDir, staged);
        } catch (err) {
          await rm(staged, { recursive: true, force: true });
          throw this.refusal(id, err);
        } finally {
          await release();
        }
        source = staged;
      }
      const spool = this.spoolPath(id, 'up.tar.gz');
      try {
        const packed = await packToFile(source, spool, this.packOptions()).catch((err: unknown) => {
          throw this.refusal(id, err);
        });
        if (opts.skipIfUnchanged) {
          const latest = await this.latest(id);
          if (latest && latest.sha256 === packed.sha256 && latest.sizeBytes === packed.size) {
            this.logger.debug({ db: id, version: latest.version }, 'snapshot unchanged; not stored');
            return latest;
          }
        }
        const record = await this.store(id, spool, packed, wal);
        this.logger.info(
          {
            db: id,
            version: record.version,
            bytes: record.sizeBytes,
            ms: Math.round(performance.now() - started),
          },
          'snapshot stored',
        );
        return record;
      } finally {
        await rm(spool, { force: true });
        if (staged) await rm(staged, { recursive: true, force: true });
      }
    });
  }

  /**
   * Downloads a version (the latest by default), verifies it against the catalog's sha256 and
   * extracts it to `destDir`, which must not exist. Concurrent calls for the same database and
   * destination share one download. On any failure nothing is left at `destDir`.
   */
  fetch(id: string, destDir: string, version?: string): Promise<VersionRecord> {
    const key = `${id}\0${destDir}\0${version ?? ''}`;
    const inflight = this.fetching.get(key);
    if (inflight) return inflight;
    const run = (async () => {
      const started = performance.now();
      const record = await this.resolve(id, version);
      await this.withStagedVersion(record, destDir, (staged) => installDir(staged.dir, destDir));
      this.logger.info(
        {
          db: id,
          version: record.version,
          bytes: record.sizeBytes,
          ms: Math.round(performance.now() - started),
        },
        'database fetched from archive',
      );
      return record;
    })();
    this.fetching.set(key, run);
    const forget = () => {
      if (this.fetching.get(key) === run) this.fetching.delete(key);
    };
    run.then(forget, forget);
    return run;
  }

  /**
   * Replaces the local copy at `destDir` with `version` and makes that content the database's
   * newest version (a copy of the object under a new version id), so the restore survives losing
   * the local disk. The database must be closed. Returns the new version.
   */
  restoreInto(id: string, version: string | undefined, destDir: string, at?: Date): Promise<VersionRecord> {
    return this.writes.run(id, async () => {
      const record = at ? await this.baseAt(id, at) : await this.resolve(id, version);
      const promoted = await this.withStagedVersion(record, destDir, async (staged, spool) => {
        const stored = await this.storeWithWal(id, record, staged.dir, spool, at);
        await installDir(staged.dir, destDir, { replace: true });
        return stored;
      });
      this.logger.info({ db: id, from: record.version, at, version: promoted.version }, 'database restored');
      return promoted;
    });
  }

  /** The newest base taken at or before `at`: the one a point-in-time restore starts from. */
  private async baseAt(id: string, at: Date): Promise<VersionRecord> {
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
  private async storeWithWal(
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

  /**
   * Copies a version of `sourceId` (latest when `version` is undefined) into the new database
   * `newId`: stored as `newId`'s first version and extracted to `destDir` (must not exist).
   * `newId` must already exist in the catalog.
   */
  cloneTo(
    sourceId: string,
    version: string | undefined,
    newId: string,
    destDir: string,
    at?: Date,
  ): Promise<VersionRecord> {
    return this.writes.run(newId, async () => {
      if (await exists(destDir)) throw new Error(`destination already exists: ${destDir}`);
      const record = at ? await this.baseAt(sourceId, at) : await this.resolve(sourceId, version);
      const cloned = await this.withStagedVersion(record, destDir, async (staged, spool) => {
        // Without a version or a time: the source's newest state, its shipped WAL included.
        const stored = await this.storeWithWal(
          newId,
          record,
          staged.dir,
          spool,
          at,
          at !== undefined || version === undefined,
        );
        await installDir(staged.dir, destDir);
        return stored;
      });
      this.logger.info({ db: newId, from: sourceId, sourceVersion: record.version }, 'database cloned');
      return cloned;
    });
  }

  /**
   * Accepts a PGDATA tarball (PGlite `dumpDataDir()` output, gzip or plain, or one of ours),
   * validates it by extracting it (see `stageTarball`), and stores it, repacked, as a new version.
   * With `destDir` the extracted data also becomes the local copy.
   */
  upload(id: string, body: Readable, opts: UploadOptions): Promise<VersionRecord> {
    return this.writes.run(id, async () => {
      const { destDir } = opts;
      if (destDir && !opts.replace && (await exists(destDir))) {
        body.destroy();
        throw new Error(`destination already exists: ${destDir}`);
      }
      await mkdir(this.opts.workDir, { recursive: true });
      const target = destDir ?? path.join(this.opts.workDir, id);
      const staged = await stageTarball(body, target, {
        maxBytes: opts.maxBytes,
        ...this.extractOptions(),
      });
      const spool = this.spoolPath(id, 'upload.tar.gz');
      try {
        const packed = await packToFile(staged.dir, spool, this.packOptions());
        const record = await this.store(id, spool, packed);
        if (destDir) await installDir(staged.dir, destDir, { replace: opts.replace ?? false });
        this.logger.info({ db: id, version: record.version, bytes: record.sizeBytes }, 'tarball uploaded');
        return record;
      } finally {
        await rm(spool, { force: true });
        await rm(staged.dir, { recursive: true, force: true });
      }
    });
  }

  /**
   * Removes what an interrupted run left behind: spool files in `workDir`, and the hidden
   * temporary directories (`.<id>.extract-*`, `.<id>.old-*`) next to the databases in `dataDir`.
   * Call at startup, while holding the data directory lock, before any fetch or snapshot.
   */
  async cleanup(dataDir: string): Promise<number> {
    let removed = 0;
    for (const name of await readdir(this.opts.workDir).catch(() => [] as string[])) {
      await rm(path.join(this.opts.workDir, name), { recursive: true, force: true });
      removed++;
    }
    for (const name of await readdir(dataDir).catch(() => [] as string[])) {
      if (!TEMPORARY_SIBLING.test(name)) continue;
      await rm(path.join(dataDir, name), { recursive: true, force: true });
      removed++;
    }
    if (removed > 0) this.logger.info({ removed }, 'removed leftovers of interrupted storage operations');
    return removed;
  }

  /** Deletes every archived object of the database (call when the database is deleted). */
  async purge(id: string): Promise<number> {
    const objects = await this.archive.list(`${id}/`);
    for (const object of objects) await this.archive.delete(object.key);
    return objects.length;
  }

  // --- internals -------------------------------------------------------------------------------

  private extractOptions() {
    return {
      ...(this.opts.expect ? { expect: this.opts.expect } : {}),
      fsync: this.opts.fsync ?? true,
    };
  }

  /**
   * A snapshot the extraction rules refuse is not stored: it would be a version no restore or
   * clone accepts, and retention would delete a good one to make room for it. Logs it as such.
   */
  private refusal(id: string, err: unknown): unknown {
    if (!(err instanceof TarballRejectedError)) return err;
    this.logger.error(
      { db: id, problem: err.problem, err: describeError(err) },
      'snapshot refused: the data directory holds what no restore would accept (remove it to resume snapshots); no version recorded, the earlier versions stay',
    );
    return new TarballRejectedError(err.problem, `snapshot of "${id}" refused: ${err.message}`);
  }

  /** Packing checks what extraction will (`expect` included), so no stored version is refused later. */
  private packOptions(): PackOptions {
    return { gzipLevel: this.opts.gzipLevel ?? 6, ...(this.opts.expect ? { expect: this.opts.expect } : {}) };
  }

  private spoolPath(id: string, what: string): string {
    return path.join(this.opts.workDir, `${id}.${randomBytes(6).toString('hex')}.${what}`);
  }

  private async resolve(id: string, version: string | undefined): Promise<VersionRecord> {
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
  private async store(
    id: string,
    spool: string,
    packed: { sha256: string; size: number },
    wal: { walLsn?: bigint | undefined; walSince?: Date } = {},
  ): Promise<VersionRecord> {
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
  private async applyRetention(id: string): Promise<void> {
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

  /** Runs `fn` with the version downloaded (spool) and extracted (staged); cleans both up after. */
  private async withStagedVersion<T>(
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

async function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}
