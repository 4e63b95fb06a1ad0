import type { Database } from './database.js';

/**
 * What happens on this node, counted where it happens and read by whoever reports it (the
 * Prometheus metrics, the live stats API): per-database counters and recent latencies, node-wide
 * totals, and a bounded ring of recent events. Plain numbers and callbacks only: the reporting
 * layers (http/) turn them into metrics; nothing here knows about prom-client.
 */

/** Why a database closed: evictions by cause. */
export const CloseCause = {
  /** Nobody used it for IDLE_TIMEOUT. */
  idle: 'idle',
  /** Another database needed its room (MAX_OPEN_DATABASES, MAX_MEMORY). */
  capacity: 'capacity',
  /** An administrator: delete, restore, upload, or the dashboard's close. */
  admin: 'admin',
  /** The node is shutting down. */
  shutdown: 'shutdown',
} as const;
export type CloseCause = (typeof CloseCause)[keyof typeof CloseCause];

export type ActivityEventKind = 'open' | 'close' | 'error' | 'restart' | 'snapshot' | 'disconnect';

export interface ActivityEvent {
  /** Increasing per node: a stream resumes after the last one it sent. */
  seq: number;
  at: number;
  kind: ActivityEventKind;
  db: string;
  detail?: string | undefined;
}

/** Receives every observation as it happens (the metrics module's histograms). */
export interface ActivityObserver {
  unit?(db: string, seconds: number, transaction: boolean): void;
  wait?(db: string, seconds: number): void;
  opened?(db: string, seconds: number): void;
  closed?(db: string, cause: CloseCause): void;
  snapshot?(db: string, seconds: number, bytes: number): void;
  walShipped?(db: string, seconds: number, bytes: number): void;
  archiveError?(db: string, operation: 'snapshot' | 'wal'): void;
}

/** Recent statement latencies kept per database (for its detail chart). */
const RECENT_UNITS = 120;
/** Recent events kept per node. */
const RECENT_EVENTS = 200;

/** One database's counters; kept across its opens and closes for the life of the process. */
export class DatabaseActivity {
  /** Units of work run (a simple Query, or extended messages up to Sync). */
  units = 0;
  /** Units that left the session idle (a committed or rolled back transaction, or autocommit). */
  transactions = 0;
  /** Turns taken at the database's session (most without waiting), and the total wait. */
  waits = 0;
  waitSeconds = 0;
  openedAt: number | undefined;
  closedAt: number | undefined;
  lastSnapshotAt: number | undefined;
  lastSnapshotBytes: number | undefined;
  lastWalShippedAt: number | undefined;
  /** Recent units as (end time ms, latency ms) pairs in a ring. */
  private readonly recent = new Float64Array(RECENT_UNITS * 2);
  private recentNext = 0;
  private recentCount = 0;

  constructor(
    readonly id: string,
    private readonly node: NodeActivity,
  ) {}

  /** Called by the pooler after each unit; cheap (a few stores and one call). */
  unitDone(ms: number, transaction: boolean): void {
    this.units++;
    if (transaction) this.transactions++;
    const i = this.recentNext * 2;
    this.recent[i] = Date.now();
    this.recent[i + 1] = ms;
    this.recentNext = (this.recentNext + 1) % RECENT_UNITS;
    if (this.recentCount < RECENT_UNITS) this.recentCount++;
    this.node.unit(this.id, ms / 1000, transaction);
  }

  /** Called by the pooler after a client waited its turn for the session. */
  waited(ms: number): void {
    this.waits++;
    this.waitSeconds += ms / 1000;
    this.node.wait(this.id, ms / 1000);
  }

  /** The recent units, oldest first: [end time ms, latency ms]. */
  recentLatencies(): [number, number][] {
    const out: [number, number][] = [];
    const start = (this.recentNext - this.recentCount + RECENT_UNITS) % RECENT_UNITS;
    for (let k = 0; k < this.recentCount; k++) {
      const i = ((start + k) % RECENT_UNITS) * 2;
      out.push([this.recent[i] as number, this.recent[i + 1] as number]);
    }
    return out;
  }
}

/** Node-wide totals, per-database activity and the recent events of one node. */
export class NodeActivity {
  readonly totals = {
    units: 0,
    /** Total time of those units. */
    unitSeconds: 0,
    transactions: 0,
    opens: 0,
    openFailures: 0,
    snapshots: 0,
    snapshotBytes: 0,
    snapshotErrors: 0,
    walShipments: 0,
    walErrors: 0,
    walBytes: 0,
    archiveErrors: 0,
    closes: { idle: 0, capacity: 0, admin: 0, shutdown: 0 } as Record<CloseCause, number>,
  };
  private readonly databases = new Map<string, DatabaseActivity>();
  private readonly observers: ActivityObserver[] = [];
  private readonly events: ActivityEvent[] = [];
  private seq = 0;
  private readonly eventListeners = new Set<(e: ActivityEvent) => void>();

