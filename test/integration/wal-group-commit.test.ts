import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../src/databases/wal-shipping.js';
import { createTestDatabase, startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * DURABILITY=sync group commit (issue 14): a unit waits for the archive after it gave the
 * database's session back, so the commits of clients that wait together ship together. With the
 * wait inside the session hold every commit would need a shipment of its own (as many WAL pieces
 * as commits); here 8 clients committing at once need far fewer. And a reply never comes before
 * its WAL is in the archive. (wal-outage.test.ts: a streamed reply's COMMIT waits as well.)
 */

const CLIENTS = 8;
const COMMITS_PER_CLIENT = 25;

let catalog: TestPostgres;
let t: TestServer;
let archiveDir: string;
let pw: string;

beforeAll(async () => {
  archiveDir = await mkdtemp(path.join(tmpdir(), 'gw-group-'));
  // An external catalog: the embedded one runs in the event loop and would serialise shipments.
  catalog = await startPostgres();
  t = await startTestServer({
    CATALOG_URL: await createTestDatabase(catalog.url),
    ARCHIVE_URL: pathToFileURL(archiveDir).href,
    DURABILITY: 'sync',
    // Shipments come from the commits' waits only.
    WAL_SHIP_INTERVAL: '1h',
    QUERY_WAIT_TIMEOUT: '20s',
    // Commits quicker than shipments, as with a remote archive.
    FSYNC: 'off',
  });
  pw = await t.createDatabase('grouped');
  await withClient(t.pgConfig('grouped', pw), (c) =>
    c.query('create table ledger (client int, seq int, primary key (client, seq))'),
  );
}, 120_000);

afterAll(async () => {
  await t?.close();
  await catalog?.stop();
  if (archiveDir) await rm(archiveDir, { recursive: true, force: true });
});

/** CLIENTS clients commit `commits` rows each, all at once; `check` runs after each acknowledgement. */
async function load(clients: number, commits: number, check?: (lsn: bigint) => Promise<void>) {
  let acknowledged = 0;
  await Promise.all(
    Array.from({ length: clients }, async (_, client) => {
      const c = new pg.Client(t.pgConfig('grouped', pw));
      await c.connect();
      try {
        for (let seq = 1; seq <= commits; seq++) {
          const { rows } = await c.query<{ lsn: string }>(
            'insert into ledger values ($1, $2) returning pg_current_wal_insert_lsn()::text as lsn',
            [client + clients * 100, seq],
          );
          acknowledged++;
          await check?.(parseLsn(rows[0]?.lsn) ?? 0n);
        }
      } finally {
        await c.end();
      }
    }),
  );
  return acknowledged;
}

const shippedEnd = async () =>
  (await t.server.catalog.listWal('grouped')).reduce((end, r) => (r.endLsn > end ? r.endLsn : end), 0n);

describe('DURABILITY=sync', () => {
  it('ships the commits of clients that wait together in one shipment', async () => {
    const before = (await t.server.catalog.listWal('grouped')).length;
    const acknowledged = await load(CLIENTS, COMMITS_PER_CLIENT);
    const shipments = (await t.server.catalog.listWal('grouped')).length - before;
    expect(acknowledged).toBe(CLIENTS * COMMITS_PER_CLIENT);
    // One shipment per commit means the waits did not group.
    expect(shipments, `${shipments} shipments for ${acknowledged} commits`).toBeLessThan(acknowledged * 0.8);
    expect(shipments).toBeGreaterThan(0);
  });

  it('acknowledges a commit only once its WAL is recorded as shipped', async () => {
    const unshipped: bigint[] = [];
    await load(2, 10, async (lsn) => {
      // The commit record follows the insert's position: the shipped WAL reaches past it.
      if ((await shippedEnd()) <= lsn) unshipped.push(lsn);
    });
    expect(unshipped).toEqual([]);
  });
});
