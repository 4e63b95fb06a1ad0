import type { Logger } from '../log.js';
import type { Snapshots } from '../storage/snapshots.js';
import type { WalObjects } from '../storage/wal-objects.js';
import { query } from '../wire/protocol.js';
import type { Database } from './database.js';
import { Periodic } from './periodic.js';
import type { DatabaseRegistry } from './registry.js';

const CHECKPOINT = query('CHECKPOINT');

/**
 * Write-back of databases to the archive: fetch on open when the local copy is missing, snapshot
 * on close (eviction, idle, shutdown) when something was written, and every SNAPSHOT_INTERVAL
 * while a database is being written to. A snapshot of an open database holds its session only
 * while the directory is checkpointed and copied, so no client writes mid-tarball.
 */
export class Archiving {
  private periodic: Periodic | undefined;
  private readonly owner = Symbol('archiver');

  constructor(
    private readonly opts: {
      snapshots: Snapshots;
      dataDirOf: (id: string) => string;
      intervalMs: number;
      logger: Logger;
      /** Shipped WAL, replayed on top of a fetched base (DURABILITY=async|sync). */
      wal?: WalObjects | undefined;
    },
  ) {}

  materialize = async (id: string, dir: string) => {
    const outcome = await this.opts.snapshots.ensureLocal(id, dir);
    if (outcome !== 'fetched') return outcome;
    // The newest base plus every WAL piece shipped after it: crash recovery replays them on open.
    const base = await this.opts.snapshots.latest(id);
    const replayed = base && this.opts.wal ? await this.opts.wal.replayInto(id, dir, base) : undefined;
    this.opts.logger.info(
      { db: id, version: base?.version, walPieces: replayed?.pieces ?? 0 },
      'database fetched from the archive',
    );
    return outcome;
  };

  afterClose = async (id: string, dir: string, written: boolean) => {
    if (!written) return;
    const version = await this.opts.snapshots.snapshot(id, dir);
    this.opts.logger.info({ db: id, version: version.version }, 'database archived on close');
  };

  /** Starts periodic snapshots of the registry's open databases. */
  start(registry: DatabaseRegistry): void {
    this.periodic ??= new Periodic(this.opts.intervalMs, () => this.tick(registry));
    this.periodic.start();
  }

  async stop(): Promise<void> {
    await this.periodic?.stop();
  }

  private async tick(registry: DatabaseRegistry): Promise<void> {
    for (const db of await registry.openDatabases()) {
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
    const version = await this.opts.snapshots
      .snapshot(db.id, this.opts.dataDirOf(db.id), {
        freeze: async () => {
          await db.hold.acquire(this.owner);
          try {
            await db.ready();
            lsn = await db.walLsn();
            if (lsn !== undefined && lsn === db.archivedLsn) throw new NothingToDo();
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
      })
      .catch((err: unknown) => {
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
