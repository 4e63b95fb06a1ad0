import { accessMode, type DatabaseRecord } from '../catalog/catalog.js';
import type { Engine } from '../engine/engine.js';
import { errors, GatewayError } from '../errors.js';
import { databasePath } from '../ids.js';
import { KeyedChain } from '../keyed-chain.js';
import type { Logger } from '../log.js';
import { hasPgVersion } from '../pgdata/pg-version.js';
import { attachActivity, CloseCause, NodeActivity } from './activity.js';
import { Database } from './database.js';

/**
 * Open databases of this process: at most one PGlite per database, ever. Opening is single-flight
 * (clients arriving together share one open), clients are counted per database (53300 past the
 * cap), and a database nobody uses is closed after `idleTimeoutMs`.
 */

/**
 * Makes a database's local copy ready to open: 'present' or 'fetched' from the archive, 'absent'
 * when there is none anywhere. `incarnation` is the catalog's (DatabaseRecord.incarnation).
 */
export type Materialize = (
  id: string,
  dir: string,
  incarnation: string,
) => Promise<'present' | 'fetched' | 'absent'>;

export interface RegistryOptions {
  dataDir: string;
  maxClientsPerDb: number;
  queryWaitTimeoutMs: number;
  idleTimeoutMs: number;
  /** Open databases kept at most; the least recently used one without clients is evicted. */
  maxOpenDatabases: number;
  /** Process RSS above which idle databases are evicted before another opens; 0 = no limit. */
  maxMemoryBytes: number;
  logger: Logger;
  /** Makes sure the PGDATA is local before an open (fetch from the archive); 'absent' = none anywhere. */
  materialize?: Materialize;
  /** Runs once a database opened, before its first client (WAL shipping starts). */
  onOpen?: (db: Database) => Promise<void>;
  /** Runs before a database closes (WAL shipping finishes). */
  beforeClose?: (db: Database) => Promise<void>;
  /** Runs after a database closed, before it may open again (snapshot to the archive). */
  afterClose?: (id: string, dir: string, written: boolean) => Promise<void>;
  /** Starts a database's engine (an EngineHost). */
  engines: { open(dataDir: string, opts: { readOnly: boolean; writer?: boolean }): Promise<Engine> };
  /** Where opens, closes and units are counted (a new one when absent). */
  activity?: NodeActivity | undefined;
}

/** A connected client, as the live stats and the dashboard show it. */
export interface ClientView {
  id: number;
  connectedAt: number;
}

/** An open (or opening) database, as the live stats show it. */
export interface OpenDatabaseView {
  id: string;
  state: 'opening' | 'open';
  clients: number;
  /** Clients waiting for the database's session. */
  waiting: number;
  lastUsed: number;
  /** What its worker holds (engine.memoryBytes()); null while opening or not measured. */
  memoryBytes: number | null;
}

export interface Lease {
  readonly database: Database;
  /**
   * Called when the database is going away to end this client, with what to tell it: server
   * shutdown, or an administrator command (delete, flags, restore, upload) while the server runs.
   */
  onTerminate(fn: (reason: GatewayError) => void): void;
  release(): void;
}

interface Entry {
  opening: Promise<Database>;
  clients: Set<LeaseImpl>;
  idleTimer: NodeJS.Timeout | undefined;
  /** When a client last arrived or left: the LRU order for eviction. */
  lastUsed: number;
  /** Set once the open finished (live stats tell opening from open). */
  database?: Database | undefined;
}

/** How often shutdown logs the databases that are still closing (checkpoint, snapshot). */
const CLOSE_PROGRESS_INTERVAL_MS = 5000;

/** How much longer a database may stay idle for each time it came back soon after an idle close. */
const MAX_IDLE_STRETCH = 4;

let leaseIds = 0;

