import path from 'node:path';
import { NeonDbError, neonConfig, Pool } from '@neondatabase/serverless';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { type ClusterHarness, type HarnessNode, startClusterHarness } from '../helpers/cluster.js';
import { caFetch, caWebSocket, neon, neonUrl } from '../helpers/neon.js';

/**
 * The HTTPS front door in cluster mode: SQL over HTTP and Postgres over WebSocket sent to a node
 * that does not own the database run on its owner (over the internal listener), so serverless
 * code may use any node, like TCP clients.
 */

const PASSWORD = 'cluster-http-password-1';
let cluster: ClusterHarness;
let owner: HarnessNode;
let entry: HarnessNode;
const DB = 'httpdb';

beforeAll(async () => {
  cluster = await startClusterHarness({
    size: 2,
    leaseTtl: '2s',
    env: { DURABILITY: 'async' },
    templateDir: inject('templateDir'),
  });
  await cluster.anyNode().createDatabase(DB, PASSWORD);
  const setup = new pg.Client(cluster.anyNode().pgConfig(DB, PASSWORD));
  await setup.connect();
  await setup.query('create table notes (id int primary key, body text not null)');
  await setup.end();
  owner = (await cluster.ownerOf(DB)) as HarnessNode;
  entry = cluster.nodes.find((n) => n !== owner) as HarnessNode;
  // The driver's fetch and WebSocket go to the node that does not own the database.
  neonConfig.fetchEndpoint = () => `https://localhost:${entry.httpPort}/sql`;
  neonConfig.fetchFunction = caFetch(entry.tlsCa);
  neonConfig.webSocketConstructor = caWebSocket(entry.tlsCa);
  neonConfig.wsProxy = (host, port) => `localhost:${entry.httpPort}/v2?address=${host}:${port}`;
  neonConfig.useSecureWebSocket = true;
  neonConfig.pipelineConnect = 'password';
}, 240_000);

afterAll(async () => {
  await cluster?.close();
}, 60_000);

describe('cluster: the HTTPS front door of a node that does not own the database', () => {
  it('runs neon() queries, batches and errors on the owner', async () => {
    expect(entry.httpPort).toBeGreaterThan(0);
    const sql = neon(neonUrl(DB, PASSWORD));
    await sql`insert into notes values (${1}, ${'over http'})`;
    expect(await sql`select id, body from notes order by id`).toEqual([{ id: 1, body: 'over http' }]);
    const [inserted, counted] = await sql.transaction(
      [sql`insert into notes values (2, 'batch') returning id`, sql`select count(*)::int as n from notes`],
      { isolationLevel: 'Serializable' },
    );
    expect(inserted).toEqual([{ id: 2 }]);
    expect(counted).toEqual([{ n: 2 }]);
    // A failing batch rolls back on the owner too.
    const failed = await sql
      .transaction([sql`insert into notes values (3, 'gone')`, sql`select * from no_such_table`])
      .catch((err: unknown) => err);
    expect(failed).toBeInstanceOf(NeonDbError);
    expect((failed as NeonDbError).code).toBe('42P01');
    expect(await sql`select count(*)::int as n from notes`).toEqual([{ n: 2 }]);
    // Still owned by the same node, which is where it ran (the entry node never opened it).
    expect((await cluster.placement(DB))?.owner).toBe(owner.id);
    expect(entry.logged('client forwarded to the owner').some((e) => e.db === DB)).toBe(true);
  });

  it('a wrong password is refused at the entry node, as on TCP', async () => {
    const err = await neon(neonUrl(DB, 'wrong-password-123'))`select 1`.catch((e: unknown) => e);
    expect((err as NeonDbError).code).toBe('28P01');
  });

  it('serves a WebSocket Pool with transactions through the owner', async () => {
    const pool = new Pool({ connectionString: neonUrl(DB, PASSWORD) });
    try {
      const client = await pool.connect();
      await client.query('begin');
      await client.query('insert into notes values ($1, $2)', [10, 'over ws']);
      await client.query('commit');
      client.release();
      const { rows } = await pool.query('select body from notes where id = 10');
      expect(rows).toEqual([{ body: 'over ws' }]);
    } finally {
      await pool.end();
    }
    expect((await cluster.placement(DB))?.owner).toBe(owner.id);
  });
});

