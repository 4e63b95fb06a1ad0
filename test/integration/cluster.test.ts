import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import postgres from 'postgres';
import { beforeAll, describe, expect, it } from 'vitest';
import { dialPeer } from '../../src/cluster/forward.js';
import { internals, sendCancel } from '../helpers/clients.js';
import type { ClusterHarness, HarnessNode } from '../helpers/cluster.js';
import { connectTo } from '../helpers/cluster-load.js';
import { useSyncCluster } from '../helpers/cluster-suite.js';
import { errorFields, readUntilClose } from '../helpers/raw.js';

/**
 * Cluster mode with real processes: 3 nodes, a PostgreSQL 15 catalog, s3rver, DURABILITY=sync and
 * a 2 s lease. Any node serves any client (forwarding to the owner). The failover drills (owner
 * killed, paused, cut off, stopped, moved under load) are test/chaos/cluster-failover.test.ts.
 */

const PASSWORD = 'cluster-password-1';
const LEASE_TTL_MS = 2000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let cluster: ClusterHarness;

/** Runs `fn` over `items`, five at a time. */
async function inBatches<T>(items: T[], fn: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += 5) await Promise.all(items.slice(i, i + 5).map(fn));
}

const connect = (node: HarnessNode, db: string, extra: Partial<pg.ClientConfig> = {}) =>
  connectTo(node, db, PASSWORD, extra);

/** A node other than the database's owner (so the session is forwarded). */
const nonOwner = async (db: string) => {
  const owner = await cluster.ownerOf(db);
  const entry = cluster.nodes.find((n) => n !== owner && n.alive());
  if (!owner || !entry) throw new Error(`no owner/entry for ${db}`);
  return { owner, entry };
};

const harness = useSyncCluster(`${LEASE_TTL_MS}ms`);
beforeAll(() => {
  cluster = harness();
});

