import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { psqlConninfo } from '../helpers/clients.js';
import { psql, sqlstateOf, startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * Every database of a node shares its disk: one tenant filling it would fail every other
 * database's writes (and Postgres PANICs when it cannot write WAL). MAX_DATABASE_SIZE bounds what
 * one database's tables, indexes and temporary files take; past it, a statement that needs more
 * gets 53100 and the database goes on.
 */

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ MAX_DATABASE_SIZE: '40MiB', SPARE_DATABASES: '0' });
});
afterAll(async () => {
  await t?.close();
});

// ~4 MB of rows per statement.
const FILL = "insert into filler select i, repeat('x', 400) from generate_series(1, 10000) i";

describe('MAX_DATABASE_SIZE', () => {
  it('refuses growth past it with 53100; reads, deletes and other databases go on', async () => {
    const pw = await t.createDatabase('size-full');
    const other = await t.createDatabase('size-other');
    await withClient(t.pgConfig('size-full', pw), async (c) => {
      await c.query('create table filler (i int, pad text)');
      await c.query('create table kept (v int)');
      await c.query('insert into kept values (1)');
      let refused: string | undefined;
      let inserts = 0;
      for (; inserts < 20 && refused === undefined; inserts++) refused = await sqlstateOf(c.query(FILL));
      expect(refused).toBe('53100');
      expect(inserts).toBeGreaterThan(1);
      // The failed statement wrote nothing visible; what was committed before stays readable.
      const rows = (await c.query('select count(*)::int as n from filler')).rows[0].n;
      expect(rows % 10000).toBe(0);
      expect((await c.query('select v from kept')).rows).toEqual([{ v: 1 }]);
      // Temporary files count too: a sort that spills is refused the same way.
      await c.query("set work_mem = '64kB'");
      expect(
        await sqlstateOf(c.query('select i from generate_series(1, 3000000) i order by i desc limit 1')),
      ).toBe('53100');
      await c.query('reset work_mem');
      // COPY extends a table many pages at a time (posix_fallocate, an ftruncate in WASM).
      const file = path.join(t.root, 'rows.csv');
      await writeFile(file, Array.from({ length: 20000 }, (_, i) => `${i},${'z'.repeat(400)}\n`).join(''));
      const copied = await psql(psqlConninfo(t, 'size-full'), ['-c', `\\copy filler from '${file}' csv`], {
        PGPASSWORD: pw,
      });
      expect(copied.code).not.toBe(0);
      expect(copied.stderr).toMatch(/could not extend file/);
      expect((await c.query('select count(*)::int as n from filler')).rows[0].n).toBe(rows);
      // Giving space back lets writes in again.
      await c.query('truncate filler');
      await c.query(FILL);
      expect((await c.query('select count(*)::int as n from filler')).rows[0].n).toBe(10000);
    });
    // Another database of the node is not limited by this one's use.
    await withClient(t.pgConfig('size-other', other), async (c) => {
      await c.query('create table t (pad text)');
      await c.query("insert into t select repeat('y', 400) from generate_series(1, 10000)");
      expect((await c.query('select count(*)::int as n from t')).rows[0].n).toBe(10000);
    });
    expect(t.errorLogs).toEqual([]);
  });

  it('lets a full database open again after a restart and be emptied', async () => {
    const pw = await t.createDatabase('size-reopen');
    await withClient(t.pgConfig('size-reopen', pw), async (c) => {
      await c.query('create table filler (i int, pad text)');
      for (let i = 0; i < 20; i++) if ((await sqlstateOf(c.query(FILL))) === '53100') break;
    });
    await t.restart();
    await withClient(t.pgConfig('size-reopen', pw), async (c) => {
      expect((await c.query('select count(*)::int > 0 as some from filler')).rows[0].some).toBe(true);
      expect(await sqlstateOf(c.query(FILL))).toBe('53100');
      await c.query('delete from filler');
      await c.query('vacuum filler');
      await c.query(FILL);
    });
  });
});
