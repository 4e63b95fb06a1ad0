import { errors } from '../errors.js';

/**
 * Exclusive access to a database's single Postgres session, granted in FIFO order. A waiter gives
 * up after `waitTimeoutMs` (57014) or when its signal aborts (client gone or cancelled).
 */
export class DatabaseHold {
  private holder: symbol | undefined;
  private readonly waiters: { owner: symbol; grant: () => void }[] = [];

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
    this.waiters.shift()?.grant();
  }
}
