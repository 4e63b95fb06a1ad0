import type { Engine } from '../engine/engine.js';
import { errors } from '../errors.js';
import type { Logger } from '../log.js';
import { firstRow } from '../wire/backend-scan.js';
import { query } from '../wire/protocol.js';
import { DatabaseHold } from './hold.js';

const CHECKPOINT = query('CHECKPOINT');
const WAL_LSN = query('SELECT pg_catalog.pg_current_wal_lsn()::text');

/** Runs on the new engine after a restart, before anyone else uses it (the pooler re-listens). */
export type RestartHook = (engine: Engine) => Promise<void>;

/**
 * One open database: its engine (a PGlite in a worker) and the hold that serialises its clients.
 * A running statement is interrupted by ending the worker and opening the database again; its
 * clients see a fresh session (generation + 1). What the shared session looks like to its
 * clients (settings, listeners) belongs to the pooler (pooler/shared-session.ts).
 */
export class Database {
  readonly hold: DatabaseHold;
  private restarting: Promise<void> | undefined;
  private readonly restartHooks: RestartHook[] = [];
  private restarts = 0;
  /** Parameter values reported to clients at startup. */
  readonly parameters: Readonly<Record<string, string>>;
  /**
   * DURABILITY=sync: resolves once the WAL written so far is in the archive (rejects after the
   * wait timeout). The pooler awaits it before a unit's reply; unset in other modes.
   */
  walBarrier: (() => Promise<void>) | undefined;
  /**
   * A copy fetched from the archive with FSYNC=on: resolves once its files are on disk (rejects
   * when they could not be flushed). Cleared once it resolved.
   */
  private localFlush: Promise<void> | undefined;

  /** Holds back acknowledgements of writes until `flush` resolves (see `commitBarrier`). */
  awaitLocalFlush(flush: Promise<void> | undefined): void {
    this.localFlush = flush;
    flush?.then(
      () => {
        if (this.localFlush === flush) this.localFlush = undefined;
      },
      () => undefined,
    );
  }

  /**
   * What a unit that wrote WAL waits for before its client may hear of a commit: the fetched
   * copy's flush, then the archive (`walBarrier`). Undefined when nothing is to be waited for.
   */
  get commitBarrier(): (() => Promise<void>) | undefined {
    const flush = this.localFlush;
    const wal = this.walBarrier;
    if (!flush) return wal;
    return async () => {
      await flush.catch(() => {
        throw errors.localCopyNotDurable();
      });
      await wal?.();
    };
  }

  constructor(
    readonly id: string,
    private current: Engine,
    private readonly reopen: () => Promise<Engine>,
    readonly readOnly: boolean,
    queryWaitTimeoutMs: number,
    private readonly logger: Logger,
  ) {
    this.hold = new DatabaseHold(queryWaitTimeoutMs);
    this.parameters = current.parameters;
  }

  /** Bumped by every restart: sessions re-create their prepared statements when it changes. */
  get generation(): number {
    return this.restarts;
  }

  /** Registers what must happen on each new engine after a restart. */
  onRestart(hook: RestartHook): void {
    this.restartHooks.push(hook);
  }

  get engine(): Engine {
    return this.current;
  }

  /** Resolves once no restart is under way. */
  /** Whether a restart is under way (ready() would wait). */
  get isRestarting(): boolean {
    return this.restarting !== undefined;
  }

  async ready(): Promise<void> {
    while (this.restarting) await this.restarting;
  }

  /**
   * Stops whatever runs (the request in flight fails with EngineKilledError) and reopens the
   * database from disk, as after a crash: committed data stays, the session state is new.
   */
  interrupt(reason: string): Promise<void> {
    this.restarting ??= (async () => {
      const started = performance.now();
      await this.current.kill();
      this.current = await this.reopen();
      for (const hook of this.restartHooks) await hook(this.current).catch(() => undefined);
      this.restarts++;
      this.logger.warn(
        { db: this.id, reason, ms: Math.round(performance.now() - started) },
        'database restarted',
      );
    })().finally(() => {
      this.restarting = undefined;
    });
    return this.restarting;
  }

  /**
   * The WAL position the archive copy corresponds to: set at open (the local copy came from the
   * archive or was already there) and at each snapshot. A database whose WAL has not moved past
   * it has nothing new to archive.
   */
  archivedLsn: string | undefined;

  /** The current WAL insert position. Call only while holding the session (or with no clients). */
  async walLsn(): Promise<string | undefined> {
    const row = firstRow(await this.current.exec(WAL_LSN).catch(() => new Uint8Array()));
    return row?.[0] ?? undefined;
  }

  /**
   * Checkpoints (so the files on disk are complete without WAL replay) and closes. Returns whether
   * anything was written since the archived position.
   */
  async close(): Promise<{ written: boolean }> {
    // Whoever holds the session finishes first: a snapshot copying the directory must not see
    // the shutdown checkpoint half-written, nor a departing client's reset hit a closed engine.
    // A holder that outlasts QUERY_WAIT_TIMEOUT does not keep the database open.
    const owner = Symbol('close');
    const held = await this.hold.acquire(owner).then(
      () => true,
      () => false,
    );
    try {
      await this.ready().catch(() => undefined);
      const lsn = await this.walLsn();
      await this.current.exec(CHECKPOINT).catch(() => undefined);
      await this.current.close();
      return { written: lsn === undefined || lsn !== this.archivedLsn };
    } finally {
      if (held) this.hold.release(owner);
    }
  }
}
