/**
 * The request a client has running on the engine, as an interrupt (cancel, statement timeout)
 * needs to see it. An interrupt restarts the engine, which stops the request wherever it is; if
 * that were just after its commit record was written, the transaction would be committed while
 * its client hears 57014 and may well retry it. Postgres holds interrupts while it commits.
 *
 * So the interrupt first closes the engine's WAL gate (Engine.holdWal): a request that has begun
 * no WAL write by then can write none before it is stopped, and stopping it loses nothing. One
 * that has may be committing (a COMMIT, an autocommit statement, a named prepared COMMIT whose
 * text the gateway never sees), so it is let go and given a moment to finish; its reply then
 * stands. A long statement that writes WAL is stopped that much later.
 */

/** How long a request that began writing WAL gets to finish after an interrupt. */
export const COMMIT_GRACE_MS = 1000;
const POLL_MS = 2;

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

  start(engine: WalGate): void {
    this.engine = engine;
    this.walBegun = engine.walWritesBegun();
    this.inFlight = true;
    this.seq++;
  }

  end(): void {
    this.inFlight = false;
  }

  /**
   * Decides with the WAL gate closed. False: the running request began no WAL write (or none
   * runs), and the gate stays closed for the engine's stop. True: it did, and the gate is open
   * again for it to go on.
   */
  holdUnlessWriting(): boolean {
    const engine = this.engine;
    if (!this.inFlight || !engine) return false;
    if (engine.holdWal() === this.walBegun) return false;
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
