import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.js';
import { createFromTemplate } from './template.js';

/**
 * Ready-made copies of the template, so creating a database is a rename (milliseconds) rather
 * than a copy of ~1000 files (~0.1 s, more on a busy disk). Spares are refilled in the background after each use and
 * rebuilt at startup, so they always match the current template.
 */
/**
 * Files a background refill copies at once. Copies, fsyncs and zlib all run on libuv's pool of 4
 * threads: a refill that took them all made the fetch that had just taken a spare (gunzip and its
 * few writes) wait behind ~1,000 copies.
 */
const REFILL_CONCURRENCY = 2;
/** How often a paused refill looks whether it may go on. */
const PAUSE_POLL_MS = 20;

export class TemplateSpares {
  private refilling: Promise<void> | undefined;

  constructor(
    private readonly templateDir: string,
    private readonly spareDir: string,
    private readonly count: number,
    private readonly logger: Logger,
    /**
     * Flush each spare to disk as it is made (FSYNC=on): a database made from a spare, or fetched
     * over one (whose files a delta base left as they are), must survive an OS crash.
     */
    private readonly opts: { fsync?: boolean } = {},
  ) {}

  /** Drops spares from a previous run (maybe an older template) and starts making new ones. */
  async start(): Promise<void> {
    await rm(this.spareDir, { recursive: true, force: true });
    await mkdir(this.spareDir, { recursive: true });
    this.refill();
  }

  /** Puts a fresh PGDATA at `dest`: a spare when one is ready, otherwise a direct copy. */
  async take(dest: string): Promise<void> {
    const [spare] = await readdir(this.spareDir).catch(() => [] as string[]);
    if (spare && !spare.includes('.tmp-')) {
      try {
        await rename(path.join(this.spareDir, spare), dest);
        this.refill();
        return;
      } catch (err) {
        // Taken by a concurrent create, or dest appeared: fall back to a copy.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    await createFromTemplate(this.templateDir, dest, this.opts);
    this.refill();
  }

  /** Moves a ready spare to `dest` (which must not exist) if there is one; never copies. */
  async takeReady(dest: string): Promise<boolean> {
    const [spare] = (await readdir(this.spareDir).catch(() => [] as string[])).filter(
      (n) => !n.includes('.tmp-'),
    );
    if (!spare) return false;
    try {
      await rename(path.join(this.spareDir, spare), dest);
      return true;
    } catch (err) {
      // Taken by a concurrent create or fetch.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    } finally {
      this.refill();
    }
  }

  private paused = 0;

  /**
   * Runs `fn` with refills paused between files: a fetch from the archive (its gunzip, writes and
   * fsyncs) should not queue behind a refill's ~1,000 copies and, with FSYNC=on, their flushes.
   */
  async whilePaused<T>(fn: () => Promise<T>): Promise<T> {
    this.paused++;
    try {
      return await fn();
    } finally {
      this.paused--;
    }
  }

  private readonly yieldToOthers = async (): Promise<void> => {
    while (this.paused > 0) await new Promise((resolve) => setTimeout(resolve, PAUSE_POLL_MS));
  };

  /** Waits for background refills (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.refilling) await this.refilling;
  }

  private refill(): void {
    this.refilling ??= (async () => {
      try {
        for (;;) {
          const ready = (await readdir(this.spareDir)).filter((n) => !n.includes('.tmp-'));
          if (ready.length >= this.count) return;
          await createFromTemplate(
            this.templateDir,
            path.join(this.spareDir, randomBytes(6).toString('hex')),
            { ...this.opts, concurrency: REFILL_CONCURRENCY, beforeFile: this.yieldToOthers },
          );
        }
      } catch (err) {
        this.logger.warn({ err }, 'could not prepare a spare database directory');
      } finally {
        this.refilling = undefined;
      }
    })();
  }
}
