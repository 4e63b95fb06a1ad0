import { lstat, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.js';
import { startS3, type TestS3 } from '../helpers/s3.js';

/**
 * Local copies are a cache when an archive is set (issue 14): closed databases idle for
 * LOCAL_EVICT_AFTER, or past LOCAL_DISK_MAX, leave DATA_DIR once everything they hold is archived,
 * and come back (with their data) on the next connection. An open database, and one whose close
 * snapshot could not be stored, keep their copy.
 */

let s3: TestS3;
let root: string;
const running = new Set<GatewayProcess>();

beforeAll(async () => {
  s3 = await startS3();
  root = await mkdtemp(path.join(tmpdir(), 'gw-local-cache-'));
}, 60_000);

afterAll(async () => {
  for (const g of running) await g.close(0).catch(() => undefined);
  await s3?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

async function start(
  prefix: string,
  extra: Record<string, string>,
): Promise<{ g: GatewayProcess; dataDir: string }> {
  const dataDir = path.join(root, `${prefix}-data`);
  const g = await startGatewayProcess({
    templateDir: inject('templateDir'),
    env: {
      DATA_DIR: dataDir,
      ...s3.env(prefix),
      IDLE_TIMEOUT: '300ms',
      ...extra,
    },
  });
  running.add(g);
  return { g, dataDir };
}

const present = (dir: string) =>
  lstat(dir).then(
    () => true,
    () => false,
  );

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function query<T>(g: GatewayProcess, id: string, sql: string): Promise<T[]> {
  const c = new pg.Client(g.pgConfig(id, `password-of-${id}`));
  await c.connect();
  try {
    return (await c.query(sql)).rows as T[];
  } finally {
    await c.end();
  }
}

describe('local copies as a cache', () => {
  it('idle closed copies leave DATA_DIR and come back with their data; open and unarchived ones stay', async () => {
    const { g, dataDir } = await start('idle', { LOCAL_EVICT_AFTER: '1s' });
    const ids = ['lc-idle-a', 'lc-idle-b', 'lc-open', 'lc-unarchived'];
    // The unarchived one's close snapshot cannot be stored (its creation snapshot goes through first).
    for (const id of ids) await g.createDatabase(id, `password-of-${id}`);
    for (const id of ids) await query(g, id, `create table t as select '${id}' as v`);
    s3.proxy.fail(10_000, { method: 'PUT', path: /\/lc-unarchived\/.*\.tar\.gz/ });
    const holder = new pg.Client(g.pgConfig('lc-open', 'password-of-lc-open'));
    await holder.connect();
    try {
      await waitUntil(
        'the idle archived copies are dropped',
        async () =>
          !(await present(path.join(dataDir, 'lc-idle-a'))) &&
          !(await present(path.join(dataDir, 'lc-idle-b'))),
      );
      // Several more sweeps: the open one and the unarchived one are still there.
      await new Promise((r) => setTimeout(r, 2_000));
      expect(await present(path.join(dataDir, 'lc-open'))).toBe(true);
      expect(await present(path.join(dataDir, 'lc-unarchived'))).toBe(true);
      expect((await holder.query('select v from t')).rows).toEqual([{ v: 'lc-open' }]);
    } finally {
      await holder.end();
      s3.proxy.clear();
    }
    for (const id of ['lc-idle-a', 'lc-idle-b', 'lc-unarchived'])
      expect(await query(g, id, 'select v from t'), id).toEqual([{ v: id }]);
    running.delete(g);
    await g.close();
  }, 180_000);

  it('past LOCAL_DISK_MAX, closed archived copies are dropped least recently used first', async () => {
    // A cap below one database: every closed, archived copy goes, however recent.
    const { g, dataDir } = await start('cap', { LOCAL_EVICT_AFTER: '24h', LOCAL_DISK_MAX: '1MB' });
    for (const id of ['lc-cap-a', 'lc-cap-b']) {
      await g.createDatabase(id, `password-of-${id}`);
      await query(g, id, `create table t as select '${id}' as v`);
    }
    await waitUntil(
      'the copies past the cap are dropped',
      async () =>
        !(await present(path.join(dataDir, 'lc-cap-a'))) && !(await present(path.join(dataDir, 'lc-cap-b'))),
    );
    expect(await query(g, 'lc-cap-b', 'select v from t')).toEqual([{ v: 'lc-cap-b' }]);
    running.delete(g);
    await g.close();
  }, 180_000);
});
