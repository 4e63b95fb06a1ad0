import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { VersionRecord } from '../catalog/catalog.js';
import { isValidDatabaseId } from '../ids.js';
import { copyTree } from '../pgdata/copy-tree.js';
import { installDir, stageTarball } from '../pgdata/extract.js';
import type { FileFlush } from '../pgdata/file-flush.js';
import { hasPgVersion } from '../pgdata/pg-version.js';
import { packToFile } from '../pgdata/tarball.js';

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

export type { SnapshotsOptions } from './snapshot-store.js';

import { clearUnflushed, listUnflushed, markArchived, unmarkArchived } from './local-marks.js';
import { exists, SnapshotStore, TEMPORARY_SIBLING } from './snapshot-store.js';

export class Snapshots extends SnapshotStore {
  /**
   * Makes sure `dataDir` holds the database: 'present' when it already does, 'fetched' after
   * downloading the latest version, 'absent' when the archive has no version of it either.
   */
  async ensureLocal(
    id: string,
    dataDir: string,
    opts: { flush?: FileFlush; beforeFetch?: () => Promise<void> } = {},
  ): Promise<'present' | 'fetched' | 'absent'> {
    if (await hasPgVersion(dataDir)) return 'present';
    if (!(await this.latest(id))) return 'absent';
    await opts.beforeFetch?.();
    await this.fetch(id, dataDir, undefined, opts.flush);
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
        // A closed copy (no freeze) is now exactly what the archive holds.
        if (!opts.freeze) await markArchived(dataDir);
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
   * destination share one download. On any failure nothing is left at `destDir`. `flush`: how
   * the files reach the disk (default: as FSYNC says, before it returns).
   */
  fetch(id: string, destDir: string, version?: string, flush?: FileFlush): Promise<VersionRecord> {
    const key = `${id}\0${destDir}\0${version ?? ''}`;
    const inflight = this.fetching.get(key);
    if (inflight) return inflight;
    const run = (async () => {
      const started = performance.now();
      const record = await this.resolve(id, version);
      // Streamed: the download is extracted as it arrives (no spool file) and checked at the end.
      const staged = await this.stageStreamed(record, destDir, flush);
      try {
        await installDir(staged.dir, destDir, flush ? { flush } : {});
      } catch (err) {
        await rm(staged.dir, { recursive: true, force: true });
        throw err;
      }
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
        await markArchived(destDir);
        return stored;
      });
      this.logger.info({ db: id, from: record.version, at, version: promoted.version }, 'database restored');
      return promoted;
    });
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
        await markArchived(destDir);
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
        if (destDir) {
          await installDir(staged.dir, destDir, { replace: opts.replace ?? false });
          await markArchived(destDir);
        }
        this.logger.info({ db: id, version: record.version, bytes: record.sizeBytes }, 'tarball uploaded');
        return record;
      } finally {
        await rm(spool, { force: true });
        await rm(staged.dir, { recursive: true, force: true });
      }
    });
  }

  /**
   * Removes what an interrupted run left behind: spool files in `workDir`, the hidden
   * temporary directories (`.<id>.extract-*`, `.<id>.old-*`) next to the databases in `dataDir`,
   * and local copies whose fetch was not flushed (local-marks.ts).
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
    // A fetched copy whose flush never finished may have lost writes to an OS crash. Nothing
    // written to it since was acknowledged, so the archive has all it should hold.
    for (const id of await listUnflushed(dataDir)) {
      const dir = path.join(dataDir, id);
      if (isValidDatabaseId(id)) {
        await rm(dir, { recursive: true, force: true });
        await unmarkArchived(dir);
        this.logger.warn(
          { db: id },
          'local copy fetched but not yet flushed when the node stopped; fetched again on open',
        );
      }
      await clearUnflushed(dir);
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
}
