import { lstat, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { adminClient } from '../helpers/admin-client.js';
import { printedPassword, runCli } from '../helpers/cli.js';
import { writeItemsDumps } from '../helpers/pglite-dumps.js';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * A real gateway without an archive (no ARCHIVE_URL): versions, restore and clone are refused with
 * a clear answer, uploads still install locally, through the real CLI against the running server's
 * socket and without a server, with tarballs made by a real PGlite's dumpDataDir(). The same
 * operations with an archive are in archive-gateway.test.ts.
 */

const NO_ARCHIVE = 'no archive configured (set ARCHIVE_URL)';

let root = '';
/** dumpDataDir('gzip') of a database whose table items holds 50 rows. */
let dumpGz = '';
/** dumpDataDir('none') of the same database after 25 more rows: 75. */
let dumpTar = '';

const exists = (p: string) =>
  lstat(p).then(
    () => true,
    () => false,
  );

async function count(config: pg.ClientConfig, table = 't'): Promise<number> {
  return withClient(config, async (c) => {
    const { rows } = await c.query<{ n: number }>(`select count(*)::int as n from ${table}`);
    return rows[0]?.n ?? -1;
  });
}

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'no-archive-test-'));
  ({ dumpGz, dumpTar } = await writeItemsDumps(root, inject('templateDir')));
});

afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('without an archive', { timeout: 60_000 }, () => {
  let t: TestServer;
  let admin: ReturnType<typeof adminClient>;
  let stopped = false;

  beforeAll(async () => {
    t = await startTestServer({ MAX_UPLOAD_BYTES: '45MB', SPARE_DATABASES: '0' });
    admin = adminClient(t);
  });

  afterAll(async () => {
    if (!stopped) await t?.close();
    else await rm(t.root, { recursive: true, force: true });
  });

  it('answers versions, restore and clone with a clear 400', async () => {
    // Answered before the database is even looked up.
    for (const [method, url, body] of [
      ['GET', '/v1/databases/plain/versions', undefined],
      ['POST', '/v1/databases/plain/restore', { version: '20250101T000000000Z-00000000' }],
      ['POST', '/v1/databases/plain/clone', { id: 'plain2' }],
    ] as const) {
      const res = await admin(method, url, body);
      expect(res.status, url).toBe(400);
      expect(res.json, url).toEqual({ error: NO_ARCHIVE });
    }
    const cli = await runCli(t.env, 'db', 'versions', 'plain');
    expect(cli).toMatchObject({ code: 1, stderr: `error: ${NO_ARCHIVE}\n` });
  });

  it('still installs uploads locally, and refuses one over MAX_UPLOAD_BYTES', async () => {
    const created = await runCli(t.env, 'upload', 'local-up', dumpGz, '--create');
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toContain('created database "local-up" from');
    expect(created.stdout).toContain('(no archive: local only)');
    const config = t.pgConfig('local-up', printedPassword(created.stdout));
    expect(await count(config, 'items')).toBe(50);

    // Larger than MAX_UPLOAD_BYTES: refused before a byte is read, and the CLI hears why.
    const big = path.join(t.root, 'big.tar');
    await writeFile(big, '');
    await truncate(big, 50_000_000);
    const refused = await runCli(t.env, 'upload', 'local-up', big);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      /error: upload rejected: larger than MAX_UPLOAD_BYTES \(45000000 bytes\)\n$/,
    );
    expect(await count(config, 'items')).toBe(50);
  });

  it('uploads without a running server (the CLI opens DATA_DIR itself)', async () => {
    await t.server.close();
    stopped = true;
    const created = await runCli(t.env, 'upload', 'offline', dumpTar, '--create', '--user', 'alice');
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toContain('postgres://alice:');
    expect(await exists(path.join(t.dataDir, 'offline', 'PG_VERSION'))).toBe(true);
  });
});
