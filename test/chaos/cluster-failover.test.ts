import type pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { rendezvousOwner } from '../../src/cluster/rendezvous.js';
import type { ClusterHarness, HarnessNode } from '../helpers/cluster.js';
import { connectTo, ackedMissing as missingOf, writeLoad } from '../helpers/cluster-load.js';
import { useSyncCluster } from '../helpers/cluster-suite.js';

/**
 * Cluster failover drills with real processes: 3 nodes, a PostgreSQL 15 catalog, s3rver,
 * DURABILITY=sync and a 2 s lease. The owner killed, paused, cut off from the catalog, stopped or
 * moved under write load loses nothing that was acknowledged. (Minutes of waiting through faults:
 * `npm run test:chaos`; the cluster's everyday serving is test/integration/cluster.test.ts.)
 */

const PASSWORD = 'cluster-password-1';
const LEASE_TTL_MS = 2000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let cluster: ClusterHarness;

const connect = (node: HarnessNode, db: string, extra: Partial<pg.ClientConfig> = {}) =>
  connectTo(node, db, PASSWORD, extra);

const harness = useSyncCluster(`${LEASE_TTL_MS}ms`);
beforeAll(() => {
  cluster = harness();
});

/**
 * Client-side load: each worker inserts its own increasing sequence numbers, one autocommit
 * insert at a time, reconnecting through another live node after any error. Returns what was
 * acknowledged.
 */
/** Write load on `db` through random live nodes (cluster-load.ts). */
const load4 = (db: string, until: () => boolean, avoid: () => HarnessNode | undefined) =>
  writeLoad(cluster, { db, password: PASSWORD, workers: 4, until, avoid });

const ackedMissing = (db: string, acked: { worker: number; n: number }[]) =>
  missingOf(cluster, db, PASSWORD, acked);

