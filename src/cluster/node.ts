import { rm } from 'node:fs/promises';
import { type Fence, LEGACY_INCARNATION } from '../catalog/catalog.js';
import type { Materialize } from '../databases/registry.js';
import { errors } from '../errors.js';
import type { Logger } from '../log.js';
import { readIncarnation, writeIncarnation } from '../storage/local-marks.js';
import type { Coordination } from './coordination.js';
import { LeaseClock } from './lease-clock.js';
import { rendezvousOwner } from './rendezvous.js';

/**
 * This node's membership and the databases it owns. The heartbeat (one statement per renewal)
 * renews the node's lease, which covers every database it owns; the reply lists the placements
 * the catalog gives it, and any it believed it owned but no longer does is dropped at once. A
 * watchdog drops every owned database when the lease cannot be proven (catalog unreachable, or
 * the process was paused), so a node never acknowledges a commit after another could have
 * claimed the database.
 */

export type Target = { kind: 'local' } | { kind: 'forward'; nodeId: string; address: string };

const OwnerState = { owned: 'owned', lost: 'lost' } as const;
type OwnerState = (typeof OwnerState)[keyof typeof OwnerState];

interface Owned {
  generation: bigint;
  state: OwnerState;
  /** Monotonic time the claim completed: a heartbeat sent before it does not know it yet. */
  claimedAt: number;
  /** The local copy may be older than the archive: fetch from the archive on open. */
  refetch: boolean;
}

export interface ClusterNodeOptions {
  nodeId: string;
  address: string;
  leaseTtlMs: number;
  coordination: Coordination;
  logger: Logger;
  /** Open databases (reported with the heartbeat as load). */
  openDatabases: () => number;
  /** Ends a database's clients and closes it (ownership lost). */
  closeDatabase: (id: string) => Promise<void>;
  /** The local directory of a database (removed before an open that must come from the archive). */
  dataDirOf: (id: string) => string;
}

export class ClusterNode {
  readonly lease: LeaseClock;
  private readonly owned = new Map<string, Owned>();
  private readonly claiming = new Map<string, Promise<void>>();
  /** Databases being handed over (`db move`): never served or claimed here meanwhile. */
  private readonly moving = new Set<string>();
  /** Databases an admin command is rewriting here: not released when they close meanwhile. */
  private readonly pinned = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;
  private draining = false;
  private stopped = false;
  /** Counters for metrics and GET /v1/cluster. */
  readonly stats = { claims: 0, failovers: 0, lost: 0, forwardedSessions: 0, releases: 0 };

  constructor(private readonly opts: ClusterNodeOptions) {
    this.lease = new LeaseClock(opts.leaseTtlMs);
  }

  get nodeId(): string {
    return this.opts.nodeId;
  }

