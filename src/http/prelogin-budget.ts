/**
 * Bytes that WebSocket clients may make this process hold before they have logged in. A
 * WebSocket frame is buffered whole before its Postgres messages are read, and the Neon driver
 * sends its first query in the same frame as its password, so one login may legitimately need
 * a large frame. Each connection gets a small allowance of its own; past it, bytes come out of
 * one pool shared by all connections still logging in. A client that would overdraw the pool
 * is refused, so many unauthenticated clients together hold at most the pool plus their
 * allowances, instead of one frame limit each.
 */
export class PreLoginBudget {
  private used = 0;

  constructor(
    /** Bytes of the shared pool. */
    readonly pool: number,
    /** Bytes each connection may hold before it draws on the pool. */
    readonly allowance: number,
  ) {}

  /** Bytes drawn from the pool now (for tests and metrics). */
  get drawn(): number {
    return this.used;
  }

  /** One connection's account; `release` it at login or close (idempotent). */
  open(): PreLoginAccount {
    let seen = 0;
    let charged = 0;
    let closed = false;
    return {
      receive: (bytes: number) => {
        if (closed) return true;
        const want = Math.max(0, seen + bytes - this.allowance);
        if (this.used + (want - charged) > this.pool) return false;
        seen += bytes;
        this.used += want - charged;
        charged = want;
        return true;
      },
      release: () => {
        if (closed) return;
        closed = true;
        this.used -= charged;
        charged = 0;
      },
    };
  }
}

export interface PreLoginAccount {
  /** Counts bytes received; false when they do not fit (the caller refuses the client). */
  receive(bytes: number): boolean;
  release(): void;
}
