import type { Logger } from '../log.js';
import { ThrottledWarning } from '../log-throttle.js';

/**
 * The node's cap on client connections (MAX_CONNECTIONS; Postgres and WebSocket clients and
 * sessions forwarded by peers together), counted from accept to close, like Postgres's
 * max_connections. Past the cap a connection is still answered, as Postgres answers, with
 * `53300 sorry, too many clients already` after its startup packet (a CancelRequest is served):
 * the client learns why. Those refusals are capped too: past the cap plus a margin a new socket
 * is closed at once, so a flood of connections cannot make the node hold sockets without bound.
 */
export type Admission = 'serve' | 'refuse' | 'drop';

export class ConnectionSlots {
  private open = 0;
  /** Connections over the cap that may be held to be told why (a tenth of it, at least 16). */
  readonly margin: number;
  private readonly refusals: ThrottledWarning;

  constructor(
    readonly max: number,
    logger: Logger,
  ) {
    this.margin = Math.max(16, Math.ceil(max / 10));
    this.refusals = new ThrottledWarning(logger, 'connection refused: MAX_CONNECTIONS reached');
  }

  get count(): number {
    return this.open;
  }

  /** Admits a new connection; unless dropped, `release` must follow when it closes. */
  admit(address: string): Admission {
    if (this.open >= this.max + this.margin) {
      this.refusals.warn(address, { address, connections: this.open, dropped: true });
      return 'drop';
    }
    this.open++;
    if (this.open <= this.max) return 'serve';
    this.refusals.warn(address, { address, connections: this.open });
    return 'refuse';
  }

  release(): void {
    this.open--;
  }
}
