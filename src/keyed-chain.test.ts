import { describe, expect, it } from 'vitest';
import { KeyedChain } from './keyed-chain.js';

/** A promise with its resolve/reject, to finish runs in a chosen order. */
function deferred<T = void>() {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets every queued promise callback run. */
const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('KeyedChain', () => {
  it('runs work for one key one at a time, in call order', async () => {
    const chain = new KeyedChain();
    const log: string[] = [];
    const gates = [deferred(), deferred(), deferred()];
    const runs = gates.map((gate, i) =>
      chain.run('a', async () => {
        log.push(`start ${i}`);
        await gate.promise;
        log.push(`end ${i}`);
        return i;
      }),
    );
    await flush();
    expect(log).toEqual(['start 0']);
    // Finishing a later gate first changes nothing: run 1 has not started.
    gates[2]?.resolve();
    gates[1]?.resolve();
    await flush();
    expect(log).toEqual(['start 0']);
    gates[0]?.resolve();
    expect(await Promise.all(runs)).toEqual([0, 1, 2]);
    expect(log).toEqual(['start 0', 'end 0', 'start 1', 'end 1', 'start 2', 'end 2']);
  });

  it('lets different keys run at the same time', async () => {
    const chain = new KeyedChain();
    const gate = deferred();
    const started: string[] = [];
    const a = chain.run('a', async () => {
      started.push('a');
      await gate.promise;
    });
    const b = chain.run('b', async () => {
      started.push('b');
    });
    await b;
    expect(started).toEqual(['a', 'b']);
    gate.resolve();
    await a;
  });

  it('goes on after a run fails, and hands each caller its own outcome', async () => {
    const chain = new KeyedChain<number>();
    const failing = chain.run(1, async () => {
      throw new Error('boom');
    });
    const throwingSync = chain.run(1, () => {
      throw new Error('sync boom');
    });
    const next = chain.run(1, async () => 'ok');
    await expect(failing).rejects.toThrow('boom');
    await expect(throwingSync).rejects.toThrow('sync boom');
    await expect(next).resolves.toBe('ok');
  });

  it('reports pending work per key and forgets a key once its last run settled', async () => {
    const chain = new KeyedChain();
    expect(chain.pending('a')).toBeUndefined();
    expect(chain.has('a')).toBe(false);
    const first = deferred();
    const second = deferred();
    const one = chain.run('a', () => first.promise);
    const two = chain.run('a', () => second.promise);
    expect(chain.has('a')).toBe(true);
    expect(chain.size).toBe(1);
    // pending() waits for every run so far, and never rejects even when one fails.
    let idle = false;
    const waiting = chain.pending('a')?.then(() => {
      idle = true;
    });
    first.reject(new Error('first failed'));
    await expect(one).rejects.toThrow('first failed');
    await flush();
    expect(idle).toBe(false);
    expect(chain.has('a')).toBe(true);
    second.resolve();
    await two;
    await waiting;
    expect(idle).toBe(true);
    await flush();
    expect(chain.has('a')).toBe(false);
    expect(chain.size).toBe(0);
  });

  it('keeps a key until its latest run settled', async () => {
    const chain = new KeyedChain();
    const gate = deferred();
    await chain.run('a', async () => undefined);
    const late = chain.run('a', () => gate.promise);
    await flush();
    expect(chain.has('a')).toBe(true);
    gate.resolve();
    await late;
    await flush();
    expect(chain.has('a')).toBe(false);
  });
});