describe('cluster: db move and node drain from the CLI', () => {
  const cli = (node: HarnessNode, ...args: string[]) =>
    runCli({ DATA_DIR: path.join(node.root, node.id) }, ...args);

  it('node drain hands the databases over; db move brings one back; no data is lost', async () => {
    const sql = neon(neonUrl(DB, PASSWORD));
    const before = await sql`select count(*)::int as n from notes`;
    const drained = await cli(owner, 'node', 'drain');
    expect(drained.stderr).toBe('');
    expect(drained.stdout).toContain(`${DB}: moved to ${entry.id}`);
    expect(drained.code).toBe(0);
    expect((await cluster.placement(DB))?.owner).toBe(entry.id);
    expect(await sql`select count(*)::int as n from notes`).toEqual(before);
    // On a node that does not own it, db move says who does.
    const refused = await cli(owner, 'db', 'move', DB, owner.id);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`owned by ${entry.id}`);
    const moved = await cli(entry, 'db', 'move', DB, owner.id);
    expect(moved.stdout).toContain(`moved database "${DB}" to ${owner.id}`);
    expect((await cluster.placement(DB))?.owner).toBe(owner.id);
    await sql`insert into notes values (20, 'after the moves')`;
    expect(await sql`select count(*)::int as n from notes`).toEqual([{ n: (before[0]?.n as number) + 1 }]);
    // An unknown node command is a usage error.
    const usage = await cli(owner, 'node', 'rebalance');
    expect(usage.code).toBe(2);
  });
});

describe('cluster: admin commands that rewrite a database run on its owner', () => {
  const json = async (node: HarnessNode, method: string, route: string, body?: unknown) => {
    const res = await node.request(method, route, body, 120_000);
    return { status: res.status, body: res.body ? (JSON.parse(res.body) as Record<string, unknown>) : {} };
  };

  it('refuses restore, upload and delete with 409 naming the owner; clone claims the new database; restore works on the owner', async () => {
    const ownerNow = (await cluster.ownerOf(DB)) as HarnessNode;
    const other = cluster.nodes.find((n) => n !== ownerNow) as HarnessNode;
    const { body: listed } = await json(other, 'GET', `/v1/databases/${DB}/versions`);
    const versions = (listed.versions as { version: string; createdAt: string }[]).toSorted((a, b) =>
      a.createdAt.localeCompare(b.createdAt),
    );
    const oldest = versions[0]?.version as string;
    expect(oldest).toBeDefined();

    const refusedRestore = await json(other, 'POST', `/v1/databases/${DB}/restore`, { version: oldest });
    expect(refusedRestore.status).toBe(409);
    expect(String(refusedRestore.body.error)).toContain(`served by node ${ownerNow.id}`);
    expect((await json(other, 'DELETE', `/v1/databases/${DB}`)).status).toBe(409);
    const upload = await other.request('PUT', `/v1/databases/${DB}/upload`, 'not a tarball');
    expect(upload.status).toBe(409);
    // Nothing changed: the owner still serves every row.
    const sql = neon(neonUrl(DB, PASSWORD));
    const rows = await sql`select count(*)::int as n from notes`;
    expect((rows[0]?.n as number) > 0).toBe(true);

    // A clone is a new database: the node that makes it owns it, and every node serves it.
    const cloned = await json(other, 'POST', `/v1/databases/${DB}/clone`, {
      id: 'httpclone',
      password: PASSWORD,
    });
    expect(cloned.status).toBe(201);
    expect((await cluster.placement('httpclone'))?.owner).toBe(other.id);
    const c = new pg.Client(ownerNow.pgConfig('httpclone', PASSWORD));
    await c.connect();
    expect((await c.query('select count(*)::int as n from notes')).rows).toEqual(rows);
    await c.end();

    // On the owner: the restore takes effect, seen through the other node.
    const restored = await json(ownerNow, 'POST', `/v1/databases/${DB}/restore`, { version: oldest });
    expect(restored.status).toBe(200);
    expect(await sql`select to_regclass('notes')::text as t`).toEqual([{ t: null }]);
    expect((await cluster.placement(DB))?.owner).toBe(ownerNow.id);
  });
});
