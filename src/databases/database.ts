import { query } from '../gateway/protocol.js';
import type { Logger } from '../log.js';
import type { Engine } from './engine.js';
import { DatabaseHold } from './hold.js';
import { NotificationHub } from './notifications.js';
import { firstRow, TRACKED_SETTINGS } from './parameters.js';

const CHECKPOINT = query('CHECKPOINT');
const WAL_LSN = query('SELECT pg_catalog.pg_current_wal_lsn()::text');

/**
 * One open database: its engine (a PGlite in a worker), the hold that serialises its clients, and
 * what the shared session currently looks like. A running statement is interrupted by ending the
 * worker and opening the database again; its clients see a fresh session (generation + 1).
 */
export class Database {
  readonly hold: DatabaseHold;
  /** Which clients listen to which channels; the session listens to their union. */
  readonly notifications = new NotificationHub();
  private clientIds = 0;
  private restarting: Promise<void> | undefined;
  /** Bumped by every restart: sessions re-create their prepared statements when it changes. */
  generation = 0;
  /** The client whose settings the shared session currently has. */
  lastOwner: symbol | undefined;
  /** Tracked settings as the shared session has them now. */
  settings: Map<string, string>;
  /** Tracked settings as the session starts, restored for clients that did not change them. */
  readonly defaults: ReadonlyMap<string, string>;
  /** Names clients hear about in ParameterStatus. */
  readonly reported: ReadonlySet<string>;
  /** Parameter values reported to clients at startup. */
  readonly parameters: Readonly<Record<string, string>>;

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
    this.defaults = new Map(
      TRACKED_SETTINGS.filter((n) => this.parameters[n] !== undefined).map((n) => [
        n,
        this.parameters[n] as string,
      ]),
    );
    this.settings = new Map(this.defaults);
    this.reported = new Set(Object.keys(this.parameters));
  }

  get engine(): Engine {
    return this.current;
  }

  /** Short per-database client numbers, used in renamed statement names. */
  nextClientId(): number {
    return ++this.clientIds;
  }

  /** Resolves once no restart is under way. */
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
      // A new session listens to nothing: give it its clients' channels back.
      const listen = this.notifications.listenAllSql();
      if (listen) await this.current.exec(query(listen)).catch(() => undefined);
      this.generation++;
      this.settings = new Map(this.defaults);
      this.lastOwner = undefined;
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
