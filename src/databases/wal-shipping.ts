import { errors } from '../errors.js';
import type { Logger } from '../log.js';
import type { WalObjects } from '../storage/wal-objects.js';
import type { Database } from './database.js';
import { Periodic } from './periodic.js';
import type { DatabaseRegistry } from './registry.js';

/**
 * Continuous WAL shipping (DURABILITY=async|sync): the WAL each open database writes goes to the
 * archive as immutable pieces (storage/wal-objects.ts), at least every WAL_SHIP_INTERVAL while it
 * moves, and before the database closes. In `sync` mode a unit's reply (a COMMIT's
 * CommandComplete, an autocommit write's) waits until the WAL it wrote is stored: the client hears
 * of a commit only once the archive has it. A database's shipments never overlap.
 */

export type Durability = 'local' | 'async' | 'sync';

interface ShipState {
  /** WAL up to here is in the archive. */
  shipped: bigint;
  /** The engine's WAL write count when the archive's copy was read. */
  shippedWrites: bigint;
  /** The shipment under way, if any. */
  running: Promise<void> | undefined;
  /** The archive failed last time: logged once until it works again. */
  failing: boolean;
}

export interface WalShippingOptions {
  wal: WalObjects;
  mode: Exclude<Durability, 'local'>;
  intervalMs: number;
  /** How long a `sync` commit waits for the archive before its client is told it failed. */
  waitTimeoutMs: number;
  dataDirOf: (id: string) => string;
  logger: Logger;
}

/** Parses a pg_lsn text (`16/B374D848`) into a byte position. */
export function parseLsn(text: string | undefined): bigint | undefined {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text ?? '');
  if (!m) return undefined;
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export class WalShipping {
  private readonly states = new Map<Database, ShipState>();
  private periodic: Periodic | undefined;

  constructor(private readonly opts: WalShippingOptions) {}

  /** A database opened: WAL before its current position is in the copy it opened from. */
  onOpen = async (db: Database): Promise<void> => {
    const start = parseLsn(await db.walLsn()) ?? 0n;
    this.states.set(db, {
      shipped: start,
      shippedWrites: db.engine.walWrites(),
      running: undefined,
      failing: false,
    });
    if (this.opts.mode === 'sync') db.walBarrier = () => this.barrier(db);
  };

  /** Before a database closes: ship what is left (the close snapshot follows). */
  beforeClose = async (db: Database): Promise<void> => {
    await this.ship(db).catch(() => undefined);
    this.states.delete(db);
  };

  /** Ships every open database's new WAL every WAL_SHIP_INTERVAL. */
  start(registry: DatabaseRegistry): void {
    this.periodic ??= new Periodic(this.opts.intervalMs, () => this.tick(registry));
    this.periodic.start();
  }

  async stop(): Promise<void> {
    await this.periodic?.stop();
  }

  /** Where the archive's copy of `db`'s WAL ends (undefined when it is not tracked). */
  shippedLsn(db: Database): bigint | undefined {
    return this.states.get(db)?.shipped;
  }

  private async tick(registry: DatabaseRegistry): Promise<void> {
    for (const db of await registry.openDatabases()) await this.ship(db).catch(() => undefined);
  }

  /** Waits until the WAL written so far is in the archive, up to the wait timeout. */
  private async barrier(db: Database): Promise<void> {
    const target = db.engine.walWrites();
    const state = this.states.get(db);
    if (!state || target <= state.shippedWrites) return;
    const deadline = Date.now() + this.opts.waitTimeoutMs;
    for (;;) {
      try {
        await this.ship(db);
      } catch {
        // Retried below until the deadline; the failure is logged by ship().
      }
      if (state.shippedWrites >= target) return;
      if (Date.now() >= deadline) throw errors.walNotArchived();
      await new Promise((resolve) => setTimeout(resolve, Math.min(200, this.opts.intervalMs)));
    }
  }

  /** Ships `db`'s WAL written so far (joins a shipment under way, then ships what came after). */
  private async ship(db: Database): Promise<void> {
    const state = this.states.get(db);
    if (!state) return;
    while (state.running) await state.running.catch(() => undefined);
    // The write count first: whatever it counts is in the files when they are read.
    const writes = db.engine.walWrites();
    const to = db.engine.walEnd();
    if (writes <= state.shippedWrites) return;
    state.running = (async () => {
      try {
        await this.opts.wal.ship(db.id, this.opts.dataDirOf(db.id), state.shipped, to);
        state.shipped = to;
        state.shippedWrites = writes;
        if (state.failing) this.opts.logger.info({ db: db.id }, 'WAL shipping works again');
        state.failing = false;
      } catch (err) {
        if (!state.failing) this.opts.logger.warn({ err, db: db.id }, 'WAL shipping failed; retrying');
        state.failing = true;
        throw err;
      } finally {
        state.running = undefined;
      }
    })();
    await state.running;
  }
}
