import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HelloError, NonceWindow, openHello, sealHello, takeFrame } from './hello.js';
import { LeaseClock } from './lease-clock.js';
import { rendezvousOwner } from './rendezvous.js';

const secret = 'a-cluster-secret-of-some-length';
const body = { kind: 'session' as const, from: 'a', db: 'db1', user: 'u', params: { application_name: 'x' } };

const open = (frame: Buffer, nonces = new NonceWindow(), key = secret, now?: number) => {
  const got = takeFrame(frame);
  if (!got) throw new Error('incomplete');
  return openHello(key, got.frame, nonces, now);
};

describe('rendezvous hashing', () => {
  it('is deterministic, independent of order, and picks a member', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.stringMatching(/^[a-z0-9-]{1,12}$/), { minLength: 1, maxLength: 8 }),
        fc.string(),
        (nodes, db) => {
          const a = rendezvousOwner(db, nodes);
          expect(nodes).toContain(a);
          expect(rendezvousOwner(db, [...nodes].reverse())).toBe(a);
        },
      ),
    );
  });

  it('moves only the databases of a node that leaves', () => {
    const nodes = ['n1', 'n2', 'n3', 'n4'];
    const dbs = Array.from({ length: 400 }, (_, i) => `db${i}`);
    const before = new Map(dbs.map((d) => [d, rendezvousOwner(d, nodes)]));
    const after = new Map(dbs.map((d) => [d, rendezvousOwner(d, ['n1', 'n2', 'n4'])]));
    for (const d of dbs) if (before.get(d) !== 'n3') expect(after.get(d)).toBe(before.get(d));
    // Spread: every node gets a fair share (far from 0 or all).
    for (const n of nodes) expect([...before.values()].filter((o) => o === n).length).toBeGreaterThan(50);
  });

  it('has no owner without nodes', () => {
    expect(rendezvousOwner('db', [])).toBeUndefined();
  });
});

describe('lease clock', () => {
  it('is valid only until the TTL (minus a margin) after the heartbeat was sent', () => {
    let now = 1000;
    const lease = new LeaseClock(10_000, () => now);
    expect(lease.valid()).toBe(false);
    lease.renewed(1000);
    now = 10_400;
    expect(lease.valid()).toBe(true);
    now = 10_600;
    expect(lease.valid()).toBe(false);
  });

  it('is never shortened by a late reply to an older heartbeat, and revoke ends it', () => {
    let now = 0;
    const lease = new LeaseClock(1000, () => now);
    lease.renewed(500);
    lease.renewed(100);
    now = 1300;
    expect(lease.valid()).toBe(true);
    lease.revoke();
    expect(lease.valid()).toBe(false);
  });
});

describe('cluster hello', () => {
  it('round-trips a sealed hello', () => {
    expect(open(sealHello(secret, body))).toEqual(body);
  });

  it('refuses a wrong secret, a tampered body, a replay and an old frame', () => {
    expect(() => open(sealHello('another-secret-xxxxxxx', body))).toThrow(HelloError);
    const sealed = sealHello(secret, body);
    const tampered = Buffer.from(sealed.toString('latin1').replace('"db1"', '"db2"'), 'latin1');
    expect(() => open(tampered)).toThrow(/mac/);
    const nonces = new NonceWindow();
    const once = sealHello(secret, body);
    expect(open(once, nonces)).toEqual(body);
    expect(() => open(once, nonces)).toThrow(/replayed/);
    expect(() => open(sealHello(secret, body, Date.now() - 120_000))).toThrow(/too old/);
  });

  it('refuses garbage and oversized frames, and waits for an incomplete one', () => {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(10_000_000);
    expect(() => takeFrame(head)).toThrow(HelloError);
    expect(takeFrame(sealHello(secret, body).subarray(0, 10))).toBeUndefined();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const json = Buffer.from(bytes);
        expect(() => openHello(secret, json, new NonceWindow())).toThrow(HelloError);
      }),
    );
  });

  it('refuses a genuine (MAC-valid) hello whose shape is wrong: a peer of another version, or a bug', () => {
    const malformed = [
      { ...body, params: null },
      { ...body, db: 42 },
      { kind: 'claim', from: 'a', db: 'db1', generation: 'not-a-number' },
      { kind: 'cancel', from: 'a', processId: '1', secretKey: 2, relayed: true },
      { kind: 'gossip', from: 'a' },
      null,
    ];
    for (const hello of malformed)
      expect(() => open(sealHello(secret, hello as never)), JSON.stringify(hello)).toThrow(/malformed/);
    expect(open(sealHello(secret, { kind: 'ping', from: 'a' }))).toEqual({ kind: 'ping', from: 'a' });
  });
});
