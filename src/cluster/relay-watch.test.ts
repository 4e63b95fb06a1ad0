import { describe, expect, it } from 'vitest';
import type { GatewayError } from '../errors.js';
import { createLogger } from '../log.js';
import type { Placement } from './coordination.js';
import { RelayWatch } from './relay-watch.js';

/** RelayWatch's decisions over scripted placements and pings (the real path: cluster.test.ts). */

const logger = createLogger({ level: 'silent', pretty: false });

function watched(db: string, owner: string) {
  const ended: GatewayError[] = [];
  let finish = () => {};
  const done = new Promise<void>((resolve) => {
    finish = resolve;
  });
  return {
    ended,
    finish,
    w: {
      db,
      owner,
      address: `${owner}:1`,
      // Silent since long ago unless a test says it heard from the owner.
      relay: { done, end: (e: GatewayError) => void ended.push(e), heardAt: Number.NEGATIVE_INFINITY },
    },
  };
}

const placement = (db: string, owner: string | null, alive = true): Placement => ({
  databaseId: db,
  owner,
  generation: 1n,
  ownerAddress: owner && `${owner}:1`,
  ownerAlive: alive && owner !== null,
  releasedBy: null,
});

function makeWatch(state: { placements?: Placement[] | 'unreadable'; answers: Set<string> }) {
  return new RelayWatch({
    everyMs: 60_000,
    logger,
    placementsOf: async () => {
      if (state.placements === 'unreadable') throw new Error('catalog unreachable');
      return new Map((state.placements ?? []).map((p) => [p.databaseId, p]));
    },
    ping: async (address) => state.answers.has(address),
  });
}

describe('RelayWatch', () => {
  it('leaves sessions alone while their owner owns the database, is alive and answers', async () => {
    const state = { placements: [placement('a', 'n1')], answers: new Set(['n1:1']) };
    const watch = makeWatch(state);
    const a = watched('a', 'n1');
    watch.watch(a.w);
    for (let i = 0; i < 3; i++) await watch.check();
    expect(a.ended).toEqual([]);
    watch.stop();
  });

  it('ends a session whose database has another owner, none, or an owner whose lease ran out, with 08006', async () => {
    const state = {
      placements: [placement('moved', 'n2'), placement('released', null), placement('stale', 'n1', false)],
      answers: new Set(['n1:1', 'n2:1']),
    };
    const watch = makeWatch(state);
    const sessions = ['moved', 'released', 'stale', 'deleted'].map((db) => watched(db, 'n1'));
    for (const s of sessions) watch.watch(s.w);
    await watch.check();
    for (const s of sessions) expect(s.ended.map((e) => e.code)).toEqual(['08006']);
    // Ended once, even if checked again.
    await watch.check();
    for (const s of sessions) expect(s.ended).toHaveLength(1);
    watch.stop();
  });

  it('ends the sessions of an owner that missed two pings in a row; never on an unreadable catalog alone', async () => {
    const state = { placements: 'unreadable' as const, answers: new Set(['n1:1']) };
    const watch = makeWatch(state);
    const a = watched('a', 'n1');
    watch.watch(a.w);
    await watch.check();
    await watch.check();
    expect(a.ended).toEqual([]);
    state.answers.clear();
    await watch.check();
    expect(a.ended).toEqual([]);
    await watch.check();
    expect(a.ended.map((e) => e.code)).toEqual(['08006']);
    watch.stop();
  });

  it('pings no owner that sent bytes on one of its relays within the period', async () => {
    const answers = new Set<string>();
    let pings = 0;
    const watch = new RelayWatch({
      everyMs: 60_000,
      logger,
      placementsOf: async () => {
        throw new Error('catalog unreachable');
      },
      ping: async (address) => {
        pings++;
        return answers.has(address);
      },
    });
    const busy = watched('a', 'n1');
    const idle = watched('b', 'n1');
    watch.watch(busy.w);
    watch.watch(idle.w);
    busy.w.relay.heardAt = performance.now();
    for (let i = 0; i < 3; i++) await watch.check();
    expect(pings).toBe(0);
    expect([...busy.ended, ...idle.ended]).toEqual([]);
    // Silent now: pinged, and ended after two misses.
    busy.w.relay.heardAt = Number.NEGATIVE_INFINITY;
    await watch.check();
    await watch.check();
    expect(pings).toBe(2);
    expect(busy.ended.map((e) => e.code)).toEqual(['08006']);
    watch.stop();
  });

  it('forgets a session once it is done', async () => {
    const state = { placements: [] as Placement[], answers: new Set<string>() };
    const watch = makeWatch(state);
    const a = watched('a', 'n1');
    watch.watch(a.w);
    a.finish();
    await new Promise((r) => setTimeout(r, 0));
    await watch.check();
    expect(a.ended).toEqual([]);
    watch.stop();
  });
});
