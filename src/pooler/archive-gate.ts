import { errors, GatewayError } from '../errors.js';
import type { ClientPort } from './session-options.js';

const COMMIT_TAG = Buffer.from('COMMIT\0');
const READY_IDLE = Buffer.from([0x5a, 0, 0, 0, 5, 0x49]);

/**
 * Whether a part of a reply may tell the client that a transaction committed: it holds a COMMIT
 * command tag, or (the reply's last part) a ReadyForQuery outside a transaction, after an
 * autocommit statement. A write inside a transaction acknowledges nothing yet; its COMMIT will.
 * (A byte match can be a false positive inside row data: that part then merely waits too.)
 */
export function mayAcknowledgeCommit(part: Uint8Array, last: boolean): boolean {
  const bytes = Buffer.from(part.buffer, part.byteOffset, part.byteLength);
  if (bytes.indexOf(COMMIT_TAG) >= 0) return true;
  if (last) return bytes.length >= 6 && bytes[bytes.length - 6] === 0x5a && bytes[bytes.length - 1] === 0x49;
  return bytes.indexOf(READY_IDLE) >= 0;
}

interface Held {
  parts: Uint8Array[];
  /** Set once the unit's WAL barrier is known; the part is released when it resolves. */
  settled: 'waiting' | 'stored';
}

/**
 * DURABILITY=sync group commit, one client's side. A unit that wrote WAL has its reply held back
 * here until the archive stored that WAL, while the unit itself has already given the database's
 * shared session back: other clients' commits run meanwhile, and their waits join the same
 * shipment (WalShipping joins a shipment under way). Everything sent to the client after the
 * first held part queues behind it, so the order of replies is kept. When the archive does not
 * store the WAL in time the held parts never leave: the client gets walNotArchived (FATAL, the
 * connection ends) and is never told the commit succeeded; likewise a write refused because the
 * node's WAL backlog is full. In `async` mode the barrier resolves at once unless it refuses.
 */
export class ArchiveGate {
  private readonly held: Held[] = [];
  private failed = false;

  constructor(private readonly port: ClientPort) {}

  /** Parts are held back while any is (or after the gate failed, dropped). */
  get holding(): boolean {
    return this.failed || this.held.length > 0;
  }

  /** Holds back everything written from now on, until `release` is given the unit's barrier. */
  hold(): void {
    this.held.push({ parts: [], settled: 'waiting' });
  }

  /** The barrier of the unit whose parts the last `hold` started holding. */
  release(barrier: Promise<void>): void {
    const entry = this.held.at(-1);
    if (!entry) return;
    barrier.then(
      () => {
        entry.settled = 'stored';
        this.flush();
      },
      (err: unknown) => this.fail(err),
    );
  }

  write(data: Uint8Array): Promise<void> | undefined {
    if (this.failed) return undefined;
    const last = this.held.at(-1);
    if (!last) return this.port.write(data);
    last.parts.push(data);
    return undefined;
  }

  /** Sends the leading parts whose WAL is stored (barriers settle in shipping order, mostly). */
  private flush(): void {
    while (this.held[0]?.settled === 'stored') {
      const entry = this.held.shift();
      for (const part of entry?.parts ?? []) void this.port.write(part);
    }
  }

  private fail(err: unknown): void {
    if (this.failed) return;
    this.failed = true;
    this.held.length = 0;
    this.port.end(err instanceof GatewayError ? err : errors.walNotArchived());
  }
}
