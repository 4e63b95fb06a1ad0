import { createScramSha256Data } from 'pg-gateway';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Catalog, FencedError, type SqlClient } from '../../src/catalog/catalog.js';
import { openPostgresCatalog, openPostgresSqlClient } from '../../src/catalog/postgres.js';
import { Coordination } from '../../src/cluster/coordination.js';
import { fencedCatalog } from '../../src/cluster/fenced-catalog.js';
import { createTestDatabase, startPostgres, type TestPostgres } from '../helpers/postgres.js';

/**
 * Membership, compare-and-swap claims, generations and the archive-record fence against a real
 * PostgreSQL 15 catalog (the coordination store of cluster mode).
 */

const TTL = 600;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let pgServer: TestPostgres;
let catalog: Catalog;
let sql: SqlClient;
let a: Coordination;
let b: Coordination;
let seq = 0n;

const wal = (databaseId: string, fence?: { nodeId: string; generation: bigint }) => {
  seq++;
  return {
    databaseId,
    startLsn: seq * 8192n,
    endLsn: seq * 8192n + 100n,
    key: `${databaseId}/wal/${seq}`,
    sha256: 'ab'.repeat(32),
    sizeBytes: 100,
    seq,
    ...(fence ? { fence } : {}),
  };
};

const createDb = async (id: string) => {
  await catalog.createDatabase({ id, username: 'u', scram: await createScramSha256Data('password-123456') });
};

const beat = (c: Coordination) => c.heartbeat({ address: '127.0.0.1:1', openDatabases: 0, draining: false });

beforeAll(async () => {
  pgServer = await startPostgres();
  const url = await createTestDatabase(pgServer.url);
  catalog = await openPostgresCatalog(url);
  sql = openPostgresSqlClient(url);
  a = new Coordination(sql, 'node-a', TTL);
  b = new Coordination(sql, 'node-b', TTL);
}, 60_000);

afterAll(async () => {
  await sql?.close();
  await catalog?.close();
  await pgServer?.stop();
});

