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