class LeaseImpl implements Lease {
  terminate: ((reason: GatewayError) => void) | undefined;
  released = false;
  readonly id = ++leaseIds;
  readonly connectedAt = Date.now();
  constructor(
    public database: Database,
    private readonly done: (lease: LeaseImpl) => void,
  ) {}
  onTerminate(fn: (reason: GatewayError) => void): void {
    this.terminate = fn;
  }
  release(): void {
    if (this.released) return;
    this.released = true;
    this.done(this);
  }
}

export { Database };

export class DatabaseRegistry {
  private readonly entries = new Map<string, Entry>();
  /**
   * Hysteresis for idle closes: a database reopened soon after its idle close gets a longer idle
   * timeout next time, so a database used every few minutes is not closed and reopened each time.
   */
  private readonly idleStretch = new Map<string, { closedAt: number; factor: number }>();
  private shuttingDown = false;
  /** Databases closing (and being snapshotted): a new open waits so no one writes mid-tarball. */
  private readonly closing = new Map<string, Promise<void>>();
  /** Databases kept closed while their directory is replaced (restore, upload, clone): opens wait. */
  private readonly held = new KeyedChain();
  /** Stands in for the database while a lease waits for the open. */
  private readonly pending = undefined as unknown as Database;

  readonly activity: NodeActivity;

  constructor(private readonly opts: RegistryOptions) {
    this.activity = opts.activity ?? new NodeActivity();
  }

  /** Counters for metrics and tests: how many times a PGlite was opened and closed. */
  /** Opens, closes and restarts (cancel, statement timeout, broken engine) since the start. */
  readonly stats = { opens: 0, closes: 0, restarts: 0 };

  get openCount(): number {
    return this.entries.size;
  }

  /** Reserves a client slot and returns the (possibly just opened) database. */
  async connect(record: DatabaseRecord): Promise<Lease> {
    if (this.shuttingDown) throw errors.shuttingDown();
    let entry: Entry | undefined;
    for (;;) {
      await this.waitUntilOpenable(record.id);
      entry = this.entries.get(record.id);
      if (entry) break;
      await this.makeRoom();
      entry = this.entries.get(record.id);
      // Closed and held meanwhile (restore, upload): wait for that again.
      if (entry || (!this.closing.has(record.id) && !this.held.has(record.id))) break;
    }
    if (!entry) {
      const now = Date.now();
      const stretch = this.idleStretch.get(record.id);
      if (stretch && now - stretch.closedAt < this.opts.idleTimeoutMs * stretch.factor) {
        stretch.factor = Math.min(stretch.factor * 2, MAX_IDLE_STRETCH);
      } else {
        this.idleStretch.delete(record.id);
      }
      entry = {
        opening: this.open(record),
        clients: new Set(),
        idleTimer: undefined,
        lastUsed: now,
      };
      const created = entry;
      this.entries.set(record.id, created);
      created.opening.then(
        (database) => {
          created.database = database;
        },
        (err) => {
          this.activity.openFailed(record.id, err);
          if (this.entries.get(record.id) === created) this.entries.delete(record.id);
        },
      );
    }
    if (entry.clients.size >= this.opts.maxClientsPerDb) throw errors.tooManyClients(record.id);
    // The lease takes its slot before the open is awaited so concurrent arrivals are counted.
    const lease = new LeaseImpl(this.pending, (l) => this.leave(record.id, l));
    entry.clients.add(lease);
    entry.lastUsed = Date.now();
    clearTimeout(entry.idleTimer);
    try {
      lease.database = await entry.opening;
    } catch (err) {
      lease.release();
      throw err;
    }
    return lease;
  }

