import { errors } from '../errors.js';

/**
 * Exclusive access to a database's single Postgres session, granted in FIFO order. A waiter gives
 * up after `waitTimeoutMs` (57014) or when its signal aborts (client gone or cancelled).
 */
export class DatabaseHold {
  private holder: symbol | undefined;
  private readonly waiters: { owner: symbol; grant: () => void }[] = [];
  /** The holder sits inside an open, healthy transaction waiting for its client (not mid-unit). */
  private parked = false;
  /** The parked holder's transaction has taken no snapshot yet (FreshTransaction). */
  private parkedFresh = false;
  /** A borrow ran while the holder was parked fresh: it may have fixed the holder's snapshot. */
  private spoiled = false;
  /** Another client briefly uses the session while the holder is parked. */
  private borrowing: Promise<void> | undefined;
  private readonly parkListeners = new Set<() => void>();

  constructor(private readonly waitTimeoutMs: number) {}

  get queued(): number {
    return this.waiters.length;
  }

  isHeldBy(owner: symbol): boolean {
    return this.holder === owner;
  }

  acquire(owner: symbol, signal?: AbortSignal): Promise<void> {
    if (this.holder === owner) return Promise.resolve();
    if (this.holder === undefined && this.waiters.length === 0) {
      this.holder = owner;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        owner,
        grant: () => {
          cleanup();
          this.holder = owner;
          resolve();
        },
      };
      const leave = (err: unknown) => {
        cleanup();
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(err);
      };
      const timer = setTimeout(() => leave(errors.queueTimeout()), this.waitTimeoutMs);
      const onAbort = () => leave(signal?.reason ?? new Error('aborted'));
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  release(owner: symbol): void {
    if (this.holder !== owner) return;
    this.holder = undefined;
    this.parked = false;
    this.parkedFresh = false;
    this.spoiled = false;
    this.waiters.shift()?.grant();
  }

  /** Whether borrow() would run now. */
  get borrowable(): boolean {
    return this.parked && !this.borrowing;
  }

  /**
   * The holder waits for its client inside a transaction; side-effect-free units may borrow.
   * `fresh`: its transaction has taken no snapshot yet (a borrow may fix one: see unpark).
   */
  park(owner: symbol, fresh = false): void {
    if (this.holder !== owner) return;
    this.parked = true;
    this.parkedFresh = fresh;
    for (const listener of [...this.parkListeners]) listener();
  }

  /** Calls `fn` whenever the holder parks; returns the unsubscribe function. */
  onPark(fn: () => void): () => void {
    this.parkListeners.add(fn);
    return () => this.parkListeners.delete(fn);
  }

  /**
   * The holder resumes: waits for a borrower to finish first. True when a borrow ran while it was
   * parked fresh: its transaction should start over before it goes on.
   */
  async unpark(owner: symbol): Promise<boolean> {
    if (this.holder !== owner) return false;
    this.parked = false;
    await this.borrowing;
    const spoiled = this.spoiled;
    this.spoiled = false;
    this.parkedFresh = false;
    return spoiled;
  }

  /**
   * Runs `fn` on the session while its holder is parked, without taking the hold. Returns
   * undefined (and runs nothing) when the session is not borrowable right now.
   */
  borrow<T>(fn: () => Promise<T>): Promise<T> | undefined {
    if (!this.parked || this.borrowing) return undefined;
    if (this.parkedFresh) this.spoiled = true;
    const run = fn();
    this.borrowing = run.then(
      () => undefined,
      () => undefined,
    );
    void this.borrowing.then(() => {
      this.borrowing = undefined;
      // The next queued prepare may borrow now.
      if (this.parked) for (const listener of [...this.parkListeners]) listener();
    });
    return run;
  }
}
