import type { TransactionStatus } from '../wire/protocol.js';

/**
 * The request a client has running on the engine, as an interrupt (cancel, statement timeout)
 * needs to see it. An interrupt restarts the engine, which stops the request wherever it is; if
 * that were just after its commit record was written, the transaction would be committed while
 * its client hears 57014 and may well retry it. Postgres holds interrupts while it commits.
 *
 * So the interrupt first closes the engine's WAL gate (Engine.holdWal): a request that has begun
 * no WAL write by then can write none before it is stopped, and stopping it loses nothing. One
 * that has, and may be committing (it started outside a transaction block, or its text may end
 * one), is let go and given a moment to finish; its reply then stands.
 */

/** How long a request that may be committing gets to finish after an interrupt. */
export const COMMIT_GRACE_MS = 1000;
const POLL_MS = 2;

/** Text that may end a transaction block (COMMIT, END, PREPARE TRANSACTION): loose on purpose. */
const ENDS_BLOCK = /commit|end|prepare/i;

interface WalGate {
  holdWal(): bigint;
  releaseWal(): void;
  walWritesBegun(): bigint;
}

export class RunningRequest {
  private seq = 0;
  private inFlight = false;
  private engine: WalGate | undefined;
  private walBegun = 0n;
  private status: TransactionStatus = 'I';
  private messages: Uint8Array = new Uint8Array();

  start(engine: WalGate, status: TransactionStatus, messages: Uint8Array): void {
    this.engine = engine;
    this.walBegun = engine.walWritesBegun();
    this.status = status;
    this.messages = messages;
    this.inFlight = true;
    this.seq++;
  }

  end(): void {
    this.inFlight = false;
    this.messages = new Uint8Array();
  }

  /**
   * Whether the running request may be committing, deciding with the WAL gate closed: true means
   * it was opened again for the request to go on; false leaves it closed for the engine's stop.
   */
  holdUnlessCommitting(): boolean {
    const engine = this.engine;
    if (!this.inFlight || !engine) return false;
    if (engine.holdWal() === this.walBegun) return false;
    const mayEndTransaction =
      this.status === 'I' || ENDS_BLOCK.test(Buffer.from(this.messages).toString('latin1'));
    if (!mayEndTransaction) return false;
    engine.releaseWal();
    return true;
  }

  /** Closes the WAL gate again (the grace ran out): the engine is stopped next. */
  hold(): void {
    this.engine?.holdWal();
  }

  /** Waits up to `ms` for the request running now to end; true if it did. */
  async endsWithin(ms: number): Promise<boolean> {
    const seq = this.seq;
    const deadline = performance.now() + ms;
    while (this.inFlight && this.seq === seq) {
      if (performance.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    return true;
  }
}
