import { createHash } from 'node:crypto';
import { cp, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../src/databases/wal-shipping.js';
import { createLogger } from '../../src/log.js';
import type { ArchiveStore } from '../../src/storage/archive.js';
import { openArchive } from '../../src/storage/open-archive.js';
import { WalCorruptError, WalObjects } from '../../src/storage/wal-objects.js';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * A WAL piece whose bytes do not match the sha256 recorded in the catalog (corrupted, or cut short
 * by a faulty upload) is detected before a byte of it is written into pg_wal: the replay fails
 * loudly instead of replaying it.
 */

let t: TestServer;
let archiveDir: string;
let archive: ArchiveStore;
let wal: WalObjects;
let scratch: string;

beforeAll(async () => {
  archiveDir = await mkdtemp(path.join(tmpdir(), 'gw-walsum-'));
  scratch = await mkdtemp(path.join(tmpdir(), 'gw-walsum-dir-'));
  const url = pathToFileURL(archiveDir).href;
  t = await startTestServer({ ARCHIVE_URL: url, DURABILITY: 'async', WAL_SHIP_INTERVAL: '100ms' });
  const pw = await t.createDatabase('summed');
  const end = await withClient(t.pgConfig('summed', pw), async (c) => {
    await c.query('create table t as select g from generate_series(1, 1000) g');
    return parseLsn((await c.query('select pg_current_wal_lsn()::text as l')).rows[0].l) ?? 0n;
  });
  for (let i = 0; i < 100; i++) {
    const pieces = await t.server.catalog.listWal('summed');
    if (pieces.some((p) => p.endLsn >= end)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  archive = (await openArchive(url)) as ArchiveStore;
  wal = new WalObjects({
    archive,
    catalog: t.server.catalog,
    logger: createLogger({ level: 'silent', pretty: false }),
  });
  // A copy of the database to replay into.
  await cp(path.join(t.dataDir, 'summed'), path.join(scratch, 'db'), { recursive: true });
}, 120_000);

afterAll(async () => {
  await archive?.close();
  await t?.close();
  for (const dir of [archiveDir, scratch]) if (dir) await rm(dir, { recursive: true, force: true });
});

async function walHash(): Promise<string> {
  const hash = createHash('sha256');
  const dir = path.join(scratch, 'db', 'pg_wal');
  for (const name of (await readdir(dir)).sort()) {
    if (/^[0-9A-F]{24}$/.test(name)) hash.update(name).update(await readFile(path.join(dir, name)));
  }
  return hash.digest('hex');
}

describe('WAL piece checksums', () => {
  it.each([
    [
      'a flipped byte',
      async (file: string) => {
        const bytes = await readFile(file);
        const at = Math.floor(bytes.length / 2);
        bytes.writeUInt8(bytes.readUInt8(at) ^ 0xff, at);
        await writeFile(file, bytes);
      },
    ],
    ['a truncated piece', async (file: string) => truncate(file, 100)],
  ])('refuses to replay %s, writing nothing', async (_name, damage) => {
    const [first] = await t.server.catalog.listWal('summed');
    expect(first).toBeDefined();
    if (!first) return;
    const file = path.join(archiveDir, ...first.key.split('/'));
    const original = await readFile(file);
    const before = await walHash();
    await damage(file);
    try {
      const replay = wal.replayInto('summed', path.join(scratch, 'db'), {
        walSince: new Date(0),
        walLsn: 0n,
      });
      await expect(replay).rejects.toBeInstanceOf(WalCorruptError);
      expect(await walHash()).toBe(before);
    } finally {
      await writeFile(file, original);
    }
    // Intact again, the same piece replays.
    const { pieces } = await wal.replayInto('summed', path.join(scratch, 'db'), {
      walSince: new Date(0),
      walLsn: 0n,
    });
    expect(pieces).toBeGreaterThan(0);
  });
});