  /** Registers the node (the first heartbeat must succeed) and starts renewing. */
  async start(): Promise<void> {
    await this.heartbeat();
    const every = Math.max(100, Math.floor(this.opts.leaseTtlMs / 3));
    const tick = () => {
      this.timer = setTimeout(() => {
        void this.heartbeat()
          .catch((err: unknown) => this.opts.logger.warn({ err }, 'cluster heartbeat failed'))
          .finally(() => {
            if (!this.stopped) tick();
          });
      }, every);
    };
    tick();
    this.watchdog = setInterval(() => this.checkLease(), Math.max(50, Math.floor(this.opts.leaseTtlMs / 10)));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.watchdog);
    await this.beating?.catch(() => undefined);
  }

  /** Marks the node as draining: it takes no new placements (others see it in the heartbeat). */
  setDraining(): void {
    this.draining = true;
  }

  private heartbeat(): Promise<void> {
    this.beating ??= (async () => {
      try {
        const sentAt = this.lease.stamp();
        const placements = await this.opts.coordination.heartbeat({
          address: this.opts.address,
          openDatabases: this.opts.openDatabases(),
          draining: this.draining,
        });
        this.lease.renewed(sentAt);
        for (const [id, entry] of this.owned) {
          if (entry.state !== OwnerState.owned || entry.claimedAt > sentAt) continue;
          if (placements.get(id) !== entry.generation) this.lose(id, 'the catalog names another owner');
        }
      } finally {
        this.beating = undefined;
      }
    })();
    return this.beating;
  }

  private checkLease(): void {
    if (this.lease.valid()) return;
    for (const [id, entry] of this.owned)
      if (entry.state === OwnerState.owned) this.lose(id, 'the lease could not be renewed in time');
  }

  /** Stops acknowledging for the database at once, then ends its clients and closes it. */
  private lose(id: string, why: string): void {
    const entry = this.owned.get(id);
    if (!entry || entry.state !== OwnerState.owned) return;
    entry.state = OwnerState.lost;
    this.stats.lost++;
    this.opts.logger.warn(
      { db: id, generation: entry.generation.toString(), why },
      'ownership lost; closing the database',
    );
    void this.opts
      .closeDatabase(id)
      .catch((err: unknown) => this.opts.logger.warn({ err, db: id }, 'closing a lost database failed'))
      .finally(() => {
        if (this.owned.get(id) === entry) this.owned.delete(id);
      });
  }

  /** Whether a reply for the database may go out now: owned, and the lease provably valid. */
  mayAcknowledge(id: string): boolean {
    return this.owned.get(id)?.state === OwnerState.owned && this.lease.valid();
  }

  /** The fence archive records of the database carry (generation -1: not owned here). */
  fence(id: string): Fence {
    const entry = this.owned.get(id);
    if (entry && !(entry.state === OwnerState.owned && this.lease.valid()))
      return { nodeId: this.opts.nodeId, generation: -2n };
    return { nodeId: this.opts.nodeId, generation: entry?.generation ?? -1n };
  }

  /**
   * Where a client of the database is served: here (claimed if needed) or on its live owner.
   * A free database goes to its rendezvous-preferred live node; `forwarded` sessions (sent here
   * by a peer) are never sent on, so a session crosses at most one hop.
   */
  async route(id: string, opts: { forwarded?: boolean; avoid?: string } = {}): Promise<Target> {
    if (this.moving.has(id)) throw errors.databaseUnavailable(id);
    if (this.mayAcknowledge(id)) return { kind: 'local' };
    const placement = await this.opts.coordination.placement(id);
    if (
      placement?.owner &&
      placement.owner !== this.opts.nodeId &&
      placement.ownerAlive &&
      placement.ownerAddress
    ) {
      if (opts.forwarded) throw errors.databaseUnavailable(id);
      return { kind: 'forward', nodeId: placement.owner, address: placement.ownerAddress };
    }
    if (!opts.forwarded && placement?.owner !== this.opts.nodeId) {
      const live = (await this.opts.coordination.nodes()).filter(
        (n) => n.alive && !n.draining && n.id !== opts.avoid,
      );
      const preferred = rendezvousOwner(
        id,
        live.map((n) => n.id),
      );
      const node = live.find((n) => n.id === preferred);
      if (node && node.id !== this.opts.nodeId)
        return { kind: 'forward', nodeId: node.id, address: node.address };
    }
    await this.ensureOwned(id);
    return { kind: 'local' };
  }

  /** Claims the database unless this node holds it; throws 57P03 when another live node does. */
  async ensureOwned(id: string): Promise<void> {
    if (this.moving.has(id)) throw errors.databaseUnavailable(id);
    if (this.mayAcknowledge(id)) return;
    // Single flight: clients arriving together share one claim (each would bump the generation).
    let claiming = this.claiming.get(id);
    if (!claiming) {
      claiming = this.claim(id).finally(() => this.claiming.delete(id));
      this.claiming.set(id, claiming);
    }
    return claiming;
  }

  private async claim(id: string): Promise<void> {
    if (!this.lease.valid()) throw errors.databaseUnavailable(id);
    // A lost entry still closing: wait for that close to finish before a new claim.
    if (this.owned.get(id)?.state === OwnerState.lost) throw errors.databaseUnavailable(id);
    const claim = await this.opts.coordination.claim(id);
    if (!claim) throw errors.databaseUnavailable(id);
    this.stats.claims++;
    if (claim.tookOver) this.stats.failovers++;
    this.owned.set(id, {
      generation: claim.generation,
      state: OwnerState.owned,
      claimedAt: this.lease.stamp(),
      refetch: !claim.localCopyCurrent,
    });
    this.opts.logger.info(
      {
        db: id,
        generation: claim.generation.toString(),
        tookOver: claim.tookOver,
        fromArchive: !claim.localCopyCurrent,
      },
      'database claimed',
    );
  }

  /**
   * Wraps the registry's materialize: the database is claimed first, and a local copy that may be
   * older than the archive (someone else owned it since), or that belongs to an earlier database
   * of the same id (deleted, then created again), is removed so the open fetches.
   */
  wrapMaterialize(materialize: Materialize): Materialize {
    return async (id, dir, incarnation) => {
      await this.ensureOwned(id);
      const entry = this.owned.get(id);
      const marked = await readIncarnation(dir);
      // Unmarked copies are trusted (as before) only for a database older than incarnations: any
      // copy made for a newer one was marked before it was made (admin/service.ts) or right after.
      const otherIncarnation =
        marked === undefined ? incarnation !== LEGACY_INCARNATION : marked !== incarnation;
      if (entry?.refetch || otherIncarnation) {
        if (otherIncarnation && marked !== undefined)
          this.opts.logger.info({ db: id }, 'local copy is of a deleted database of the same id: fetching');
        await rm(this.opts.dataDirOf(id), { recursive: true, force: true });
        if (entry) entry.refetch = false;
      }
      const outcome = await materialize(id, dir, incarnation);
      if (outcome !== 'absent' && marked !== incarnation) await writeIncarnation(dir, incarnation);
      return outcome;
    };
  }

  /** After a database closed (its last WAL shipped and snapshot taken): give it up. */
  release = async (id: string): Promise<void> => {
    const entry = this.owned.get(id);
    if (!entry || entry.state !== OwnerState.owned) return;
    // A hand-over transfers the placement itself, without leaving it free for anyone else; an
    // admin command (restore, upload) closes the database only to rewrite it here.
    if (this.moving.has(id) || this.pinned.has(id)) return;
    this.owned.delete(id);
    if (await this.opts.coordination.release(id, entry.generation)) this.stats.releases++;
  };

  /** Runs `fn` (it closes and rewrites the database) while this node keeps owning `id`. */
  async pinning<T>(id: string, fn: () => Promise<T>): Promise<T> {
    this.pinned.set(id, (this.pinned.get(id) ?? 0) + 1);
    try {
      return await fn();
    } finally {
      const left = (this.pinned.get(id) ?? 1) - 1;
      if (left > 0) this.pinned.set(id, left);
      else this.pinned.delete(id);
    }
  }

  /** Runs a hand-over of `id`: meanwhile this node neither serves nor claims it (clients retry). */
  async handingOver<T>(id: string, fn: () => Promise<T>): Promise<T> {
    this.moving.add(id);
    try {
      return await fn();
    } finally {
      this.moving.delete(id);
    }
  }

  /** Ends this node's ownership in memory for a hand-over; returns the generation it held. */
  giveUp(id: string): bigint | undefined {
    const entry = this.owned.get(id);
    this.owned.delete(id);
    return entry?.state === OwnerState.owned ? entry.generation : undefined;
  }

  /** A peer transferred the database here (`db move`): take it up if the catalog agrees. */
  async takeUp(id: string, generation: bigint): Promise<void> {
    const placement = await this.opts.coordination.placement(id);
    if (placement?.owner !== this.opts.nodeId || placement.generation !== generation)
      throw errors.databaseUnavailable(id);
    this.owned.set(id, {
      generation,
      state: OwnerState.owned,
      claimedAt: this.lease.stamp(),
      refetch: true,
    });
    this.stats.claims++;
    this.opts.logger.info({ db: id, generation: generation.toString() }, 'database handed over to this node');
  }

  /** Databases this node owns now, with their generations. */
  ownedDatabases(): { id: string; generation: bigint }[] {
    return [...this.owned]
      .filter(([, e]) => e.state === OwnerState.owned)
      .map(([id, e]) => ({ id, generation: e.generation }));
  }
}
