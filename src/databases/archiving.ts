import type { Logger } from '../log.js';
import { removeDir } from '../pgdata/extract.js';
import { FlushLater, flushOff } from '../pgdata/file-flush.js';
import {
  clearUnflushed,
  isMarkedArchived,
  markArchived,
  markUnflushed,
  unmarkArchived,
} from '../storage/local-marks.js';
import type { Snapshots } from '../storage/snapshots.js';
import type { WalObjects } from '../storage/wal-objects.js';
import { query } from '../wire/protocol.js';
import type { NodeActivity } from './activity.js';
import type { Database } from './database.js';
import { Periodic } from './periodic.js';
import type { DatabaseRegistry } from './registry.js';
import { parseLsn } from './wal-shipping.js';

const CHECKPOINT = query('CHECKPOINT');
/** WAL pieces since the newest base past which a close takes a new base though nothing was written. */
const BASE_AFTER_PIECES = 8;
/** How often the WAL written since each open database's last base is compared with BASE_BACKUP_WAL. */
const BASE_CHECK_MS = 2_000;

/**
 * Write-back of databases to the archive: fetch on open when the local copy is missing, snapshot
 * on close (eviction, idle, shutdown) when something was written, every SNAPSHOT_INTERVAL while a
 * database is being written to, and once BASE_BACKUP_WAL of WAL was written since its last one
 * (with WAL shipping a snapshot is a base backup: it bounds how much WAL a restore replays). A
 * snapshot of an open database holds its session only while the directory is checkpointed and
 * copied, so no client writes mid-tarball; its checkpoint comes after the WAL was shipped.
 */
export class Archiving {
  private periodic: Periodic | undefined;
  private baseCheck: Periodic | undefined;
  private readonly owner = Symbol('archiver');

  constructor(
    private readonly opts: {
      snapshots: Snapshots;
      dataDirOf: (id: string) => string;
      intervalMs: number;
      logger: Logger;
      /** Shipped WAL, replayed on top of a fetched base (DURABILITY=async|sync). */
      wal?: WalObjects | undefined;
      /** Where snapshot latency, size and failures are counted. */
      activity?: NodeActivity | undefined;
      /** BASE_BACKUP_WAL: a snapshot after this much WAL since the last one; 0 = off. */
      baseBackupWalBytes?: number | undefined;
      /** FSYNC=on: fetched copies are flushed to disk (after they open; see `materialize`). */
      fsync?: boolean | undefined;
      /** Runs before a snapshot's checkpoint, holding the session (WAL shipping: ship first). */
      beforeCheckpoint?: ((db: Database) => Promise<void>) | undefined;
    },
  ) {}

  /** Runs a snapshot, counting its latency and size (or its failure). */
  private async timed<T extends { sizeBytes: number } | undefined>(
    id: string,
    fn: () => Promise<T>,
  ): Promise<T> {
    const started = performance.now();
    try {
      const version = await fn();
      if (version) this.opts.activity?.snapshot(id, (performance.now() - started) / 1000, version.sizeBytes);
      return version;
    } catch (err) {
      if (!(err instanceof NothingToDo)) this.opts.activity?.archiveError(id, 'snapshot', err);
      throw err;
    }
  }

  /** Databases whose local copy was all in the archive when they opened (see local-marks.ts). */
  private readonly archivedAtOpen = new Set<string>();

  /** Fetched copies whose files are still being flushed (FSYNC=on), by database. */
  private readonly flushes = new Map<string, Promise<void>>();

  /**
   * Resolves once the copy `id` was fetched into is on disk; undefined when nothing is pending.
   * A unit that wrote to it has its reply held back until then (Database.localFlush).
   */
  pendingFlush(id: string): Promise<void> | undefined {
    return this.flushes.get(id);
  }

  materialize = async (id: string, dir: string) => {
    // A flush still under way for an earlier fetch would clear this fetch's mark when it ends.
    const earlier = this.flushes.get(id);
    if (
      earlier &&
      !(await earlier.then(
        () => true,
        () => false,
      ))
    ) {
      // That copy never reached the disk in full: it is fetched again (no write to it was acknowledged).
      this.flushes.delete(id);
      await removeDir(dir);
      await clearUnflushed(dir);
    }
    // FSYNC=on: a fetched copy serves its first query without waiting for the disk; its files
    // are flushed after it opened (see pendingFlush), under a durable mark that makes a restart
    // after an OS crash fetch it again (local-marks.ts).
    const later = this.opts.fsync ? new FlushLater() : undefined;
    const flush = later ?? flushOff;
    let marked = false;
    const outcome = await this.opts.snapshots
      .ensureLocal(id, dir, {
        flush,
        beforeFetch: later
          ? async () => {
              await markUnflushed(dir);
              marked = true;
            }
          : undefined,
      })
      .catch(async (err: unknown) => {
        if (marked) await clearUnflushed(dir).catch(() => undefined);
        throw err;
      });
    // Unmarked while open: a crash with unarchived commits must not leave a droppable copy.
    if (outcome === 'present' && (await isMarkedArchived(dir))) this.archivedAtOpen.add(id);
    else this.archivedAtOpen.delete(id);
    await unmarkArchived(dir);
    if (outcome !== 'fetched') return outcome;
    this.archivedAtOpen.add(id);
    try {
      // The newest base plus every WAL piece shipped after it: crash recovery replays them on open.
      const base = await this.opts.snapshots.latest(id);
      const replayed =
        base && this.opts.wal ? await this.opts.wal.replayInto(id, dir, base, undefined, flush) : undefined;
      this.opts.logger.info(
        { db: id, version: base?.version, walPieces: replayed?.pieces ?? 0 },
        'database fetched from the archive',
      );
    } catch (err) {
      // Without its WAL the copy lacks shipped commits: it must not be opened as it is, now or later.
      this.archivedAtOpen.delete(id);
      await removeDir(dir);
      if (marked) await clearUnflushed(dir).catch(() => undefined);
      throw err;
    }
    if (later) this.flushLater(id, dir, later);
    return outcome;
  };