describe('cluster coordination (PostgreSQL 15 catalog)', () => {
  it('claims only without a live owner, bumps the generation on every change, and fences stale writers', async () => {
    await createDb('c1');
    await beat(a);
    await beat(b);
    const first = await a.claim('c1');
    expect(first).toMatchObject({ generation: 1n, tookOver: false });
    expect(await b.claim('c1')).toBeUndefined();
    expect((await b.placement('c1'))?.owner).toBe('node-a');
    expect(await beat(a)).toEqual(new Map([['c1', 1n]]));

    // The owner's records pass at its generation; a stale generation or another node is refused.
    expect(await catalog.addWal(wal('c1', { nodeId: 'node-a', generation: 1n }))).toBe(true);
    await expect(catalog.addWal(wal('c1', { nodeId: 'node-b', generation: 1n }))).rejects.toBeInstanceOf(
      FencedError,
    );
    await expect(catalog.addWal(wal('c1', { nodeId: 'node-a', generation: -1n }))).rejects.toBeInstanceOf(
      FencedError,
    );

    // node-a stops heartbeating: after the TTL node-b may take over with generation 2.
    for (let i = 0; i < 50 && (await b.placement('c1'))?.ownerAlive; i++) await sleep(100);
    await beat(b);
    const second = await b.claim('c1');
    expect(second).toMatchObject({ generation: 2n, tookOver: true, localCopyCurrent: false });
    // The former owner's late writes are refused; the new owner's pass.
    await expect(catalog.addWal(wal('c1', { nodeId: 'node-a', generation: 1n }))).rejects.toBeInstanceOf(
      FencedError,
    );
    await expect(
      catalog.addVersion({
        databaseId: 'c1',
        version: 'v-stale',
        sha256: 'ab'.repeat(32),
        sizeBytes: 1,
        fence: { nodeId: 'node-a', generation: 1n },
      }),
    ).rejects.toBeInstanceOf(FencedError);
    const version = await catalog.addVersion({
      databaseId: 'c1',
      version: 'v-new',
      sha256: 'ab'.repeat(32),
      sizeBytes: 1,
      fence: { nodeId: 'node-b', generation: 2n },
    });
    expect(version?.version).toBe('v-new');
    expect(await catalog.addWal(wal('c1', { nodeId: 'node-b', generation: 2n }))).toBe(true);
    expect((await catalog.listWal('c1')).length).toBe(2);
    // node-a comes back: the heartbeat tells it that it owns nothing now.
    expect(await beat(a)).toEqual(new Map());

    // Release and re-claim: the releaser's local copy is current; anyone else's is not.
    expect(await a.release('c1', 1n)).toBe(false);
    expect(await b.release('c1', 2n)).toBe(true);
    expect(await b.claim('c1')).toMatchObject({ generation: 3n, localCopyCurrent: true, tookOver: false });
    expect(await b.release('c1', 3n)).toBe(true);
    await beat(a);
    expect(await a.claim('c1')).toMatchObject({ generation: 4n, localCopyCurrent: false });
  });

  it('lets exactly one of many concurrent claims win', async () => {
    await createDb('c2');
    await beat(a);
    await beat(b);
    const claimers = Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b));
    const results = await Promise.all(claimers.map((c) => c.claim('c2')));
    // One node wins; only its own repeated claims (a restarted process re-claiming) pass after it.
    const winners = new Set(claimers.filter((_, i) => results[i] !== undefined));
    expect(winners.size).toBe(1);
    const placement = await a.placement('c2');
    expect(placement?.owner).toBe(winners.has(a) ? 'node-a' : 'node-b');
    expect(placement?.generation).toBe(BigInt(results.filter((r) => r !== undefined).length));
  });

  it('refuses a claim by a node whose own heartbeat is stale, and a claim of an unknown database', async () => {
    await createDb('c3');
    const c = new Coordination(sql, 'node-c', TTL);
    expect(await c.claim('c3')).toBeUndefined();
    await beat(c);
    expect(await c.claim('no-such-db')).toBeUndefined();
    expect(await c.claim('c3')).toMatchObject({ generation: 1n });
  });

  it('accepts records for an unowned database at generation -1 only while nobody owns it', async () => {
    await createDb('c4');
    expect(await catalog.addWal(wal('c4', { nodeId: 'node-a', generation: -1n }))).toBe(true);
    await beat(b);
    await b.claim('c4');
    await expect(catalog.addWal(wal('c4', { nodeId: 'node-a', generation: -1n }))).rejects.toBeInstanceOf(
      FencedError,
    );
  });

  it('the fenced catalog wrapper adds the fence and refuses pruning for a stale owner', async () => {
    await createDb('c5');
    await beat(a);
    const claim = await a.claim('c5');
    let generation = claim?.generation ?? 0n;
    const wrapped = fencedCatalog(catalog, () => ({ nodeId: 'node-a', generation }));
    expect(await wrapped.addWal(wal('c5'))).toBe(true);
    expect((await wrapped.listWal('c5')).length).toBe(1);
    generation = -2n;
    await expect(wrapped.addWal(wal('c5'))).rejects.toBeInstanceOf(FencedError);
    await expect(wrapped.deleteWalBefore('c5', new Date())).rejects.toBeInstanceOf(FencedError);
  });

  it('transfers a database straight to another node (db move), which must not trust its local copy', async () => {
    await createDb('c6');
    await beat(a);
    await beat(b);
    const claim = await a.claim('c6');
    expect(await a.transfer('c6', 99n, 'node-b')).toBeUndefined();
    const moved = await a.transfer('c6', claim?.generation ?? 0n, 'node-b');
    expect(moved).toBe((claim?.generation ?? 0n) + 1n);
    expect((await a.placement('c6'))?.owner).toBe('node-b');
    // Nobody else can claim it in between; the target re-claiming learns its copy is not current.
    expect(await a.claim('c6')).toBeUndefined();
    expect(await b.claim('c6')).toMatchObject({ localCopyCurrent: false });
  });

  it('lists nodes with liveness judged by the catalog clock', async () => {
    await beat(a);
    const nodes = await a.nodes();
    expect(nodes.find((n) => n.id === 'node-a')?.alive).toBe(true);
    const placements = await a.placements();
    expect(placements.map((p) => p.databaseId)).toContain('c1');
  });
});
