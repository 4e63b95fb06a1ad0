import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LEGACY_INCARNATION } from '../catalog/catalog.js';
import { errors } from '../errors.js';
import { createLogger } from '../log.js';
import type { Claim, Coordination, NodeRow, Placement } from './coordination.js';
import { ClusterNode } from './node.js';
import { rendezvousOwner } from './rendezvous.js';

/** ClusterNode's decisions over a scripted coordination store (the SQL is tested against PG15). */

const TTL = 400;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const logger = createLogger({ level: 'silent', pretty: false });

class FakeCoordination {
  placements = new Map<string, Placement>();
  live: NodeRow[] = [];
  heartbeatFails = false;
  claims = 0;
  claimResult: Claim | undefined = {
    generation: 1n,
    localCopyCurrent: true,
    tookOver: false,
  };
  owned = new Map<string, bigint>();
  async heartbeat() {
    if (this.heartbeatFails) throw new Error('catalog unreachable');
    return new Map(this.owned);
  }
  async placement(id: string) {
    return this.placements.get(id);
  }
  async nodes() {
    return this.live;
  }
  async claim(id: string) {
    this.claims++;
    await sleep(20);
    if (this.claimResult) this.owned.set(id, this.claimResult.generation);
    return this.claimResult;
  }
  async release() {
    return true;
  }
}

const nodeRow = (id: string): NodeRow => ({
  id,
  address: `${id}:5433`,
  alive: true,
  draining: false,
  openDatabases: 0,
  heartbeatAgeMs: 0,
});

let started: ClusterNode[] = [];
afterEach(async () => {
  for (const n of started) await n.stop();
  started = [];
});

async function makeNode(
  fake: FakeCoordination,
  id = 'me',
  closing: Promise<void> = Promise.resolve(),
  dataDir = '/nonexistent',
) {
  const closed: string[] = [];
  const coordination = fake as unknown as Coordination;
  const node = new ClusterNode({
    nodeId: id,
    address: `${id}:5433`,
    leaseTtlMs: TTL,
    coordination,
    logger,
    openDatabases: () => 0,
    closeDatabase: async (db) => {
      closed.push(db);
      await closing;
    },
    dataDirOf: (db) => path.join(dataDir, db),
  });
  await node.start();
  started.push(node);
  return { node, closed };
}