describe('cluster: failover', () => {
  it('kill -9 of a busy owner (sync): clients reconnect elsewhere and every acknowledged commit is there', async () => {
    const db = 'busy1';
    await cluster.anyNode().createDatabase(db, PASSWORD);
    const setup = await connect(cluster.anyNode(), db);
    await setup.query('create table seqs (worker int, n int, primary key (worker, n))');
    await setup.end();
    const owner = (await cluster.ownerOf(db)) as HarnessNode;
    const before = (await cluster.placement(db))?.generation ?? 0n;
    let stop = false;
    let killedAt = 0;
    const load = load4(
      db,
      () => stop,
      () => (killedAt ? owner : undefined),
    );
    for (let i = 0; i < 100 && load.acked.length < 40; i++) await sleep(100);
    const ackedBeforeKill = load.acked.length;
    await owner.kill9();
    killedAt = performance.now();
    // Load goes on through the other nodes until well after the takeover.
    for (let i = 0; i < 300 && !(load.lastAck() > killedAt && load.acked.length > ackedBeforeKill + 40); i++)
      await sleep(100);
    stop = true;
    await load.done;
    const firstAfter = load.acked.find((a) => a.at > killedAt);
    const resumedAfterMs = firstAfter ? Math.round(firstAfter.at - killedAt) : -1;
    console.info(
      `failover: ${ackedBeforeKill} acked before kill -9, ${load.acked.length} in all; load resumed within ${resumedAfterMs} ms`,
    );
    expect(load.acked.length).toBeGreaterThan(ackedBeforeKill);
    expect(await ackedMissing(db, load.acked)).toEqual([]);
    const after = await cluster.placement(db);
    expect(after?.owner).not.toBe(owner.id);
    expect(after?.generation).toBeGreaterThan(before);
    await owner.start();
  }, 180_000);

  it('SIGSTOP of the owner past the lease: another node takes over; resumed cut off from the catalog, it acknowledges nothing and the counter never forks', async () => {
    const db = 'paused1';
    await cluster.anyNode().createDatabase(db, PASSWORD);
    const setup = await connect(cluster.anyNode(), db);
    await setup.query('create table counter (id int primary key, v int not null)');
    await setup.query('insert into counter values (1, 0)');
    await setup.query('create table hist (v int not null)');
    await setup.end();
    const owner = (await cluster.ownerOf(db)) as HarnessNode;
    const bump =
      'with u as (update counter set v = v + 1 where id = 1 returning v) insert into hist select v from u returning v';
    const acked: number[] = [];
    // A client connected straight to the owner: its write is sent while the owner is paused.
    const direct = await connect(owner, db);
    const reader = await connect(owner, db);
    acked.push((await direct.query<{ v: number }>(bump)).rows[0]?.v as number);
    owner.pause();
    const pausedAt = performance.now();
    const stale = direct.query<{ v: number }>(bump).then(
      (r) => ({ acked: r.rows[0]?.v }),
      (err: { code?: string }) => ({ error: err.code ?? 'closed' }),
    );
    // Clients through the other nodes: served again once the lease ran out and a node claimed it.
    let served = false;
    for (let i = 0; i < 60 && !served; i++) {
      try {
        const c = await connect(cluster.anyNode(owner), db, { query_timeout: 3000 } as never);
        for (let k = 0; k < 10; k++) acked.push((await c.query<{ v: number }>(bump)).rows[0]?.v as number);
        await c.end();
        served = true;
      } catch {
        await sleep(250);
      }
    }
    expect(served).toBe(true);
    const takeoverMs = Math.round(performance.now() - pausedAt);
    const placement = await cluster.placement(db);
    expect(placement?.owner).not.toBe(owner.id);
    // It wakes up cut off from the catalog (so no heartbeat reply can tell it that it lost the
    // database): its own clock must stop it. Bounded: the cut heals after 2 leases.
    owner.faults.catalog.fault('blackhole', LEASE_TTL_MS * 2);
    owner.resume();
    const outcome = await stale;
    const staleRead = await reader.query<{ v: number }>('select v from counter where id = 1').then(
      (r) => ({ acked: r.rows[0]?.v }),
      (err: { code?: string }) => ({ error: err.code ?? 'closed' }),
    );
    // The resumed former owner acknowledged nothing: no write, not even a (stale) read.
    expect(outcome).not.toHaveProperty('acked');
    expect(staleRead).not.toHaveProperty('acked');
    await reader.end().catch(() => undefined);
    // Writes after the resume go to the new owner; the counter never forked. (Not through the
    // former owner: its catalog link is still cut, so it cannot even check a password.)
    const c = await connect(cluster.anyNode(owner), db);
    for (let k = 0; k < 5; k++) acked.push((await c.query<{ v: number }>(bump)).rows[0]?.v as number);
    const { rows } = await c.query<{ v: number }>('select v from hist order by v');
    await c.end();
    const history = rows.map((r) => r.v);
    expect(new Set(acked).size).toBe(acked.length);
    for (const v of acked) expect(history).toContain(v);
    expect(new Set(history).size).toBe(history.length);
    // Its own clock ended its ownership (the catalog could not tell it): clients dropped unanswered.
    for (let i = 0; i < 50 && owner.logged('ownership lost; closing the database').length === 0; i++)
      await sleep(100);
    expect(owner.logged('ownership lost; closing the database').some((e) => e.db === db)).toBe(true);
    // The next test starts with every node's catalog link whole.
    owner.faults.catalog.heal();
    console.info(
      `pause: served by another node ${takeoverMs} ms after SIGSTOP; stale client got ${JSON.stringify(outcome)}`,
    );
  }, 180_000);

  it('a node cut off from the catalog stops serving; others take over; it rejoins when the cut heals', async () => {
    const db = 'part1';
    await cluster.anyNode().createDatabase(db, PASSWORD);
    const setup = await connect(cluster.anyNode(), db);
    await setup.query('create table t (n int primary key)');
    await setup.query('insert into t values (1)');
    await setup.end();
    const owner = (await cluster.ownerOf(db)) as HarnessNode;
    const direct = await connect(owner, db);
    // The cut heals by itself after 4 leases.
    owner.faults.catalog.fault('blackhole', LEASE_TTL_MS * 4);
    const cutAt = performance.now();
    let n = 1;
    let served = false;
    for (let i = 0; i < 80 && !served; i++) {
      try {
        const c = await connect(cluster.anyNode(owner), db, { query_timeout: 3000 } as never);
        await c.query('insert into t values ($1)', [n + 1]);
        n++;
        await c.end();
        served = true;
      } catch {
        await sleep(250);
      }
    }
    expect(served).toBe(true);
    expect((await cluster.placement(db))?.owner).not.toBe(owner.id);
    // The cut-off node's own client was dropped without an answer.
    const late = await direct.query('select count(*) from t').then(
      () => 'answered',
      (err: { code?: string }) => err.code ?? 'closed',
    );
    expect(late).not.toBe('answered');
    // Healed: the node serves again (forwarding to the new owner).
    await sleep(Math.max(0, LEASE_TTL_MS * 4 - (performance.now() - cutAt)));
    let rejoined = false;
    for (let i = 0; i < 60 && !rejoined; i++) {
      try {
        const c = await connect(owner, db, { query_timeout: 3000 } as never);
        const { rows } = await c.query('select count(*)::int as n from t');
        await c.end();
        rejoined = rows[0]?.n === n;
      } catch {
        await sleep(250);
      }
    }
    expect(rejoined).toBe(true);
    // Forwarding needs no lease of its own, so it may serve just before its next heartbeat renews it.
    const leaseValid = async () =>
      (JSON.parse((await owner.request('GET', '/v1/cluster')).body) as { leaseValid: boolean }).leaseValid;
    for (let i = 0; i < 40 && !(await leaseValid()); i++) await sleep(250);
    expect(await leaseValid()).toBe(true);
  }, 120_000);

  it('SIGTERM hands the owned databases over: released, then served by another node with all data', async () => {
    const db = 'term1';
    await cluster.anyNode().createDatabase(db, PASSWORD);
    const setup = await connect(cluster.anyNode(), db);
    await setup.query('create table t (n int primary key)');
    await setup.query('insert into t select generate_series(1, 100)');
    await setup.end();
    const owner = (await cluster.ownerOf(db)) as HarnessNode;
    await owner.stop();
    expect((await cluster.placement(db))?.owner).toBeNull();
    const c = await connect(cluster.anyNode(owner), db);
    expect((await c.query('select count(*)::int as n from t')).rows).toEqual([{ n: 100 }]);
    await c.end();
    const next = (await cluster.placement(db))?.owner;
    expect(next).not.toBe(owner.id);
    await owner.start();
    // Back in the cluster, it takes its share of new placements: a database rendezvous hashing
    // gives it (chosen by the same pure function the nodes use) is claimed by it, even when the
    // first client arrives at another node.
    const ids = cluster.nodes.map((n) => n.id);
    const joined = Array.from({ length: 50 }, (_, i) => `join${i}`).filter(
      (id) => rendezvousOwner(id, ids) === owner.id,
    )[0] as string;
    await cluster.anyNode(owner).createDatabase(joined, PASSWORD);
    for (let i = 0; i < 50; i++) {
      const view = JSON.parse((await owner.request('GET', '/v1/cluster')).body) as { leaseValid: boolean };
      if (view.leaseValid) break;
      await sleep(200);
    }
    const first = await connect(cluster.anyNode(owner), joined);
    await first.query('select 1');
    await first.end();
    expect((await cluster.placement(joined))?.owner).toBe(owner.id);
    // The cluster view and counters.
    const entry = cluster.nodes[0] as HarnessNode;
    const view = JSON.parse((await entry.request('GET', '/v1/cluster')).body) as {
      nodes: { id: string; alive: boolean }[];
      placements: { databaseId: string; owner: string | null }[];
    };
    expect(view.nodes.filter((n) => n.alive).map((n) => n.id)).toEqual(['node-1', 'node-2', 'node-3']);
    expect(view.placements.find((p) => p.databaseId === db)?.owner).toBe(next);
    expect((await entry.request('GET', '/metrics')).body).toMatch(/pglite_gateway_cluster_lease_valid 1/);
  }, 180_000);

  it('db move under write load: the target owns it with a new generation and no acknowledged commit is lost', async () => {
    const db = 'move1';
    await cluster.anyNode().createDatabase(db, PASSWORD);
    const setup = await connect(cluster.anyNode(), db);
    await setup.query('create table seqs (worker int, n int, primary key (worker, n))');
    await setup.end();
    const owner = (await cluster.ownerOf(db)) as HarnessNode;
    const target = cluster.nodes.find((n) => n !== owner && n.alive()) as HarnessNode;
    const before = (await cluster.placement(db))?.generation ?? 0n;
    // Asked on a node that does not own it: refused, nothing changes.
    const refused = await target.request('POST', '/v1/cluster/move', { database: db, node: target.id });
    expect(refused.status).toBe(409);
    let stop = false;
    const load = load4(
      db,
      () => stop,
      () => undefined,
    );
    for (let i = 0; i < 100 && load.acked.length < 20; i++) await sleep(100);
    const moved = await owner.request('POST', '/v1/cluster/move', { database: db, node: target.id });
    expect(moved.status, moved.body).toBe(200);
    expect(JSON.parse(moved.body)).toMatchObject({ database: db, owner: target.id });
    const atMove = load.acked.length;
    for (let i = 0; i < 200 && load.acked.length < atMove + 20; i++) await sleep(100);
    stop = true;
    await load.done;
    expect(load.acked.length).toBeGreaterThan(atMove);
    expect(await ackedMissing(db, load.acked)).toEqual([]);
    const after = await cluster.placement(db);
    expect(after?.generation).toBeGreaterThan(before);
  }, 120_000);
});
