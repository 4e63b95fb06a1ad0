import type { Engine } from '../engine/engine.js';
import { errors, GatewayError } from '../errors.js';
import type { Logger } from '../log.js';
import { WAL_PAGE, type WalObjects } from '../storage/wal-objects.js';
import { firstRow } from '../wire/backend-scan.js';
import { query } from '../wire/protocol.js';
import type { NodeActivity } from './activity.js';
import type { Database } from './database.js';
import { Periodic } from './periodic.js';
import type { DatabaseRegistry } from './registry.js';

/**
 * Continuous WAL shipping (DURABILITY=async|sync): the WAL each open database writes goes to the
 * archive as immutable pieces (storage/wal-objects.ts), at least every WAL_SHIP_INTERVAL while it
 * moves, and before the database closes. In `sync` mode a unit's reply (a COMMIT's
 * CommandComplete, an autocommit write's) waits until the WAL it wrote is stored: the client hears
 * of a commit only once the archive has it. The wait happens after the unit gave the database's
 * session back (pooler/archive-gate.ts), so commits that wait together ship together: a shipment
 * takes all the WAL written when it starts, and a barrier joins the one under way. A database's
 * shipments never overlap.
 *
 * While the archive is unreachable the WAL waits in pg_wal. A physical replication slot
 * (`ARCHIVE_SLOT`) keeps every checkpoint, the gateway's or a client's, from removing or
 * recycling a segment that was not shipped: it is advanced to the shipped position only right
 * before the gateway's own checkpoints (base backups, close), after a successful shipment. Past
 * MAX_WAL_BACKLOG of unshipped WAL on the node, a unit that writes on a database with unshipped
 * WAL is refused (its client is disconnected, never told the write succeeded) until the backlog
 * ships; reads go on.
 */

/** The replication slot that pins the WAL not yet shipped. */
export const ARCHIVE_SLOT = 'pglite_gateway_archive';
const SLOT = `'${ARCHIVE_SLOT}'`;
/** Creates the slot when missing (scalar subqueries run only when coalesce needs them); its restart point. */
const OPEN_SLOT = query(
  `SELECT coalesce((SELECT restart_lsn FROM pg_catalog.pg_replication_slots WHERE slot_name = ${SLOT}),
     (SELECT lsn FROM pg_catalog.pg_create_physical_replication_slot(${SLOT}, true)))::text`,
);
const advanceSlot = (lsn: bigint) => {
  const at = `'${formatLsn(lsn)}'::pg_lsn`;
  return query(
    `SELECT pg_catalog.pg_replication_slot_advance(slot_name, least(${at}, pg_catalog.pg_current_wal_flush_lsn()))
     FROM pg_catalog.pg_replication_slots WHERE slot_name = ${SLOT} AND restart_lsn < ${at}`,
  );
};

/** Writes refused while the node's unshipped WAL is past MAX_WAL_BACKLOG. */
export const walBacklogFull = () =>
  new GatewayError(
    '53100',
    'FATAL',
    'terminating connection: too much WAL is waiting for the archive (MAX_WAL_BACKLOG); writes are refused until it ships',
    'wal_backlog_full',
    'this write is kept locally and ships with the backlog, but it was not acknowledged; reads keep working',
  );

export type Durability = 'local' | 'async' | 'sync';

interface ShipState {
  /** WAL up to here is in the archive. */
  shipped: bigint;
  /** The engine whose write count `shippedWrites` is (a restart brings a new one, counting from 0). */
  engine: Engine;
  /** The engine's WAL write count when the archive's copy was read. */
  shippedWrites: bigint;
  /** How far the WAL was seen written (survives a restart, whose new engine reports 0 at first). */
  end: bigint;
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
  /** MAX_WAL_BACKLOG: unshipped WAL on the node past which writes are refused; 0 = no bound. */
  maxBacklogBytes: number;
  dataDirOf: (id: string) => string;
  logger: Logger;
  /** Where shipment latency, bytes and failures are counted. */
  activity?: NodeActivity | undefined;
}