describe('ClusterNode', () => {
  it('forwards to a live owner, sends a free database to its preferred node, claims when preferred', async () => {
    const fake = new FakeCoordination();
    fake.live = [nodeRow('me'), nodeRow('other')];
    const { node } = await makeNode(fake);
    fake.placements.set('owned-elsewhere', {
      databaseId: 'owned-elsewhere',
      owner: 'other',
      generation: 3n,
      ownerAddress: 'other:5433',
      ownerAlive: true,
      releasedBy: null,
    });
    expect(await node.route('owned-elsewhere')).toEqual({
      kind: 'forward',
      nodeId: 'other',
      address: 'other:5433',
    });
    // A forwarded session is never sent on: the entry node retries instead.
    await expect(node.route('owned-elsewhere', { forwarded: true })).rejects.toMatchObject({ code: '57P03' });
    const free = Array.from({ length: 40 }, (_, i) => `free${i}`);
    const mine = free.find((d) => rendezvousOwner(d, ['me', 'other']) === 'me') as string;
    const theirs = free.find((d) => rendezvousOwner(d, ['me', 'other']) === 'other') as string;
    expect(await node.route(theirs)).toMatchObject({ kind: 'forward', nodeId: 'other' });
    expect(await node.route(mine)).toEqual({ kind: 'local' });
    expect(node.mayAcknowledge(mine)).toBe(true);
    expect(node.fence(mine)).toEqual({ nodeId: 'me', generation: 1n });
    // A node it cannot reach is avoided: the database is claimed here instead.
    expect(await node.route(theirs, { avoid: 'other' })).toEqual({ kind: 'local' });
  });

  it('shares one claim between clients arriving together', async () => {
    const fake = new FakeCoordination();
    fake.live = [nodeRow('me')];
    const { node } = await makeNode(fake);
    await Promise.all([node.ensureOwned('db'), node.ensureOwned('db'), node.ensureOwned('db')]);
    expect(fake.claims).toBe(1);
  });

  it('drops a database the heartbeat no longer lists, and stops acknowledging at once', async () => {
    const fake = new FakeCoordination();
    fake.live = [nodeRow('me')];
    const { node, closed } = await makeNode(fake);
    await node.ensureOwned('db');
    expect(node.mayAcknowledge('db')).toBe(true);
    fake.owned.delete('db');
    for (let i = 0; i < 40 && closed.length === 0; i++) await sleep(25);
    expect(closed).toEqual(['db']);
    expect(node.mayAcknowledge('db')).toBe(false);
    expect(node.stats.lost).toBe(1);
  });

  it('drops every database when the lease cannot be renewed; refuses claims and archive writes meanwhile', async () => {
    const fake = new FakeCoordination();
    fake.live = [nodeRow('me')];
    const { node, closed } = await makeNode(fake);
    await node.ensureOwned('a');
    fake.heartbeatFails = true;
    for (let i = 0; i < 80 && closed.length === 0; i++) await sleep(25);
    expect(closed).toEqual(['a']);
    expect(node.lease.valid()).toBe(false);
    expect(node.mayAcknowledge('a')).toBe(false);
    await expect(node.ensureOwned('b')).rejects.toEqual(errors.databaseUnavailable('b'));
  });

  it('neither serves nor claims a database while handing it over', async () => {
    const fake = new FakeCoordination();
    fake.live = [nodeRow('me')];
    const { node } = await makeNode(fake);
    await node.handingOver('db', async () => {
      await expect(node.route('db')).rejects.toMatchObject({ code: '57P03' });
      await expect(node.ensureOwned('db')).rejects.toMatchObject({ code: '57P03' });
    });
    expect(await node.route('db')).toEqual({ kind: 'local' });
  });

  it('gives a lost database a fence no catalog accepts', async () => {
    const fake = new FakeCoordination();
    fake.live = [nodeRow('me')];
    let finishClose = () => {};
    const closing = new Promise<void>((resolve) => {
      finishClose = resolve;
    });
    const { node, closed } = await makeNode(fake, 'me', closing);
    expect(node.fence('unowned')).toEqual({ nodeId: 'me', generation: -1n });
    await node.ensureOwned('db');
    fake.heartbeatFails = true;
    for (let i = 0; i < 80 && closed.length === 0; i++) await sleep(25);
    // While it closes (shipping its last WAL, taking a snapshot), every record it makes is refused.
    expect(node.fence('db').generation).toBeLessThan(-1n);
    finishClose();
  });

  it('serves a local copy only when it is of the same incarnation (a deleted database of the same id is fetched over)', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'node-incarnation-'));
    try {
      const cases = [
        // The catalog's incarnation, whether the claim found the copy current, its mark, kept?
        { incarnation: 'inc-1', current: true, mark: 'inc-1', kept: true },
        { incarnation: 'inc-1', current: true, mark: 'inc-0', kept: false },
        { incarnation: 'inc-1', current: false, mark: 'inc-1', kept: false },
        { incarnation: 'inc-1', current: true, mark: undefined, kept: false },
        // Unmarked copies of a database older than incarnations: trusted as before.
        { incarnation: LEGACY_INCARNATION, current: true, mark: undefined, kept: true },
        { incarnation: LEGACY_INCARNATION, current: false, mark: undefined, kept: false },
        { incarnation: LEGACY_INCARNATION, current: true, mark: 'inc-0', kept: false },
      ];
      for (const [i, c] of cases.entries()) {
        const fake = new FakeCoordination();
        fake.live = [nodeRow('me')];
        fake.claimResult = {
          generation: 1n,
          localCopyCurrent: c.current,
          tookOver: false,
        };
        const dataDir = path.join(root, String(i));
        const { node } = await makeNode(fake, 'me', Promise.resolve(), dataDir);
        const dir = path.join(dataDir, 'db');
        await mkdir(dir, { recursive: true });
        await writeFile(path.join(dir, 'PG_VERSION'), '18');
        if (c.mark) {
          await mkdir(path.join(dataDir, '_incarnation'), { recursive: true });
          await writeFile(path.join(dataDir, '_incarnation', 'db'), c.mark);
        }
        const seen: boolean[] = [];
        const materialize = node.wrapMaterialize(async (_id, d) => {
          const there = await readFile(path.join(d, 'PG_VERSION')).then(
            () => true,
            () => false,
          );
          seen.push(there);
          return there ? 'present' : 'fetched';
        });
        await materialize('db', dir, c.incarnation);
        expect({ case: i, kept: seen[0] }).toEqual({ case: i, kept: c.kept });
        // Whatever it held before, the copy is now marked as the catalog's incarnation.
        expect(await readFile(path.join(dataDir, '_incarnation', 'db'), 'utf8')).toBe(c.incarnation);
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