  /** Adds an observer (the metrics module); returns how to remove it. */
  observe(observer: ActivityObserver): () => void {
    this.observers.push(observer);
    return () => {
      const i = this.observers.indexOf(observer);
      if (i >= 0) this.observers.splice(i, 1);
    };
  }

  /** Calls `fn` with every new event; returns how to stop. */
  onEvent(fn: (e: ActivityEvent) => void): () => void {
    this.eventListeners.add(fn);
    return () => this.eventListeners.delete(fn);
  }

  /** The database's activity (created on first use). */
  of(id: string): DatabaseActivity {
    let activity = this.databases.get(id);
    if (!activity) {
      activity = new DatabaseActivity(id, this);
      this.databases.set(id, activity);
    }
    return activity;
  }

  /** The activity of databases that were used in this process, without creating any. */
  peek(id: string): DatabaseActivity | undefined {
    return this.databases.get(id);
  }

  all(): IterableIterator<DatabaseActivity> {
    return this.databases.values();
  }

  /** Forgets a deleted database. */
  forget(id: string): void {
    this.databases.delete(id);
  }

  /** The recent events, oldest first, after `afterSeq` when given. */
  recentEvents(afterSeq = 0): ActivityEvent[] {
    return this.events.filter((e) => e.seq > afterSeq);
  }

  event(kind: ActivityEventKind, db: string, detail?: string): void {
    const event: ActivityEvent = { seq: ++this.seq, at: Date.now(), kind, db, detail };
    this.events.push(event);
    if (this.events.length > RECENT_EVENTS) this.events.shift();
    for (const fn of this.eventListeners) fn(event);
  }

  unit(db: string, seconds: number, transaction: boolean): void {
    this.totals.units++;
    this.totals.unitSeconds += seconds;
    if (transaction) this.totals.transactions++;
    for (const o of this.observers) o.unit?.(db, seconds, transaction);
  }

  wait(db: string, seconds: number): void {
    for (const o of this.observers) o.wait?.(db, seconds);
  }

  opened(db: string, seconds: number): void {
    this.totals.opens++;
    this.of(db).openedAt = Date.now();
    this.event('open', db, `${Math.round(seconds * 1000)} ms`);
    for (const o of this.observers) o.opened?.(db, seconds);
  }

  openFailed(db: string, err: unknown): void {
    this.totals.openFailures++;
    this.event('error', db, `open failed: ${err instanceof Error ? err.message : String(err)}`);
  }

  closed(db: string, cause: CloseCause): void {
    this.totals.closes[cause]++;
    this.of(db).closedAt = Date.now();
    this.event('close', db, cause);
    for (const o of this.observers) o.closed?.(db, cause);
  }

  restarted(db: string): void {
    this.event('restart', db);
  }

  snapshot(db: string, seconds: number, bytes: number): void {
    this.totals.snapshots++;
    this.totals.snapshotBytes += bytes;
    const a = this.of(db);
    a.lastSnapshotAt = Date.now();
    a.lastSnapshotBytes = bytes;
    this.event('snapshot', db, `${bytes} bytes`);
    for (const o of this.observers) o.snapshot?.(db, seconds, bytes);
  }

  walShipped(db: string, seconds: number, bytes: number): void {
    this.totals.walShipments++;
    this.totals.walBytes += bytes;
    this.of(db).lastWalShippedAt = Date.now();
    for (const o of this.observers) o.walShipped?.(db, seconds, bytes);
  }

  archiveError(db: string, operation: 'snapshot' | 'wal', err: unknown): void {
    this.totals.archiveErrors++;
    if (operation === 'wal') this.totals.walErrors++;
    else this.totals.snapshotErrors++;
    this.event('error', db, `${operation}: ${err instanceof Error ? err.message : String(err)}`);
    for (const o of this.observers) o.archiveError?.(db, operation);
  }
}

const attached = new WeakMap<Database, DatabaseActivity>();
/** Counts into nothing: a database opened outside a registry (tests of lower layers). */
const detached = new NodeActivity();

/** Ties an open database to its activity (the registry does, at open). */
export function attachActivity(database: Database, activity: DatabaseActivity): void {
  attached.set(database, activity);
}

/** The activity an open database counts into (the pooler looks it up once per client). */
export function activityOf(database: Database): DatabaseActivity {
  return attached.get(database) ?? detached.of(database.id);
}
