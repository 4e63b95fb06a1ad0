import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { Logger } from '../log.js';
import { AuthThrottle, type AuthThrottleOptions, addressKey, waitUnlessClosed } from './auth-throttle.js';

/** A throttle on a hand-driven clock. */
function setup(opts: AuthThrottleOptions = {}) {
  let now = 1_000_000;
  const throttle = new AuthThrottle({
    threshold: 3,
    baseDelayMs: 100,
    maxDelayMs: 1000,
    windowMs: 60_000,
    queueMs: 5000,
    ...opts,
    now: () => now,
  });
  return {
    throttle,
    advance: (ms: number) => {
      now += ms;
    },
    fail: (address: string, database: string, times = 1) => {
      for (let i = 0; i < times; i++) throttle.record(address, database, 'failed');
    },
  };
}

/** A logger that keeps what it is given. */
function recorder() {
  const lines: { level: string; fields: Record<string, unknown>; msg: string }[] = [];
  const at = (level: string) => (fields: Record<string, unknown>, msg: string) => {
    lines.push({ level, fields, msg });
  };
  return { lines, log: { info: at('info'), warn: at('warn') } as unknown as Logger };
}

describe('AuthThrottle', () => {
  it('lets the first failures through, then delays exponentially up to the cap', () => {
    const { throttle, fail, advance } = setup();
    const delays: number[] = [];
    for (let i = 0; i < 9; i++) {
      delays.push(throttle.admit('10.0.0.1', 'db').delayMs);
      fail('10.0.0.1', 'db');
      advance(5000); // past every queued answer: only the count matters
    }
    expect(delays).toEqual([0, 0, 0, 100, 200, 400, 800, 1000, 1000]);
    expect(throttle.counts).toEqual({ failures: 9, throttled: 6 });
  });

  it('counts per address and per database, either one enough to delay', () => {
    const { throttle, fail } = setup();
    fail('10.0.0.1', 'a', 3);
    expect(throttle.admit('10.0.0.1', 'b').delayMs).toBe(100); // same address, other database
    expect(throttle.admit('10.0.0.2', 'a').delayMs).toBe(100); // other address, same database
    expect(throttle.admit('10.0.0.2', 'b')).toEqual({ delayMs: 0, verify: true });
  });

  it('treats a database id the same whether or not it exists: it only sees the id', () => {
    const { throttle, fail } = setup();
    fail('10.0.0.1', 'real', 4);
    fail('10.0.0.2', 'ghost', 4);
    expect(throttle.admit('10.0.0.3', 'real')).toEqual(throttle.admit('10.0.0.4', 'ghost'));
  });

  it('resets an address on success, but not the database', () => {
    const { throttle, fail, advance } = setup();
    fail('10.0.0.1', 'db', 4);
    throttle.record('10.0.0.1', 'db', 'ok');
    advance(5000);
    expect(throttle.admit('10.0.0.1', 'other').delayMs).toBe(0);
    expect(throttle.admit('10.0.0.9', 'db').delayMs).toBe(200);
  });

  it('forgets failures once the window passes without another', () => {
    const { throttle, fail, advance } = setup();
    fail('10.0.0.1', 'db', 3);
    advance(30_000);
    fail('10.0.0.1', 'db'); // a failure inside the window extends it
    advance(59_999);
    expect(throttle.admit('10.0.0.1', 'db').delayMs).toBe(200);
    advance(60_000);
    expect(throttle.admit('10.0.0.1', 'db')).toEqual({ delayMs: 0, verify: true });
    expect(throttle.size).toEqual({ addresses: 0, databases: 0 });
  });

  it('queues concurrent attempts on a key, and refuses unchecked beyond the queue', () => {
    const { throttle, fail } = setup({ maxDelayMs: 1000, queueMs: 3000 });
    fail('10.0.0.1', 'db', 7); // delay capped at 1000
    const admitted = Array.from({ length: 5 }, () => throttle.admit('10.0.0.1', 'db'));
    expect(admitted).toEqual([
      { delayMs: 1000, verify: true },
      { delayMs: 2000, verify: true },
      { delayMs: 3000, verify: true },
      // The queue is full: still delayed, but the password is not looked at.
      { delayMs: 1000, verify: false },
      { delayMs: 1000, verify: false },
    ]);
    throttle.record('10.0.0.1', 'db', 'unchecked');
    expect(throttle.counts).toEqual({ failures: 8, throttled: 5 });
  });

  it('never lets the queue bound fall below one delay', () => {
    const { throttle, fail } = setup({ maxDelayMs: 1000, queueMs: 10 });
    fail('10.0.0.1', 'db', 7);
    expect(throttle.admit('10.0.0.1', 'db')).toEqual({ delayMs: 1000, verify: true });
  });

  it('is off with a zero maximum or base delay, and stays finite after many failures', () => {
    for (const opts of [{ maxDelayMs: 0 }, { baseDelayMs: 0 }]) {
      const { throttle, fail } = setup(opts);
      fail('10.0.0.1', 'db', 2000);
      expect(throttle.admit('10.0.0.1', 'db')).toEqual({ delayMs: 0, verify: true });
      expect(throttle.counts.throttled).toBe(0);
    }
    expect(setup().throttle.delayAfter(1_000_000)).toBe(1000);
  });

  it('tracks at most maxEntries addresses and databases, dropping the least recent', () => {
    const { throttle, fail } = setup({ maxEntries: 4 });
    for (let i = 0; i < 1000; i++) fail(`10.0.${i >> 8}.${i & 255}`, `db-${i}`);
    expect(throttle.size).toEqual({ addresses: 4, databases: 4 });
    fail('10.0.3.231', 'db-999', 2); // among the most recent: kept, now at the threshold
    expect(throttle.admit('10.0.3.231', 'x').delayMs).toBe(100);
    expect(throttle.admit('10.0.0.0', 'db-0').delayMs).toBe(0); // evicted long ago
  });

  it('sweeps stale entries as others are touched', () => {
    const { throttle, fail, advance } = setup();
    for (let i = 0; i < 5; i++) fail(`10.0.0.${i}`, `db-${i}`);
    advance(60_000);
    fail('10.0.1.1', 'fresh');
    expect(throttle.size).toEqual({ addresses: 1, databases: 1 });
  });

  it('rate-limits the throttled log line and reports what it skipped', () => {
    const { throttle, advance } = setup({ logIntervalMs: 1000 });
    expect(throttle.logSlot()).toBe(0);
    expect(throttle.logSlot()).toBeUndefined();
    expect(throttle.logSlot()).toBeUndefined();
    advance(1000);
    expect(throttle.logSlot()).toBe(2);
  });
});