describe('cluster: 3 nodes, 20 databases', () => {
  const dbs = Array.from({ length: 20 }, (_, i) => `cdb${i}`);

  it('serves every database from every node, each owned by exactly one node', async () => {
    await inBatches(dbs, (db) => cluster.anyNode().createDatabase(db, PASSWORD));
    await inBatches(dbs, async (db) => {
      const c = await connect(cluster.anyNode(), db);
      await c.query('create table t (id int primary key, note text)');
      await c.query('insert into t values (1, $1)', [db]);
      await c.end();
    });
    for (const node of cluster.nodes) {
      await inBatches(dbs, async (db) => {
        const c = await connect(node, db);
        const { rows } = await c.query('select note from t where id = 1');
        expect(rows).toEqual([{ note: db }]);
        await c.end();
      });
    }
    const owners = new Set<string>();
    for (const db of dbs) {
      const p = await cluster.placement(db);
      expect(p?.owner).toMatch(/^node-\d$/);
      owners.add(p?.owner as string);
      // Each database opened on its owner only.
      const opened = cluster.nodes.filter((n) => n.logged('database opened').some((e) => e.db === db));
      expect(opened.map((n) => n.id)).toEqual([p?.owner]);
    }
    // Rendezvous hashing spreads 20 databases over more than one node.
    expect(owners.size).toBeGreaterThan(1);
  }, 240_000);

  it('an owner refuses a forwarded session whose verifier is no longer the database', async () => {
    // As if the entry node checked the password just before the database was deleted and
    // created again: the owner opens the new one, and the old verifier must not reach it.
    const db = dbs[0] as string;
    const owner = await cluster.ownerOf(db);
    if (!owner) throw new Error(`no owner for ${db}`);
    const hello = { kind: 'session' as const, from: 'test', db, user: 'postgres', params: {} };
    const stale = await dialPeer(`127.0.0.1:${owner.clusterPort}`, cluster.secret, {
      ...hello,
      storedKey: Buffer.alloc(32).toString('base64'),
    });
    const closing = readUntilClose(stale.socket);
    stale.socket.resume(); // dialPeer leaves it paused after reading the reply
    const got = await closing;
    expect(got.closed).toBe(true);
    expect(errorFields(Buffer.concat([stale.rest, got.data]))).toMatchObject({ C: '3D000' });
  });

  it('a database deleted and created again never serves the old one from a stale local copy', async () => {
    const db = 'recreated';
    await cluster.anyNode().createDatabase(db, PASSWORD);
    const first = await connect(cluster.anyNode(), db);
    await first.query("create table t (note text); insert into t values ('old tenant')");
    await first.end();
    // Its first owner keeps a local copy when the database moves away; the new owner deletes it.
    const { owner, entry: other } = await nonOwner(db);
    const moved = await owner.request('POST', '/v1/cluster/move', { database: db, node: other.id });
    expect(moved.status).toBe(200);
    const onOther = await connect(other, db);
    await onOther.query('select 1');
    await onOther.end();
    const deleted = await other.request('DELETE', `/v1/databases/${db}`);
    expect(deleted.status).toBe(204);
    await other.createDatabase(db, PASSWORD);
    // Every node serves the new, empty database (rendezvous hands it back to the first owner).
    for (const node of cluster.nodes) {
      const c = await connect(node, db);
      const { rows } = await c.query("select count(*)::int as n from pg_tables where tablename = 't'");
      expect(rows).toEqual([{ n: 0 }]);
      await c.end();
    }
  }, 120_000);

  it('forwarded sessions support transactions, prepared statements, COPY and cancel', async () => {
    const db = 'cdb0';
    const { owner, entry } = await nonOwner(db);
    const c = await connect(entry, db);
    expect(entry.logged('client forwarded to the owner').length).toBeGreaterThan(0);
    // Transactions.
    await c.query('begin');
    await c.query("insert into t values (100, 'rolled back')");
    await c.query('rollback');
    await c.query('begin');
    await c.query("insert into t values (101, 'committed')");
    await c.query('commit');
    expect((await c.query('select count(*)::int as n from t where id in (100, 101)')).rows).toEqual([
      { n: 1 },
    ]);
    // Named prepared statements, executed twice.
    for (const v of [1, 2]) {
      const r = await c.query({ name: 'plus_one', text: 'select $1::int + 1 as x', values: [v] });
      expect(r.rows).toEqual([{ x: v + 1 }]);
    }
    // Cancel: the CancelRequest goes to a third node, which knows nothing of the key.
    const third = cluster.nodes.find((n) => n !== owner && n !== entry) as HarnessNode;
    const sleeping = c.query('select pg_sleep(60)').then(
      () => 'finished',
      (err: { code?: string }) => err.code,
    );
    await sleep(500);
    const { processID, secretKey } = internals(c);
    const ca = (third.pgConfig(db, '').ssl as { ca: Buffer }).ca;
    await sendCancel({ port: third.port, ca } as never, db, processID, secretKey);
    expect(await sleeping).toBe('57014');
    expect((await c.query('select 1 as one')).rows).toEqual([{ one: 1 }]);
    await c.end();

    // COPY FROM STDIN through postgres.js over a forwarded session.
    const config = entry.pgConfig(db, PASSWORD);
    const sql = postgres({
      host: '127.0.0.1',
      port: entry.port,
      user: 'postgres',
      password: PASSWORD,
      database: 'postgres',
      ssl: config.ssl as { ca: Buffer; servername: string },
      max: 1,
      onnotice: () => undefined,
    });
    try {
      const writable = await sql`copy t (id, note) from stdin`.writable();
      await pipeline(Readable.from(Array.from({ length: 50 }, (_, i) => `${1000 + i}\tcopied\n`)), writable);
      const [row] = await sql`select count(*)::int as n from t where note = 'copied'`;
      expect(row?.n).toBe(50);
    } finally {
      await sql.end();
    }
  }, 120_000);

  it('a forwarded session whose owner stops answering ends with 08006 (paused owner, cut peer link)', async () => {
    // Ended rather than left hanging: the client reconnects and reaches the database's new owner.
    const outcome = (p: Promise<unknown>) =>
      p.then(
        () => 'answered',
        (err: { code?: string }) => err.code ?? 'closed',
      );
    for (const fault of ['pause', 'blackhole'] as const) {
      const db = `unanswered-${fault}`;
      await cluster.anyNode().createDatabase(db, PASSWORD);
      const setup = await connect(cluster.anyNode(), db);
      await setup.query('create table t (v int)');
      await setup.end();
      const { owner, entry } = await nonOwner(db);
      const c = await connect(entry, db);
      c.on('error', () => undefined);
      await c.query('select 1');
      if (fault === 'pause') owner.pause();
      else owner.faults.peers.fault('blackhole', 60_000);
      try {
        expect(await outcome(c.query('insert into t values (1)'))).toBe('08006');
        // The entry node ended it (its log line may reach us just after the client's error).
        const endedHere = () =>
          entry
            .logged('ending forwarded sessions')
            .some((e) => (e.dbs as string[] | undefined)?.includes(db));
        for (let i = 0; i < 100 && !endedHere(); i++) await sleep(100);
        expect(endedHere()).toBe(true);
      } finally {
        owner.resume();
        owner.faults.peers.heal();
      }
      // The database is served again, by whichever node owns it now.
      let served = false;
      for (let i = 0; i < 240 && !served; i++) {
        const again = await connect(entry, db).catch(() => undefined);
        served =
          (await again?.query('select count(*)::int as n from t').then(
            () => true,
            () => false,
          )) ?? false;
        await again?.end().catch(() => undefined);
        if (!served) await sleep(500);
      }
      expect(served).toBe(true);
    }
  }, 300_000);
});
