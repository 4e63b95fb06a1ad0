/**
 * A node's own view of its lease, on the monotonic clock (never the wall clock, which jumps).
 * Peers judge the lease by the catalog's clock: dead when the catalog's `now()` passes the last
 * heartbeat's commit time + LEASE_TTL. The heartbeat committed after we sent it, so counting
 * from the moment it was *sent* (minus a margin for clock rate differences) ends our lease no
 * later than the peers' view does: we stop acknowledging before anyone may claim.
 */
export class LeaseClock {
  private validUntil = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Margin for clock rates: 5% of the TTL, at most 500 ms. */
  private get marginMs(): number {
    return Math.min(500, this.ttlMs * 0.05);
  }

  /** A monotonic timestamp to take just before sending a heartbeat. */
  stamp(): number {
    return this.now();
  }

  /** The heartbeat sent at `sentAt` committed. An older one arriving late never shortens the lease. */
  renewed(sentAt: number): void {
    this.validUntil = Math.max(this.validUntil, sentAt + this.ttlMs - this.marginMs);
  }

  /** Forgets the lease (the node must not act as an owner until the next heartbeat). */
  revoke(): void {
    this.validUntil = Number.NEGATIVE_INFINITY;
  }

  valid(): boolean {
    return this.now() < this.validUntil;
  }

  /** Milliseconds of lease left (negative once expired). */
  remainingMs(): number {
    return this.validUntil - this.now();
  }
}
