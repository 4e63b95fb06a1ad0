import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';
import { createGunzip } from 'node:zlib';
import { Parser } from 'tar';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unwrittenWalSegments } from '../../src/pgdata/wal-segments.js';
import { versionKey } from '../../src/storage/version-objects.js';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * BASE_BACKUP_WAL (issue 14): with WAL shipping, an open database gets a new base backup once
 * that much WAL was written since its last one (SNAPSHOT_INTERVAL is 0 by default then), and
 * retention keeps exactly the WAL pieces the kept bases need.
 */

let t: TestServer;
let archiveDir: string;

beforeAll(async () => {
  archiveDir = await mkdtemp(path.join(tmpdir(), 'gw-base-'));
  t = await startTestServer({
    ARCHIVE_URL: pathToFileURL(archiveDir).href,
    DURABILITY: 'async',
    WAL_SHIP_INTERVAL: '200ms',
    BASE_BACKUP_WAL: '3MB',
    KEEP_VERSIONS: '2',
  });
});

afterAll(async () => {
  await t?.close();
  if (archiveDir) await rm(archiveDir, { recursive: true, force: true });
});

describe('BASE_BACKUP_WAL', () => {
  it('takes a base after that much WAL, and keeps the WAL the kept bases need', async () => {
    const pw = await t.createDatabase('based');
    const initial = (await t.server.catalog.listVersions('based')).length;
    await withClient(t.pgConfig('based', pw), async (c) => {
      await c.query('create table filler (n int, pad text)');
      // A little under the bound: no base yet (nothing else takes one in this mode).
      await c.query("insert into filler select g, repeat('p', 500) from generate_series(1, 2000) g");
      await new Promise((r) => setTimeout(r, 3_000));
      expect((await t.server.catalog.listVersions('based')).length).toBe(initial);
      const newest = async () => (await t.server.catalog.listVersions('based'))[0]?.version;
      let last = await newest();
      for (let round = 0; round < 3; round++) {
        // ~4 MB of WAL: past the bound, so a base follows within a check or two.
        await c.query("insert into filler select g, repeat('q', 500) from generate_series(1, 8000) g");
        let current = last;
        for (let i = 0; i < 100 && current === last; i++) {
          await new Promise((r) => setTimeout(r, 200));
          current = await newest();
        }
        expect(current, `round ${round}`).not.toBe(last);
        last = current;
      }
    });
    const versions = await t.server.catalog.listVersions('based');
    expect(versions.length).toBe(2);
    expect(versions[0]?.version).not.toBe(versions[1]?.version);
    // Every piece left is one a kept base may need; older ones were purged with their bases.
    const oldest = versions.at(-1);
    const pieces = await t.server.catalog.listWal('based');
    expect(pieces.length).toBeGreaterThan(0);
    for (const piece of pieces) expect(piece.writtenAt >= (oldest?.walSince ?? new Date(0))).toBe(true);
  });

  it('a database opened and closed without writes gets a new base once WAL pieces pile up after its newest', async () => {
    const pw = await t.createDatabase('reopened');
    const bases = async () => (await t.server.catalog.listVersions('reopened')).length;
    const initial = await bases();
    const piecesAfterNewest = async () => {
      const newest = (await t.server.catalog.listVersions('reopened'))[0];
      const pieces = await t.server.catalog.listWal('reopened');
      return pieces.filter((p) => p.writtenAt > (newest?.walSince ?? new Date(0))).length;
    };
    // Each open and close ships its checkpoint records; no client writes anything.
    let cycles = 0;
    for (; cycles < 30 && (await bases()) === initial; cycles++) {
      await withClient(t.pgConfig('reopened', pw), (c) => c.query('select 1'));
      await t.server.registry.close('reopened');
      expect(await piecesAfterNewest()).toBeLessThanOrEqual(8);
    }
    expect(await bases()).toBeGreaterThan(initial);
    // Not on every close: only once the pieces had piled up.
    expect(cycles).toBeGreaterThan(2);
    expect(await piecesAfterNewest()).toBe(0);
  });

  it('a base leaves out the WAL segments a checkpoint recycled, and the database comes back from it and goes on', async () => {
    const pw = await t.createDatabase('recycled');
    const config = t.pgConfig('recycled', pw);
    // ~6 MB of WAL, then a checkpoint: the segments it no longer needs are renamed for reuse.
    await withClient(config, async (c) => {
      await c.query('create table bulk (n int, pad text)');
      await c.query("insert into bulk select g, repeat('r', 400) from generate_series(1, 12000) g");
      await c.query('checkpoint');
    });
    await t.server.registry.close('recycled');
    const dir = path.join(t.dataDir, 'recycled');
    const recycled = await unwrittenWalSegments(dir);
    expect(recycled.length).toBeGreaterThan(0);
    // The newest base (taken at that close) holds none of them.
    const [base] = await t.server.catalog.listVersions('recycled');
    const members: string[] = [];
    await pipeline(
      createReadStream(path.join(archiveDir, versionKey('recycled', base?.version ?? ''))),
      createGunzip(),
      new Parser({
        onReadEntry: (entry) => {
          members.push(entry.path);
          entry.resume();
        },
      }),
    );
    expect(members.some((m) => m.startsWith('pg_wal/'))).toBe(true);
    for (const segment of recycled) expect(members).not.toContain(segment);
    // Dropped locally, fetched back: every row, and writes go on past the segments left out.
    await t.server.registry.whileUnused('recycled', () => rm(dir, { recursive: true, force: true }));
    await withClient(config, async (c) => {
      expect((await c.query('select count(*)::int as n from bulk')).rows[0].n).toBe(12000);
      await c.query("insert into bulk select g, repeat('s', 400) from generate_series(12001, 24000) g");
    });
    await t.server.registry.close('recycled');
    await withClient(config, async (c) => {
      expect((await c.query('select count(*)::int as n from bulk')).rows[0].n).toBe(24000);
    });
  });
});