  private flushLater(id: string, dir: string, later: FlushLater): void {
    const started = performance.now();
    const done = (async () => {
      const synced = await later.flush();
      await clearUnflushed(dir);
      this.opts.logger.debug(
        { db: id, ...synced, ms: Math.round(performance.now() - started) },
        'fetched copy flushed',
      );
    })();
    done.catch((err: unknown) =>
      this.opts.logger.error(
        { err, db: id },
        'could not flush a fetched copy to disk; writes to it are refused',
      ),
    );
    const forget = () => {
      if (this.flushes.get(id) === done) this.flushes.delete(id);
    };
    // A failed flush stays here, failed: writes to the copy are refused, and its next open fetches it again.
    done.then(forget, () => undefined);
    this.flushes.set(id, done);
  }

  /** Told after each close's archiving (the local cache looks at the disk again). */
  onClosed: (() => void) | undefined;

  afterClose = async (id: string, dir: string, written: boolean) => {
    try {
      await this.archiveOnClose(id, dir, written);
    } finally {
      this.onClosed?.();
    }
  };

  private archiveOnClose = async (id: string, dir: string, written: boolean) => {
    const archivedAtOpen = this.archivedAtOpen.delete(id);
    if (!written && !(await this.manyPiecesSinceBase(id))) {
      // Nothing written: what the archive held at open is still all there is.
      if (archivedAtOpen) await markArchived(dir);
      return;
    }
    const version = await this.timed(id, () => this.opts.snapshots.snapshot(id, dir));
    this.opts.logger.info({ db: id, version: version.version }, 'database archived on close');
  };

  /**
   * Whether enough WAL pieces were shipped since the newest base that a fetch would spend more on
   * them than on a new base. Every open and close ships a few (their checkpoint records) even when
   * no client writes, so a database opened and closed often would otherwise pile up pieces that
   * each fetch downloads one by one and crash recovery replays. A delta base of such a database
   * is small (template-delta.ts).
   */
  private async manyPiecesSinceBase(id: string): Promise<boolean> {
    const wal = this.opts.wal;
    if (!wal) return false;
    const base = await this.opts.snapshots.latest(id);
    return base !== undefined && (await wal.piecesAfter(id, base)) >= BASE_AFTER_PIECES;
  }

  /** Starts periodic snapshots of the registry's open databases. */
  start(registry: DatabaseRegistry): void {
    this.periodic ??= new Periodic(this.opts.intervalMs, () => this.tick(registry));
    this.periodic.start();
    if (this.opts.baseBackupWalBytes) {
      this.baseCheck ??= new Periodic(BASE_CHECK_MS, () => this.tick(registry, true));
      this.baseCheck.start();
    }
  }

  async stop(): Promise<void> {
    await this.periodic?.stop();
    await this.baseCheck?.stop();
  }

  /** WAL written since `db`'s last base (its archived position), in bytes. */
  private walSinceBase(db: Database): bigint {
    const base = parseLsn(db.archivedLsn);
    const end = db.engine.walEnd();
    return base === undefined || end <= base ? 0n : end - base;
  }

  private async tick(registry: DatabaseRegistry, byWal = false): Promise<void> {
    for (const db of await registry.openDatabases()) {
      if (byWal && this.walSinceBase(db) < BigInt(this.opts.baseBackupWalBytes ?? 0)) continue;
      try {
        await this.snapshotIfWritten(db);
      } catch (err) {
        this.opts.logger.warn({ err, db: db.id }, 'periodic snapshot failed; the previous version stays');
      }
    }
  }

  /** Snapshots an open database if its WAL moved since the archived copy. */
  async snapshotIfWritten(db: Database): Promise<boolean> {
    let lsn: string | undefined;
    const version = await this.timed(db.id, () =>
      this.opts.snapshots.snapshot(db.id, this.opts.dataDirOf(db.id), {
        freeze: async () => {
          await db.hold.acquire(this.owner);
          try {
            await db.ready();
            lsn = await db.walLsn();
            if (lsn !== undefined && lsn === db.archivedLsn) throw new NothingToDo();
            // The checkpoint may remove WAL segments: the ones not in the archive go there first.
            await this.opts.beforeCheckpoint?.(db);
            await db.engine.exec(CHECKPOINT);
            // CHECKPOINT writes a WAL record: the copy corresponds to the position after it.
            // (Taken before it, every later tick would see the WAL moved and snapshot again.)
            lsn = await db.walLsn();
          } catch (err) {
            db.hold.release(this.owner);
            throw err;
          }
          return () => db.hold.release(this.owner);
        },
        walLsn: () => db.engine.walEnd(),
      }),
    ).catch((err: unknown) => {
      if (err instanceof NothingToDo) return undefined;
      throw err;
    });
    if (!version) return false;
    db.archivedLsn = lsn;
    this.opts.logger.info({ db: db.id, version: version.version }, 'database archived');
    return true;
  }
}

class NothingToDo extends Error {}
