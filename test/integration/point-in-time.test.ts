import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/** Issue 14: restore and branch to a point in time from the newest base plus shipped WAL. */

let t: TestServer;
let archiveDir: string;
let pw: string;

beforeAll(async () => {
  archiveDir = await mkdtemp(path.join(tmpdir(), 'gw-pitr-'));
  t = await startTestServer({
    ARCHIVE_URL: pathToFileURL(archiveDir).href,
    DURABILITY: 'async',
    WAL_SHIP_INTERVAL: '100ms',
  });
  pw = await t.createDatabase('pitr');
});
afterAll(async () => {
  await t?.close();
  if (archiveDir) await rm(archiveDir, { recursive: true, force: true });
});

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rowsOf = (id: string, password: string) =>
  withClient(t.pgConfig(id, password), async (c) =>
    (await c.query<{ n: number }>('select n from events order by n')).rows.map((r) => r.n),
  );

describe('point in time', () => {
  it('clones and restores exactly the commits made before the chosen time', async () => {
    await withClient(t.pgConfig('pitr', pw), async (c) => {
      await c.query('create table events (n int)');
      await c.query('insert into events values (1)');
      await pause(800); // shipped
    });
    const between = new Date();
    await pause(800);
    await withClient(t.pgConfig('pitr', pw), async (c) => {
      await c.query('insert into events values (2)');
      await pause(800);
    });

    const listed = (await (
      await fetch(`http://127.0.0.1:${t.server.adminPort}/v1/databases/pitr/versions`)
    ).json()) as { restorable: { earliest: string; latest: string } };
    expect(Date.parse(listed.restorable.earliest)).toBeLessThanOrEqual(between.getTime());
    expect(Date.parse(listed.restorable.latest)).toBeGreaterThan(between.getTime());

    // The newest state by default, a point in time on request; the source is untouched.
    await t.server.manager.clone('pitr', 'pitr-now', { password: 'clone-now-password' });
    expect(await rowsOf('pitr-now', 'clone-now-password')).toEqual([1, 2]);
    await t.server.manager.clone('pitr', 'pitr-then', { at: between, password: 'clone-then-password' });
    expect(await rowsOf('pitr-then', 'clone-then-password')).toEqual([1]);
    expect(await rowsOf('pitr', pw)).toEqual([1, 2]);

    // Restore through the admin API.
    const res = await fetch(`http://127.0.0.1:${t.server.adminPort}/v1/databases/pitr/restore`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ at: between.toISOString() }),
    });
    expect(res.status).toBe(200);
    expect(await rowsOf('pitr', pw)).toEqual([1]);
    // And the restored state is what the next restore or node loss starts from.
    await withClient(t.pgConfig('pitr', pw), async (c) => {
      await c.query('insert into events values (3)');
    });
    expect(await rowsOf('pitr', pw)).toEqual([1, 3]);
  });

  it('refuses a time before the first version, and a version with a time', async () => {
    await expect(t.server.manager.restore('pitr', undefined, new Date(0))).rejects.toThrow(/older than/);
    await expect(t.server.manager.restore('pitr', 'x', new Date())).rejects.toThrow(/either/);
  });
});