  private async open(record: DatabaseRecord): Promise<Database> {
    const dir = databasePath(this.opts.dataDir, record.id);
    await this.opts.materialize?.(record.id, dir, record.incarnation).catch((err: unknown) => {
      if (err instanceof GatewayError) throw err;
      // The archive's side (unreachable, a corrupt piece): the client hears it as such.
      this.opts.logger.error({ err, db: record.id }, 'could not fetch the database from the archive');
      throw errors.fetchFailed(record.id);
    });
    if (!(await hasPgVersion(dir))) throw errors.databaseNotFound(record.id);
    const started = performance.now();
    this.stats.opens++;
    const open = () =>
      this.opts.engines.open(dir, { readOnly: record.readOnly, writer: accessMode(record) === 'writer' });
    const engine = await open().catch(async (err: unknown) => {
      // Deleted while it was being opened: the client hears that, not an internal error.
      if (!(await hasPgVersion(dir))) throw errors.databaseNotFound(record.id);
      throw err;
    });
    const ms = performance.now() - started;
    this.opts.logger.info(
      { db: record.id, ms: Math.round(ms), readOnly: record.readOnly },
      'database opened',
    );
    const database = new Database(
      record.id,
      engine,
      open,
      record.readOnly,
      this.opts.queryWaitTimeoutMs,
      this.opts.logger,
    );
    attachActivity(database, this.activity.of(record.id));
    database.onRestart(async () => {
      this.stats.restarts++;
      this.activity.restarted(record.id);
    });
    database.archivedLsn = await database.walLsn();
    await this.opts.onOpen?.(database);
    this.activity.opened(record.id, ms / 1000);
    return database;
  }

  private leave(id: string, lease: LeaseImpl): void {
    const entry = this.entries.get(id);
    if (!entry) return;
    entry.clients.delete(lease);
    entry.lastUsed = Date.now();
    if (entry.clients.size > 0 || this.shuttingDown) return;
    const factor = this.idleStretch.get(id)?.factor ?? 1;
    entry.idleTimer = setTimeout(() => void this.closeIdle(id, factor), this.opts.idleTimeoutMs * factor);
    entry.idleTimer.unref();
  }

  private async closeIdle(id: string, factor: number): Promise<void> {
    this.idleStretch.delete(id);
    this.idleStretch.set(id, { closedAt: Date.now(), factor });
    // Bounded memory: forget the oldest entries.
    if (this.idleStretch.size > 10_000)
      this.idleStretch.delete(this.idleStretch.keys().next().value as string);
    await this.close(id, CloseCause.idle);
  }

  private overCapacity(): boolean {
    if (this.entries.size >= this.opts.maxOpenDatabases) return true;
    return this.opts.maxMemoryBytes > 0 && process.memoryUsage.rss() >= this.opts.maxMemoryBytes;
  }

  /**
   * Before another database opens: evict least recently used databases that have no clients
   * until under both caps. When nothing can be evicted the newcomer fails at once with 53300.
   */
  private async makeRoom(): Promise<void> {
    while (this.overCapacity()) {
      const victim = [...this.entries.entries()]
        .filter(([, e]) => e.clients.size === 0)
        .sort(([, a], [, b]) => a.lastUsed - b.lastUsed)[0];
      if (!victim) throw errors.tooManyOpenDatabases();
      this.opts.logger.info({ db: victim[0] }, 'evicting database to make room');
      await this.close(victim[0], CloseCause.capacity);
    }
  }

  /** Terminates the database's clients and closes it (delete, restore, shutdown). */
  close(id: string, cause: CloseCause = CloseCause.admin): Promise<void> {
    const entry = this.entries.get(id);
    if (!entry) return this.closing.get(id) ?? Promise.resolve();
    this.entries.delete(id);
    const done = this.closeEntry(id, entry, cause).finally(() => this.closing.delete(id));
    this.closing.set(id, done);
    return done;
  }

