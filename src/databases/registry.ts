import { stat } from 'node:fs/promises';
import type { DatabaseRecord } from '../catalog/catalog.js';
import { errors } from '../errors.js';
import { databasePath } from '../gateway/routing.js';
import type { Logger } from '../log.js';
import { Database } from './database.js';
import { openEngine } from './engine.js';

/**
 * Open databases of this process: at most one PGlite per database, ever. Opening is single-flight
 * (clients arriving together share one open), clients are counted per database (53300 past the
 * cap), and a database nobody uses is closed after `idleTimeoutMs`.
 */

export interface RegistryOptions {
  dataDir: string;
  maxClientsPerDb: number;
  queryWaitTimeoutMs: number;
  idleTimeoutMs: number;
  logger: Logger;
  /** Replaceable for tests of the registry itself. */
  openEngine?: typeof openEngine;
}

export interface Lease {
  readonly database: Database;
  /** Called when the database is going away (delete, shutdown) to end this client. */
  onTerminate(fn: () => void): void;
  release(): void;
}

interface Entry {
  opening: Promise<Database>;
  clients: Set<LeaseImpl>;
  idleTimer: NodeJS.Timeout | undefined;
}

class LeaseImpl implements Lease {
  terminate: (() => void) | undefined;
  released = false;
  constructor(
    public database: Database,
    private readonly done: (lease: LeaseImpl) => void,
  ) {}
  onTerminate(fn: () => void): void {
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
  private closing = false;
  /** Stands in for the database while a lease waits for the open. */
  private readonly pending = undefined as unknown as Database;

  constructor(private readonly opts: RegistryOptions) {}

  /** Counters for metrics and tests: how many times a PGlite was opened and closed. */
  readonly stats = { opens: 0, closes: 0 };

  get openCount(): number {
    return this.entries.size;
  }

  /** Reserves a client slot and returns the (possibly just opened) database. */
  async connect(record: DatabaseRecord): Promise<Lease> {
    if (this.closing) throw errors.shuttingDown();
    let entry = this.entries.get(record.id);
    if (!entry) {
      entry = { opening: this.open(record), clients: new Set(), idleTimer: undefined };
      const created = entry;
      this.entries.set(record.id, created);
      created.opening.catch(() => {
        if (this.entries.get(record.id) === created) this.entries.delete(record.id);
      });
    }
    if (entry.clients.size >= this.opts.maxClientsPerDb) throw errors.tooManyClients(record.id);
    // The lease takes its slot before the open is awaited so concurrent arrivals are counted.
    const lease = new LeaseImpl(this.pending, (l) => this.leave(record.id, l));
    entry.clients.add(lease);
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
    const exists = await stat(`${dir}/PG_VERSION`).then(
      () => true,
      () => false,
    );
    if (!exists) throw errors.databaseNotFound(record.id);
    const started = performance.now();
    this.stats.opens++;
    const open = () => (this.opts.openEngine ?? openEngine)(dir, { readOnly: record.readOnly });
    const engine = await open();
    this.opts.logger.info(
      { db: record.id, ms: Math.round(performance.now() - started), readOnly: record.readOnly },
      'database opened',
    );
    return new Database(
      record.id,
      engine,
      open,
      record.readOnly,
      this.opts.queryWaitTimeoutMs,
      this.opts.logger,
    );
  }

  private leave(id: string, lease: LeaseImpl): void {
    const entry = this.entries.get(id);
    if (!entry) return;
    entry.clients.delete(lease);
    if (entry.clients.size > 0 || this.closing) return;
    entry.idleTimer = setTimeout(() => void this.close(id), this.opts.idleTimeoutMs);
    entry.idleTimer.unref();
  }

  /** Terminates the database's clients and closes it (delete, restore, shutdown). */
  async close(id: string): Promise<void> {
    const entry = this.entries.get(id);
    if (!entry) return;
    this.entries.delete(id);
    clearTimeout(entry.idleTimer);
    for (const lease of entry.clients) lease.terminate?.();
    const database = await entry.opening.catch(() => undefined);
    if (!database) return;
    await database.close();
    this.stats.closes++;
    this.opts.logger.info({ db: id }, 'database closed');
  }

  /** Stops accepting clients and closes every database. */
  async closeAll(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.entries.keys()].map((id) => this.close(id)));
  }
}