/** Parses a pg_lsn text (`16/B374D848`) into a byte position. */
export function parseLsn(text: string | undefined): bigint | undefined {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text ?? '');
  if (!m) return undefined;
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

/** `16/B374D848` for a byte position. */
export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export class WalShipping {
  private readonly states = new Map<Database, ShipState>();
  private periodic: Periodic | undefined;
  private readonly owner = Symbol('wal-shipping');
  /** The node's unshipped WAL is past MAX_WAL_BACKLOG (recomputed after shipments). */
  private overBacklog = false;
  /** Shipments made (each one or more pieces); group commit shows as fewer than commits. */
  shipments = 0;

  constructor(private readonly opts: WalShippingOptions) {}

  /**
   * A database opened: the WAL it still holds from its slot's restart point on may not be in the
   * archive (a close whose shipment failed), so it ships from there; a new slot starts at the
   * current position (WAL before it is in the copy the database opened from).
   */
  onOpen = async (db: Database): Promise<void> => {
    const current = parseLsn(await db.walLsn()) ?? 0n;
    const restart = db.readOnly ? undefined : await this.openSlot(db);
    const start = restart !== undefined && restart < current ? restart : current;
    this.states.set(db, {
      shipped: start,
      engine: db.engine,
      // WAL left unshipped by an earlier run ships at the next tick, written to or not.
      shippedWrites: start < current ? -1n : db.engine.walWrites(),
      end: current,
      running: undefined,
      failing: false,
    });
    db.walBarrier = () => this.barrier(db);
  };

  /** Before a database closes: ship what is left, and let its shutdown checkpoint drop it. */
  beforeClose = async (db: Database): Promise<void> => {
    try {
      await this.ship(db);
      await db.hold.acquire(this.owner);
      try {
        await db.ready();
        await this.releaseShipped(db);
      } finally {
        db.hold.release(this.owner);
      }
    } catch {
      // The slot keeps the unshipped WAL; the next open ships it (logged by ship()).
    } finally {
      this.states.delete(db);
    }
  };

  /**
   * Before one of the gateway's checkpoints (the caller holds the session): ships the WAL
   * written so far and advances the slot to it, so the checkpoint removes only shipped WAL.
   * Throws when the archive did not take it (the checkpoint should wait).
   */
  beforeCheckpoint = async (db: Database): Promise<void> => {
    if (!this.states.has(db)) return;
    await this.ship(db);
    await this.releaseShipped(db);
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

  /** WAL written by the open databases and not yet in the archive, in bytes. */
  backlogBytes(): number {
    let total = 0n;
    for (const [db, state] of this.states) total += this.unshipped(db, state);
    return Number(total);
  }

  /**
   * `db`'s WAL not in the archive, in bytes: 0 exactly when every write the engine counted was
   * shipped. A rewrite of the last shipped page (a commit that did not move the end) counts
   * from that page's start, since that page is shipped again.
   */
  private unshipped(db: Database, state: ShipState): bigint {
    // The count before the end, as in ship(): every write counted here has moved `end` already.
    const writes = db.engine.walWrites();
    this.follow(db, state);
    if (writes <= state.shippedWrites) return 0n;
    const from = state.shipped > 0n ? ((state.shipped - 1n) / WAL_PAGE) * WAL_PAGE : 0n;
    return state.end > from ? state.end - from : 0n;
  }

  private async tick(registry: DatabaseRegistry): Promise<void> {
    for (const db of await registry.openDatabases()) await this.ship(db).catch(() => undefined);
    this.checkBacklog();
  }

  private checkBacklog(): void {
    const max = this.opts.maxBacklogBytes;
    const backlog = this.backlogBytes();
    const over = max > 0 && backlog > max;
    if (over !== this.overBacklog)
      this.opts.logger[over ? 'error' : 'info'](
        { backlogBytes: backlog, max },
        over
          ? 'WAL backlog past MAX_WAL_BACKLOG: writes are refused'
          : 'WAL backlog shipped: writes accepted again',
      );
    this.overBacklog = over;
  }

  /** Notes a restart's new engine (its write count starts at 0) and how far the WAL was written. */
  private follow(db: Database, state: ShipState): void {
    if (state.engine !== db.engine) {
      state.engine = db.engine;
      // Everything the new engine writes is new; what the old one wrote is counted in `end`.
      state.shippedWrites = state.end > state.shipped ? -1n : 0n;
    }
    const end = db.engine.walEnd();
    if (end > state.end) state.end = end;
  }

  /**
   * Resolves once the WAL written so far is in the archive (`sync`, up to the wait timeout; at
   * once in `async`). Refuses a unit that wrote while the node's backlog is past its bound.
   * Synchronous up to its first await: the target is the WAL written when it is called.
   */
  private async barrier(db: Database): Promise<void> {
    const state = this.states.get(db);
    if (!state) return;
    this.follow(db, state);
    const target = db.engine.walWrites();
    if (target <= state.shippedWrites) return;
    if (this.overBacklog) throw walBacklogFull();
    if (this.opts.mode === 'async') return;
    const deadline = Date.now() + this.opts.waitTimeoutMs;
    for (;;) {
      try {
        await this.ship(db, target);
      } catch {
        // Retried below until the deadline; the failure is logged by ship().
      }
      if (state.shippedWrites >= target) return;
      if (Date.now() >= deadline) throw errors.walNotArchived();
      await new Promise((resolve) => setTimeout(resolve, Math.min(200, this.opts.intervalMs)));
    }
  }

  /**
   * Ships `db`'s WAL written so far (joins a shipment under way, then ships what came after).
   * With `until` (a barrier's write count) it returns as soon as that much is shipped: the
   * waits a shipment satisfies all end with it, and the next shipment takes the rest together.
   */
  private async ship(db: Database, until?: bigint): Promise<void> {
    const state = this.states.get(db);
    if (!state) return;
    const done = () => until !== undefined && state.engine === db.engine && state.shippedWrites >= until;
    while (state.running) {
      await state.running.catch(() => undefined);
      if (done()) return;
    }
    // The write count before the end: the worker moves the end before it counts a write, so
    // every write counted here lies below `to` and is in the files when they are read. (Read
    // the other way round, a write landing in between would be counted as shipped while lying
    // past `to`: nothing would ship it until the database wrote again.)
    const writes = db.engine.walWrites();
    this.follow(db, state);
    const to = state.end;
    if (writes <= state.shippedWrites) return;
    state.running = (async () => {
      const started = performance.now();
      try {
        this.shipments++;
        await this.opts.wal.ship(db.id, this.opts.dataDirOf(db.id), state.shipped, to);
        const bytes = to > state.shipped ? Number(to - state.shipped) : 0;
        this.opts.activity?.walShipped(db.id, (performance.now() - started) / 1000, bytes);
        state.shipped = to;
        if (state.engine === db.engine) state.shippedWrites = writes;
        if (this.overBacklog) this.checkBacklog();
        if (state.failing) this.opts.logger.info({ db: db.id }, 'WAL shipping works again');
        state.failing = false;
      } catch (err) {
        if (!state.failing) this.opts.logger.warn({ err, db: db.id }, 'WAL shipping failed; retrying');
        this.opts.activity?.archiveError(db.id, 'wal', err);
        state.failing = true;
        this.checkBacklog();
        throw err;
      } finally {
        state.running = undefined;
      }
    })();
    await state.running;
  }

  /** Creates the slot if missing; its restart point (undefined when it could not be read). */
  private async openSlot(db: Database): Promise<bigint | undefined> {
    try {
      return parseLsn(firstRow(await db.engine.exec(OPEN_SLOT))?.[0] ?? undefined);
    } catch (err) {
      this.opts.logger.warn(
        { err, db: db.id },
        'could not open the WAL slot; a checkpoint may drop unshipped WAL',
      );
      return undefined;
    }
  }

  /** Lets checkpoints remove the shipped WAL (call while holding the session). */
  private async releaseShipped(db: Database): Promise<void> {
    const state = this.states.get(db);
    if (!state || db.readOnly) return;
    await db.engine.exec(advanceSlot(state.shipped));
  }
}
