import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { sqlstateOf, startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * One query must not make its database's worker hold gigabytes for as long as the database stays
 * open: WASM memory grows up to PGlite's 2 GiB and never shrinks, so a few such tenants would
 * take the node down. MAX_DATABASE_MEMORY bounds the heap; past it, malloc fails and Postgres
 * answers the statement with its own 53200, and the database goes on.
 */

const MiB = 1024 * 1024;
// ~1.5 GB of distinct 1 MB values in one array: far past the limit, below PGlite's own 2 GiB.
const HOG = 'select array_length(array_agg(repeat(i::text, 1000000)), 1) from generate_series(1, 1500) i';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ MAX_DATABASE_MEMORY: '256MiB', SPARE_DATABASES: '0' });
});
afterAll(async () => {
  await t?.close();
});

describe('MAX_DATABASE_MEMORY', () => {
  it('answers a statement that would grow the heap past it with 53200; the database goes on', async () => {
    const pw = await t.createDatabase('memory-hog');
    const rssBefore = process.memoryUsage().rss;
    await withClient(t.pgConfig('memory-hog', pw), async (c) => {
      await c.query('create table kept (v int)');
      await c.query('insert into kept values (1)');
      expect(await sqlstateOf(c.query(HOG))).toBe('53200');
      // Extended protocol, inside a transaction: the transaction fails, as in Postgres.
      await c.query('begin');
      await c.query('insert into kept values (2)');
      expect(await sqlstateOf(c.query({ text: HOG.replace('1500', '$1::int'), values: [1500] }))).toBe(
        '53200',
      );
      await c.query('rollback');
      expect((await c.query('select array_agg(v order by v) as v from kept')).rows[0].v).toEqual([1]);
      // Memory freed by the failed statement is reused: smaller work still fits.
      const fits = await c.query(
        'select array_length(array_agg(repeat(i::text, 1000000)), 1) as n from generate_series(1, 50) i',
      );
      expect(fits.rows[0].n).toBe(50);
    });
    // The worker runs in this process: its heap stayed near the limit, nowhere near the ~1.5 GB
    // the statement asked for (a bound with room for the rest of the process, not a timing).
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(700 * MiB);
    // Another client of the same database, and of another one, are served as before.
    await withClient(t.pgConfig('memory-hog', pw), async (c) => {
      expect((await c.query('select count(*)::int as n from kept')).rows[0].n).toBe(1);
    });
    const other = await t.createDatabase('memory-other');
    await withClient(t.pgConfig('memory-other', other), async (c) => {
      expect((await c.query('select 1 as one')).rows[0].one).toBe(1);
    });
    expect(t.errorLogs).toEqual([]);
  });
});

describe('MAX_DATABASE_MEMORY configuration', () => {
  const base = { DATA_DIR: '/tmp/unused' };
  it('defaults to 1GiB and accepts 0 (the WASM limit of 2 GiB)', () => {
    expect(loadConfig(base).maxDatabaseMemoryBytes).toBe(1024 * MiB);
    expect(loadConfig({ ...base, MAX_DATABASE_MEMORY: '0' }).maxDatabaseMemoryBytes).toBe(0);
  });
  it('refuses a limit a database cannot open in, or one past the WASM heap', () => {
    expect(() => loadConfig({ ...base, MAX_DATABASE_MEMORY: '100MiB' })).toThrow(/MAX_DATABASE_MEMORY/);
    expect(() => loadConfig({ ...base, MAX_DATABASE_MEMORY: '200MiB', SHARED_BUFFERS: '128MiB' })).toThrow(
      /SHARED_BUFFERS \+ 128MiB/,
    );
    expect(() => loadConfig({ ...base, MAX_DATABASE_MEMORY: '3GiB' })).toThrow(/at most 2GiB/);
  });
});
