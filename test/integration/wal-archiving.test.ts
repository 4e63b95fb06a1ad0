import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.js';
import { createTestDatabase, startPostgres, type TestPostgres } from '../helpers/postgres.js';

/**
 * Continuous WAL archiving (issue 14), node loss: a write load with client-side sequence numbers,
 * kill -9, the whole DATA_DIR deleted, a fresh server on the same archive and catalog. With
 * DURABILITY=async every commit acknowledged more than WAL_SHIP_INTERVAL + 1 s before the kill is
 * back; with sync every acknowledged commit is. (The catalog is an external PostgreSQL 15 here:
 * archiving the embedded catalog is not built yet.)
 */

const SHIP_INTERVAL_MS = 300;
const LOAD_MS = 6_000;
const CLIENTS = 4;

let catalog: TestPostgres;
let root: string;
const running = new Set<GatewayProcess>();

beforeAll(async () => {
  catalog = await startPostgres();
  root = await mkdtemp(path.join(tmpdir(), 'gw-wal-'));
}, 120_000);

afterAll(async () => {
  for (const g of running) await g.close(0).catch(() => undefined);
  await catalog?.stop();
  if (root && !process.env.KEEP_WAL_TEST) await rm(root, { recursive: true, force: true });
});

interface Ack {
  client: number;
  seq: number;
  at: number;
}

/** CLIENTS clients insert (client, seq) rows in autocommit, recording when each was acknowledged. */
async function writeLoad(g: GatewayProcess, id: string, password: string, untilMs: number): Promise<Ack[]> {
  const acks: Ack[] = [];
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, client) => {
      const c = new pg.Client(g.pgConfig(id, password));
      c.on('error', () => undefined);
      await c.connect();
      try {
        for (let seq = 1; Date.now() < untilMs; seq++) {
          await c.query('insert into ledger (client, seq) values ($1, $2)', [client, seq]);
          acks.push({ client, seq, at: Date.now() });
        }
      } catch {
        // The server was killed under us: the acknowledged ones are what counts.
      } finally {
        await c.end().catch(() => undefined);
      }
    }),
  );
  return acks;
}

describe.each(['async', 'sync'] as const)('DURABILITY=%s: node loss', (mode) => {
  it('a fresh server on the same archive has every commit it must have, and a consistent database', async () => {
    const dataDir = path.join(root, `data-${mode}`);
    const env = {
      DATA_DIR: dataDir,
      CATALOG_URL: await createTestDatabase(catalog.url),
      ARCHIVE_URL: pathToFileURL(path.join(root, `archive-${mode}`)).href,
      DURABILITY: mode,
      WAL_SHIP_INTERVAL: `${SHIP_INTERVAL_MS}ms`,
      FSYNC: 'on',
    };
    const first = await startGatewayProcess({ env, templateDir: inject('templateDir') });
    running.add(first);
    const id = `loss-${mode}`;
    const password = 'node-loss-password';
    await first.createDatabase(id, password);
    const setup = new pg.Client(first.pgConfig(id, password));
    await setup.connect();
    await setup.query(
      'create table ledger (client int not null, seq int not null, primary key (client, seq))',
    );
    await setup.end();

    const load = writeLoad(first, id, password, Date.now() + LOAD_MS + 60_000);
    await new Promise((r) => setTimeout(r, LOAD_MS));
    const killedAt = Date.now();
    process.kill(first.pid, 'SIGKILL');
    const acks = await load;
    running.delete(first);
    await first.close(0).catch(() => undefined);
    await rm(dataDir, { recursive: true, force: true });
    expect(acks.length).toBeGreaterThan(20);

    const second = await startGatewayProcess({ env, templateDir: inject('templateDir') });
    running.add(second);
    const c = new pg.Client(second.pgConfig(id, password));
    await c.connect();
    const { rows } = await c.query<{ client: number; seq: number }>('select client, seq from ledger');
    await c.end();
    const present = new Set(rows.map((r) => `${r.client}:${r.seq}`));
    const mustHave = acks.filter((a) => (mode === 'sync' ? true : a.at < killedAt - SHIP_INTERVAL_MS - 1000));
    const lost = mustHave.filter((a) => !present.has(`${a.client}:${a.seq}`));
    if (process.env.KEEP_WAL_TEST)
      (await import('node:fs')).writeFileSync(
        `/tmp/wal-lost-${mode}.json`,
        JSON.stringify({ killedAt, lost, last: acks.slice(-12), second: second.tail(80) }, null, 1),
      );
    expect(lost, `${lost.length} of ${mustHave.length} acknowledged commits lost`).toEqual([]);
    // Consistent: each client's rows are 1..n with no hole (commits replay in order).
    for (let client = 0; client < CLIENTS; client++) {
      const seqs = rows.filter((r) => r.client === client).map((r) => r.seq);
      expect(seqs.length === 0 || Math.max(...seqs) === seqs.length, `client ${client}`).toBe(true);
    }
    running.delete(second);
    await second.close();
  }, 180_000);
});
