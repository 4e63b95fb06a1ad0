import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import { databasePath, isValidDatabaseId } from '../ids.js';
import type { Logger } from '../log.js';
import { removeDir } from '../pgdata/extract.js';
import { isMarkedArchived, listMarked, unmarkArchived } from '../storage/local-marks.js';
import { Periodic } from './periodic.js';

/**
 * Local copies as a cache (with an archive): a closed database's directory costs ~24 MB even when
 * empty, so copies idle for LOCAL_EVICT_AFTER, or past LOCAL_DISK_MAX (least recently closed
 * first), are dropped, and the next open fetches them again (newest base + shipped WAL). Only a
 * copy marked as entirely archived (storage/local-marks.ts: its close snapshot or fetch is
 * recorded and it has not changed since) is dropped, and only while the registry holds it closed,
 * so an open, opening or closing database is never touched.
 */

export interface LocalCacheOptions {
  dataDir: string;
  /** LOCAL_EVICT_AFTER: a closed copy idle this long is dropped. */
  evictAfterMs: number;
  /** LOCAL_DISK_MAX: bytes of database copies kept at most; 0 = no cap. */
  diskMaxBytes: number;
  /** Runs `fn` only while the database is not in use; false when it was (registry.whileUnused). */
  whileUnused: (id: string, fn: () => Promise<void>) => Promise<boolean>;
  logger: Logger;
  /** How often to look; default half of LOCAL_EVICT_AFTER, between 250 ms and 60 s. */
  sweepMs?: number;
}

/** A directory's size on disk, recursively (what du counts, in 512-byte blocks). */
export async function diskUsage(dir: string): Promise<number> {
  let total = 0;
  const walk = async (d: string): Promise<void> => {
    for (const entry of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(d, entry.name);
      if (entry.isDirectory()) await walk(p);
      else {
        const info = await lstat(p).catch(() => undefined);
        if (info) total += info.blocks * 512;
      }
    }
  };
  await walk(dir);
  return total;
}

export class LocalCache {
  private readonly periodic: Periodic;
  private readonly sweepMs: number;
  /** Sizes of database copies, by id, with when they were measured. */
  private readonly sizes = new Map<string, { bytes: number; at: number }>();
  readonly stats = { evicted: 0 };

  constructor(private readonly opts: LocalCacheOptions) {
    this.sweepMs = opts.sweepMs ?? Math.min(60_000, Math.max(250, Math.floor(opts.evictAfterMs / 2)));
    this.periodic = new Periodic(this.sweepMs, async () => {
      await this.sweep().catch((err: unknown) => this.opts.logger.warn({ err }, 'local cache sweep failed'));
    });
  }

  start(): void {
    this.periodic.start();
  }

  async stop(): Promise<void> {
    clearTimeout(this.soon);
    this.soon = undefined;
    await this.periodic.stop();
    await this.nudged;
  }

  private soon: NodeJS.Timeout | undefined;
  private nudged: Promise<unknown> | undefined;

  /** A database was closed (and archived): with a disk cap, look again shortly rather than at the next sweep. */
  nudge(): void {
    if (this.opts.diskMaxBytes <= 0 || this.soon) return;
    this.soon = setTimeout(() => {
      this.soon = undefined;
      this.nudged = this.sweep().catch((err: unknown) =>
        this.opts.logger.warn({ err }, 'local cache sweep failed'),
      );
    }, 100);
    this.soon.unref();
  }

  /** One pass: drops the copies idle too long, then the least recently closed ones past the cap. */
  async sweep(): Promise<number> {
    const now = Date.now();
    const marked = (await listMarked(this.opts.dataDir)).sort((a, b) => a.markedAt - b.markedAt);
    const victims = new Set(
      marked.filter((m) => now - m.markedAt >= this.opts.evictAfterMs).map((m) => m.id),
    );
    if (this.opts.diskMaxBytes > 0) {
      let total = await this.totalBytes(now);
      for (const m of marked) {
        if (total <= this.opts.diskMaxBytes) break;
        victims.add(m.id);
        total -= this.sizes.get(m.id)?.bytes ?? 0;
      }
    }
    let dropped = 0;
    for (const m of marked) {
      if (!victims.has(m.id)) continue;
      if (await this.drop(m.id).catch((err: unknown) => this.failed(m.id, err))) dropped++;
    }
    return dropped;
  }

  private failed(id: string, err: unknown): false {
    this.opts.logger.warn({ err, db: id }, 'could not drop the local copy; it stays');
    return false;
  }

  /** Drops one copy if it is still entirely archived and not in use. */
  private async drop(id: string): Promise<boolean> {
    if (!isValidDatabaseId(id)) return false;
    const dir = databasePath(this.opts.dataDir, id);
    const dropped = await this.opts
      .whileUnused(id, async () => {
        if (!(await isMarkedArchived(dir))) {
          // Changed since it was marked (or gone): the mark no longer says anything.
          await unmarkArchived(dir);
          throw new NotArchived();
        }
        // Out of the way in one step, so an open never sees a half-deleted copy.
        await removeDir(dir);
        await unmarkArchived(dir);
      })
      .catch((err: unknown) => {
        if (err instanceof NotArchived) return false;
        throw err;
      });
    if (dropped) {
      this.sizes.delete(id);
      this.stats.evicted++;
      this.opts.logger.info({ db: id }, 'local copy dropped (it is in the archive; fetched again on open)');
    }
    return dropped;
  }

  /** Bytes of every database copy in DATA_DIR; sizes are measured again after a few sweeps. */
  private async totalBytes(now: number): Promise<number> {
    let total = 0;
    const names = await readdir(this.opts.dataDir).catch(() => [] as string[]);
    for (const id of names) {
      if (!isValidDatabaseId(id)) continue;
      let known = this.sizes.get(id);
      if (!known || now - known.at > 10 * this.sweepMs) {
        known = { bytes: await diskUsage(path.join(this.opts.dataDir, id)), at: now };
        this.sizes.set(id, known);
      }
      total += known.bytes;
    }
    for (const id of this.sizes.keys()) if (!names.includes(id)) this.sizes.delete(id);
    return total;
  }
}

class NotArchived extends Error {}