  /**
   * Closes the database like `close()` and keeps it closed while `fn` runs (its directory is being
   * replaced): clients arriving meanwhile wait, then open what `fn` left. Calls for the same
   * database run one after another.
   */
  closeWhile<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.held.run(id, async () => {
      await this.close(id);
      return fn();
    });
  }

  /**
   * Runs `fn` (dropping the closed database's local copy) only while the database is neither
   * open, opening, closing nor held: clients arriving meanwhile wait, then open (fetch) it again.
   * Resolves false, without running `fn`, when the database is in use.
   */
  whileUnused(id: string, fn: () => Promise<void>): Promise<boolean> {
    const inUse = () => this.entries.has(id) || this.closing.has(id);
    if (inUse() || this.held.has(id)) return Promise.resolve(false);
    return this.held.run(id, async () => {
      if (inUse()) return false;
      await fn();
      return true;
    });
  }

  /** Waits while the database is closing (a failed close fails the caller) or held closed. */
  private async waitUntilOpenable(id: string): Promise<void> {
    for (;;) {
      const closing = this.closing.get(id);
      if (closing) await closing;
      const held = this.held.pending(id);
      if (held) await held;
      if (!closing && !held) return;
    }
  }

  /** The open databases, for periodic snapshots. */
  /**
   * The database open now under `id`, if any. A delete or close ends it, so finding the same
   * object later proves the id was not deleted (and perhaps created again) in between.
   */
  openDatabase(id: string): Database | undefined {
    return this.entries.get(id)?.database;
  }

  async openDatabases(): Promise<Database[]> {
    const all = await Promise.all([...this.entries.values()].map((e) => e.opening.catch(() => undefined)));
    return all.filter((d): d is Database => d !== undefined);
  }

  /** The open and opening databases with their client counts (live stats). */
  openViews(): OpenDatabaseView[] {
    const views: OpenDatabaseView[] = [];
    for (const [id, entry] of this.entries) {
      const database = entry.database;
      views.push({
        id,
        state: database ? 'open' : 'opening',
        clients: entry.clients.size,
        waiting: database?.hold.queued ?? 0,
        lastUsed: entry.lastUsed,
        memoryBytes: database?.engine.memoryBytes() ?? null,
      });
    }
    return views;
  }

  /**
   * Forgets a deleted database: its counters (live stats, per-database metrics) and its idle
   * history, so those of deleted databases do not pile up. Call after it was closed.
   */
  forget(id: string): void {
    this.activity.forget(id);
    this.idleStretch.delete(id);
  }

  /** The clients of an open database (empty when it is not open). */
  clientsOf(id: string): ClientView[] {
    const entry = this.entries.get(id);
    return entry ? [...entry.clients].map((l) => ({ id: l.id, connectedAt: l.connectedAt })) : [];
  }

  /** Ends one client of a database (57P01, as an administrator command); false when not found. */
  disconnect(id: string, clientId: number): boolean {
    const lease = [...(this.entries.get(id)?.clients ?? [])].find((l) => l.id === clientId);
    if (!lease?.terminate) return false;
    lease.terminate(errors.adminTerminated());
    this.activity.event('disconnect', id, `client ${clientId}`);
    return true;
  }

  private async closeEntry(id: string, entry: Entry, cause: CloseCause): Promise<void> {
    clearTimeout(entry.idleTimer);
    const reason = this.shuttingDown ? errors.shuttingDown() : errors.adminTerminated();
    for (const lease of entry.clients) lease.terminate?.(reason);
    const database = await entry.opening.catch(() => undefined);
    if (!database) return;
    await this.opts
      .beforeClose?.(database)
      .catch((err) => this.opts.logger.warn({ err, db: id }, 'before-close step failed'));
    const { written } = await database.close();
    this.stats.closes++;
    this.activity.closed(id, this.shuttingDown ? CloseCause.shutdown : cause);
    this.opts.logger.info({ db: id }, 'database closed');
    await this.opts
      .afterClose?.(id, databasePath(this.opts.dataDir, id), written)
      .catch((err) => this.opts.logger.error({ err, db: id }, 'after-close step failed'));
  }

  /** Stops accepting clients and closes every database, saying every few seconds which are left. */
  async closeAll(): Promise<void> {
    this.shuttingDown = true;
    const all = Promise.all([...this.entries.keys()].map((id) => this.close(id)));
    const progress = setInterval(() => {
      const left = [...this.closing.keys()];
      this.opts.logger.info({ count: left.length, databases: left.slice(0, 20) }, 'databases still closing');
    }, CLOSE_PROGRESS_INTERVAL_MS);
    progress.unref();
    try {
      await all;
    } finally {
      clearInterval(progress);
    }
  }
}
