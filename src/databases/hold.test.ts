import { afterEach, describe, expect, it, vi } from 'vitest';
import { GatewayError } from '../errors.js';
import { DatabaseHold } from './hold.js';

/** Lets every queued promise callback run. */
const flush = async () => {
  for (let i = 0; i < 5; i++) await Promise.resolve();
};

/** Tracks whether a promise settled, and how. */
function watch(promise: Promise<unknown>) {
  const state: { settled: 'no' | 'resolved' | 'rejected'; error?: unknown } = { settled: 'no' };
  promise.then(
    () => {
      state.settled = 'resolved';
    },
    (err: unknown) => {
      state.settled = 'rejected';
      state.error = err;
    },
  );
  return state;
}

function deferred() {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const [a, b, c] = [Symbol('a'), Symbol('b'), Symbol('c')];

afterEach(() => {
  vi.useRealTimers();
});

describe('DatabaseHold: acquire and release', () => {
  it('grants a free hold at once, and again to its holder', async () => {
    const hold = new DatabaseHold(1000);
    await hold.acquire(a);
    expect(hold.isHeldBy(a)).toBe(true);
    await hold.acquire(a);
    expect(hold.queued).toBe(0);
  });

  it('grants waiters in FIFO order, one release at a time', async () => {
    const hold = new DatabaseHold(60_000);
    await hold.acquire(a);
    const order: string[] = [];
    const gotB = hold.acquire(b).then(() => order.push('b'));
    const gotC = hold.acquire(c).then(() => order.push('c'));
    expect(hold.queued).toBe(2);
    await flush();
    expect(order).toEqual([]);

    hold.release(a);
    await gotB;
    expect(hold.isHeldBy(b)).toBe(true);
    expect(hold.queued).toBe(1);
    await flush();
    expect(order).toEqual(['b']);

    hold.release(b);
    await gotC;
    expect(order).toEqual(['b', 'c']);
    expect(hold.isHeldBy(c)).toBe(true);
    expect(hold.queued).toBe(0);
  });

  it('ignores a release by someone who does not hold it', async () => {
    const hold = new DatabaseHold(60_000);
    await hold.acquire(a);
    const waiting = watch(hold.acquire(b));
    hold.release(b);
    hold.release(c);
    await flush();
    expect(hold.isHeldBy(a)).toBe(true);
    expect(waiting.settled).toBe('no');
    hold.release(a);
    await flush();
    expect(waiting.settled).toBe('resolved');
  });

  it('fails a waiter with 57014 after the wait timeout and drops it from the queue', async () => {
    vi.useFakeTimers();
    const hold = new DatabaseHold(1000);
    await hold.acquire(a);
    const waiting = watch(hold.acquire(b));
    const next = watch(hold.acquire(c));
    await vi.advanceTimersByTimeAsync(999);
    expect(waiting.settled).toBe('no');
    await vi.advanceTimersByTimeAsync(1);
    expect(waiting.settled).toBe('rejected');
    expect(waiting.error).toBeInstanceOf(GatewayError);
    expect((waiting.error as GatewayError).code).toBe('57014');
    // c timed out at the same moment; nobody is left to grant.
    expect(next.settled).toBe('rejected');
    expect(hold.queued).toBe(0);
    hold.release(a);
    expect(hold.isHeldBy(b)).toBe(false);
    await hold.acquire(c);
    expect(hold.isHeldBy(c)).toBe(true);
  });

  it('passes over a timed-out waiter to the next one', async () => {
    vi.useFakeTimers();
    const hold = new DatabaseHold(1000);
    await hold.acquire(a);
    const early = watch(hold.acquire(b));
    await vi.advanceTimersByTimeAsync(600);
    const late = watch(hold.acquire(c));
    await vi.advanceTimersByTimeAsync(400);
    expect(early.settled).toBe('rejected');
    hold.release(a);
    await flush();
    expect(late.settled).toBe('resolved');
    expect(hold.isHeldBy(c)).toBe(true);
  });

  it('clears the timer of a granted waiter', async () => {
    vi.useFakeTimers();
    const hold = new DatabaseHold(1000);
    await hold.acquire(a);
    const waiting = watch(hold.acquire(b));
    hold.release(a);
    await vi.advanceTimersByTimeAsync(5000);
    expect(waiting.settled).toBe('resolved');
    expect(hold.isHeldBy(b)).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('gives up when the signal aborts, with its reason', async () => {
    const hold = new DatabaseHold(60_000);
    await hold.acquire(a);
    const controller = new AbortController();
    const waiting = watch(hold.acquire(b, controller.signal));
    const next = hold.acquire(c);
    controller.abort(new Error('client gone'));
    await flush();
    expect(waiting.settled).toBe('rejected');
    expect((waiting.error as Error).message).toBe('client gone');
    expect(hold.queued).toBe(1);
    hold.release(a);
    await next;
    expect(hold.isHeldBy(c)).toBe(true);
  });

  it('refuses at once with an already aborted signal, without queueing', async () => {
    const hold = new DatabaseHold(60_000);
    await hold.acquire(a);
    await expect(hold.acquire(b, AbortSignal.abort(new Error('cancelled')))).rejects.toThrow('cancelled');
    expect(hold.queued).toBe(0);
  });

  it('grants a free hold even with an aborted signal (nothing to wait for)', async () => {
    const hold = new DatabaseHold(60_000);
    await hold.acquire(a, AbortSignal.abort());
    expect(hold.isHeldBy(a)).toBe(true);
  });
});

describe('DatabaseHold: park, unpark and borrow', () => {
  it('is borrowable only while its holder is parked', async () => {
    const hold = new DatabaseHold(60_000);
    expect(hold.borrowable).toBe(false);
    await hold.acquire(a);
    hold.park(b); // not the holder: ignored
    expect(hold.borrowable).toBe(false);
    expect(hold.borrow(async () => 1)).toBeUndefined();
    hold.park(a);
    expect(hold.borrowable).toBe(true);
    await hold.unpark(a);
    expect(hold.borrowable).toBe(false);
  });

  it('tells park listeners, until they unsubscribe', async () => {
    const hold = new DatabaseHold(60_000);
    await hold.acquire(a);
    let calls = 0;
    const off = hold.onPark(() => calls++);
    hold.park(a);
    expect(calls).toBe(1);
    off();
    hold.park(a);
    expect(calls).toBe(1);
  });

  it('runs one borrower at a time and returns its result', async () => {
    const hold = new DatabaseHold(60_000);
    await hold.acquire(a);
    hold.park(a);
    const gate = deferred();
    const first = hold.borrow(async () => {
      await gate.promise;
      return 'first';
    });
    expect(first).toBeDefined();
    expect(hold.borrowable).toBe(false);
    expect(hold.borrow(async () => 'second')).toBeUndefined();
    gate.resolve();
    expect(await first).toBe('first');
    await flush();
    expect(hold.borrowable).toBe(true);
  });

  it('tells park listeners again when a borrower finishes and the holder is still parked', async () => {
    const hold = new DatabaseHold(60_000);
    await hold.acquire(a);
    hold.park(a);
    let calls = 0;
    hold.onPark(() => calls++);
    await hold.borrow(async () => undefined);
    await flush();
    expect(calls).toBe(1);
    // Not parked any more when the borrower finishes: nobody is told.
    const gate = deferred();
    const running = hold.borrow(() => gate.promise);
    const resumed = hold.unpark(a);
    gate.resolve();
    await running;
    await resumed;
    await flush();
    expect(calls).toBe(1);
  });

  it('makes the holder wait in unpark until the borrower is done, even when it fails', async () => {
    const hold = new DatabaseHold(60_000);
    await hold.acquire(a);
    hold.park(a);
    const gate = deferred();
    const borrowed = hold.borrow(() => gate.promise);
    const resumed = watch(hold.unpark(a));
    await flush();
    expect(resumed.settled).toBe('no');
    gate.reject(new Error('borrower failed'));
    await expect(borrowed).rejects.toThrow('borrower failed');
    await flush();
    expect(resumed.settled).toBe('resolved');
  });

  it('unpark by someone else, and release, leave no parked state behind', async () => {
    const hold = new DatabaseHold(60_000);
    await hold.acquire(a);
    hold.park(a);
    await hold.unpark(b);
    expect(hold.borrowable).toBe(true);
    const next = hold.acquire(b);
    hold.release(a);
    await next;
    expect(hold.borrowable).toBe(false);
  });

  it('tells a holder parked fresh that a borrow ran meanwhile, once', async () => {
    const hold = new DatabaseHold(60_000);
    await hold.acquire(a);
    hold.park(a, true);
    expect(await hold.unpark(a)).toBe(false); // nobody borrowed
    hold.park(a, true);
    await hold.borrow(async () => undefined);
    expect(await hold.unpark(a)).toBe(true);
    hold.park(a, false);
    await hold.borrow(async () => undefined);
    expect(await hold.unpark(a)).toBe(false); // its snapshot was taken already
    hold.park(a, true);
    await hold.borrow(async () => undefined);
    hold.release(a);
    await hold.acquire(a);
    expect(await hold.unpark(a)).toBe(false); // a new turn starts clean
  });
});
