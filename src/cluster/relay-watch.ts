import { errors } from '../errors.js';
import type { Logger } from '../log.js';
import type { Placement } from './coordination.js';
import type { Relay } from './forward.js';

/**
 * Forwarded sessions whose owner stopped answering are ended, so their clients reconnect (and
 * reach whichever node serves the database now) instead of waiting forever: a paused or
 * partitioned owner sends nothing, and TCP alone notices neither. Every `everyMs` while any
 * session is relayed, one catalog statement checks that each relayed database still has the
 * owner the session went to, with a fresh heartbeat (if not, that owner may no longer answer
 * for it: its own lease stops it), and each such owner that sent nothing on any of its relays
 * within the period is pinged on its cluster port (a link cut between the two nodes only shows
 * there). A catalog that cannot be read ends nothing by itself.
 */

export interface WatchedRelay {
  db: string;
  /** NODE_ID and cluster address of the owner the session was relayed to. */
  owner: string;
  address: string;
  relay: Relay;
}

export interface RelayWatchOptions {
  everyMs: number;
  placementsOf: (ids: readonly string[]) => Promise<Map<string, Placement>>;
  /** Whether the peer at `address` completes a ping hello (a refusal counts as an answer). */
  ping: (address: string) => Promise<boolean>;
  logger: Logger;
  /** Consecutive failed pings after which an owner is taken as gone. */
  maxMissedPings?: number;
}

export class RelayWatch {
  private readonly relays = new Set<WatchedRelay>();
  private readonly missed = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private checking = false;
  private stopped = false;

  constructor(private readonly opts: RelayWatchOptions) {}

  /** Watches the relay until it is done. */
  watch(watched: WatchedRelay): void {
    this.relays.add(watched);
    void watched.relay.done.finally(() => this.relays.delete(watched));
    if (!this.timer && !this.stopped) {
      this.timer = setInterval(() => {
        this.check().catch((err: unknown) =>
          this.opts.logger.warn({ err }, 'relayed sessions: check failed'),
        );
      }, this.opts.everyMs);
      this.timer.unref();
    }
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One round (exported for tests through the class); overlapping rounds are skipped. */
  async check(): Promise<void> {
    if (this.checking) return;
    if (this.relays.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    this.checking = true;
    try {
      const relays = [...this.relays];
      const owners = new Map(relays.map((r) => [r.owner, r.address]));
      // An owner that sent bytes on any of its relays within the period answered already.
      const heardSince = performance.now() - this.opts.everyMs;
      for (const r of relays)
        if (r.relay.heardAt >= heardSince && owners.delete(r.owner)) this.missed.set(r.owner, 0);
      const [placements] = await Promise.all([
        this.opts.placementsOf([...new Set(relays.map((r) => r.db))]).catch((err: unknown) => {
          this.opts.logger.debug({ err }, 'relayed sessions: catalog unreadable, nothing ended');
          return undefined;
        }),
        ...[...owners].map(async ([owner, address]) => {
          const answered = await this.opts.ping(address).catch(() => false);
          this.missed.set(owner, answered ? 0 : (this.missed.get(owner) ?? 0) + 1);
        }),
      ]);
      // One line per owner and reason, however many sessions it had.
      const ended = new Map<string, { owner: string; why: string; dbs: Set<string>; sessions: number }>();
      for (const r of relays) {
        const why = this.verdict(r, placements);
        if (!why || !this.relays.delete(r)) continue;
        const key = `${r.owner}\0${why}`;
        const entry = ended.get(key) ?? { owner: r.owner, why, dbs: new Set<string>(), sessions: 0 };
        ended.set(key, entry);
        entry.sessions++;
        if (entry.dbs.size < 10) entry.dbs.add(r.db);
        r.relay.end(errors.ownerUnreachable(r.db));
      }
      for (const { owner, why, dbs, sessions } of ended.values())
        this.opts.logger.warn({ owner, why, sessions, dbs: [...dbs] }, 'ending forwarded sessions');
      const watched = new Set(relays.map((r) => r.owner));
      for (const owner of this.missed.keys()) if (!watched.has(owner)) this.missed.delete(owner);
    } finally {
      this.checking = false;
    }
  }

  private verdict(r: WatchedRelay, placements: Map<string, Placement> | undefined): string | undefined {
    if (placements) {
      const p = placements.get(r.db);
      if (!p || p.owner !== r.owner) return 'the database has another owner (or none) now';
      if (!p.ownerAlive) return "the owner's lease ran out";
    }
    if ((this.missed.get(r.owner) ?? 0) >= (this.opts.maxMissedPings ?? 2))
      return 'the owner does not answer pings';
    return undefined;
  }
}
