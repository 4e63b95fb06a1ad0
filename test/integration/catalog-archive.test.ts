import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.js';
import { startS3, type TestS3 } from '../helpers/s3.js';

/**
 * The embedded catalog is archived too (issue 14): a node with the EMBEDDED catalog is killed,
 * its whole DATA_DIR deleted, and a fresh node on the same s3rver archive gets back every
 * database (with its rows), credential (the old password logs in) and version. A second node on
 * the same archive while the first runs is refused with a clear message.
 */

let s3: TestS3;
let root: string;
const running = new Set<GatewayProcess>();

beforeAll(async () => {
  s3 = await startS3();
  root = await mkdtemp(path.join(tmpdir(), 'gw-catalog-archive-'));
}, 60_000);

afterAll(async () => {
  for (const g of running) await g.close(0).catch(() => undefined);
  await s3?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

function envFor(prefix: string, dataDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATA_DIR: dataDir,
    ...s3.env(prefix),
    DURABILITY: 'async',
    WAL_SHIP_INTERVAL: '300ms',
    CATALOG_LEASE_TTL: '2s',
    ...extra,
  };
}

async function start(env: Record<string, string>): Promise<GatewayProcess> {
  const g = await startGatewayProcess({ env, templateDir: inject('templateDir') });
  running.add(g);
  return g;
}

async function withClient<T>(
  g: GatewayProcess,
  id: string,
  password: string,
  fn: (c: pg.Client) => Promise<T>,
) {
  const c = new pg.Client(g.pgConfig(id, password));
  try {
    await c.connect();
    return await fn(c);
  } catch (err) {
    if (/internal error/.test(String(err))) throw new Error(`${err}\n${g.tail(40)}`);
    throw err;
  } finally {
    await c.end();
  }
}

const versionsOf = async (g: GatewayProcess, id: string): Promise<string[]> => {
  const res = await g.adminGet(`/v1/databases/${id}/versions`);
  expect(res.status, res.body).toBe(200);
  return (JSON.parse(res.body) as { versions: { version: string }[] }).versions.map((v) => v.version).sort();
};

describe('embedded catalog in the archive', () => {
  it('node loss: a fresh node with an empty DATA_DIR gets back every database, credential and version', async () => {
    const dataDir = path.join(root, 'loss-data');
    const env = envFor('loss', dataDir);
    const first = await start(env);
    const dbs = [
      { id: 'cat-loss-a', password: 'first-password-a' },
      { id: 'cat-loss-b', password: 'first-password-b' },
    ];
    for (const { id, password } of dbs) {
      await first.createDatabase(id, password);
      await withClient(first, id, password, async (c) => {
        await c.query('create table t (v text)');
        await c.query('insert into t values ($1)', [`row of ${id}`]);
      });
    }
    const versions = new Map<string, string[]>();
    for (const { id } of dbs) versions.set(id, await versionsOf(first, id));
    // Shipping is within WAL_SHIP_INTERVAL (catalog: half of it): give it a few intervals.
    await new Promise((r) => setTimeout(r, 2_000));
    process.kill(first.pid, 'SIGKILL');
    running.delete(first);
    await first.close(0).catch(() => undefined);
    await rm(dataDir, { recursive: true, force: true });

    const second = await start(env);
    for (const { id, password } of dbs) {
      const rows = await withClient(
        second,
        id,
        password,
        async (c) => (await c.query('select v from t')).rows,
      );
      expect(rows).toEqual([{ v: `row of ${id}` }]);
      const now = await versionsOf(second, id);
      for (const v of versions.get(id) ?? []) expect(now).toContain(v);
    }
    // The old password works and a wrong one does not: the verifier itself came back.
    await expect(withClient(second, 'cat-loss-a', 'not-the-password', async () => undefined)).rejects.toThrow(
      /password authentication failed/,
    );
    running.delete(second);
    await second.close();
  }, 180_000);

  it('node loss in DURABILITY=sync with the embedded catalog: every acknowledged commit is back', async () => {
    const dataDir = path.join(root, 'sync-data');
    const env = envFor('sync', dataDir, { DURABILITY: 'sync' });
    const first = await start(env);
    const id = 'cat-sync';
    const password = 'sync-password';
    await first.createDatabase(id, password);
    await withClient(first, id, password, (c) =>
      c.query('create table ledger (client int not null, seq int not null, primary key (client, seq))'),
    );
    const acked: string[] = [];
    const deadline = Date.now() + 4_000;
    const load = Promise.all(
      [0, 1].map(async (client) => {
        const c = new pg.Client(first.pgConfig(id, password));
        c.on('error', () => undefined);
        await c.connect();
        try {
          for (let seq = 1; seq < 100_000; seq++) {
            await c.query('insert into ledger values ($1, $2)', [client, seq]);
            acked.push(`${client}:${seq}`);
            if (Date.now() > deadline + 60_000) break;
          }
        } catch {
          // Killed under us: what was acknowledged is what counts.
        }
      }),
    );
    while (Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    process.kill(first.pid, 'SIGKILL');
    await load;
    running.delete(first);
    await first.close(0).catch(() => undefined);
    await rm(dataDir, { recursive: true, force: true });
    expect(acked.length).toBeGreaterThan(5);

    const second = await start(env);
    const rows = await withClient(
      second,
      id,
      password,
      async (c) => (await c.query<{ client: number; seq: number }>('select client, seq from ledger')).rows,
    );
    const present = new Set(rows.map((r) => `${r.client}:${r.seq}`));
    const lost = acked.filter((a) => !present.has(a));
    expect(lost, `${lost.length} of ${acked.length} acknowledged commits lost`).toEqual([]);
    running.delete(second);
    await second.close();
  }, 180_000);

  it('a second node on the same archive while the first runs is refused with a clear message; after a clean stop it may start', async () => {
    const env = envFor('twice', path.join(root, 'twice-a'));
    const first = await start(env);
    await first.createDatabase('cat-twice', 'twice-password');
    const otherEnv = { ...env, DATA_DIR: path.join(root, 'twice-b'), NODE_ID: 'second-node' };
    const refused = await start(otherEnv).then(
      () => 'started',
      (err: Error) => err.message,
    );
    expect(refused).toMatch(/embedded catalog of s3:\/\/archive\/twice.*is in use by node/);
    // The first node still serves.
    await withClient(first, 'cat-twice', 'twice-password', (c) => c.query('select 1'));
    running.delete(first);
    await first.close();
    // Released on a clean stop: the other node takes over without waiting, and sees the database.
    const second = await start(otherEnv);
    await withClient(second, 'cat-twice', 'twice-password', (c) => c.query('select 1'));
    running.delete(second);
    await second.close();
  }, 180_000);

  it('CATALOG_TAKEOVER past a running node: the taken-over node exits at once (code 3), writing nothing more', async () => {
    const env = envFor('takeover', path.join(root, 'takeover-a'));
    const first = await start(env);
    await first.createDatabase('cat-taken', 'taken-password');
    const second = await start({
      ...env,
      DATA_DIR: path.join(root, 'takeover-b'),
      NODE_ID: 'taking-node',
      CATALOG_TAKEOVER: 'true',
    });
    // The first node hears of the newer claim on its next renewal (a third of CATALOG_LEASE_TTL).
    for (let i = 0; i < 100 && first.alive(); i++) await new Promise((r) => setTimeout(r, 100));
    expect(first.exitStatus()).toBe('code 3');
    expect(first.tail(20)).toContain('fenced: exiting at once');
    running.delete(first);
    await withClient(second, 'cat-taken', 'taken-password', (c) => c.query('select 1'));
    running.delete(second);
    await second.close();
  }, 180_000);
});