describe('AuthThrottle.guard', () => {
  it('waits before answering, logs failures at info and throttling at warn once per interval', async () => {
    const { throttle } = setup({ logIntervalMs: 60_000 });
    const { lines, log } = recorder();
    const waits: number[] = [];
    const attempt = (right: boolean) =>
      throttle.guard({
        address: '10.0.0.1',
        database: 'db',
        log,
        verify: async () => right,
        wait: async (ms) => {
          waits.push(ms);
        },
      });
    for (let i = 0; i < 5; i++) expect(await attempt(false)).toBe(false);
    expect(waits).toEqual([100, 300]); // the clock stands still: the second queues behind the first
    expect(lines.filter((l) => l.msg === 'authentication failed')).toHaveLength(5);
    expect(lines.filter((l) => l.level === 'warn')).toEqual([
      {
        level: 'warn',
        fields: { address: '10.0.0.1', delayMs: 100, checked: true, skipped: 0 },
        msg: 'authentication throttled',
      },
    ]);
    // The right password is delayed too (the answer would otherwise tell), then resets the address.
    expect(await attempt(true)).toBe(true);
    expect(waits).toHaveLength(3);
    expect(throttle.admit('10.0.0.1', 'other').delayMs).toBe(0);
  });

  it('never checks the password of an attempt refused beyond the queue', async () => {
    const { throttle, fail } = setup({ maxDelayMs: 1000, queueMs: 1000 });
    fail('10.0.0.1', 'db', 7);
    throttle.admit('10.0.0.1', 'db'); // takes the only place in the queue
    let checked = false;
    const ok = await throttle.guard({
      address: '10.0.0.1',
      database: 'db',
      log: recorder().log,
      verify: async () => {
        checked = true;
        return true;
      },
      wait: async () => undefined,
    });
    expect({ ok, checked }).toEqual({ ok: false, checked: false });
  });
});

describe('addressKey', () => {
  it('keeps IPv4, unwraps IPv4-mapped IPv6 and groups IPv6 by /64', () => {
    expect(addressKey('192.0.2.7')).toBe('192.0.2.7');
    expect(addressKey('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:0db8:0001:0002:ffff:1:2:3')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(addressKey('64:ff9b::192.0.2.7')).toBe('64:ff9b:0:0::/64');
    expect(addressKey('')).toBe('');
  });
});

describe('waitUnlessClosed', () => {
  it('ends early when the socket closes, leaving no listener behind', async () => {
    const socket = new EventEmitter();
    const waited = waitUnlessClosed(60_000, socket);
    expect(socket.listenerCount('close')).toBe(1);
    socket.emit('close');
    await waited;
    expect(socket.listenerCount('close')).toBe(0);
  });
});
