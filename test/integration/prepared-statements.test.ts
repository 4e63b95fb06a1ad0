import { execFile, spawnSync } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeOf } from '../helpers/clients.js';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * Issue 12 finding 3: a client keeps every statement it prepared, however many; the session
 * holds at most MAX_PREPARED_STATEMENTS and the gateway prepares again what it closed.
 */

let t: TestServer;
let pw: string;

beforeAll(async () => {
  t = await startTestServer({ MAX_PREPARED_STATEMENTS: '20' });
  pw = await t.createDatabase('prep');
});
afterAll(() => t?.close());

/** Runs a client script from test/python with Debian's Python against 'prep'; its JSON summary. */
async function runPython(name: string): Promise<unknown> {
  const script = path.join(import.meta.dirname, '../python', name);
  const dsn = `postgres://postgres:${pw}@127.0.0.1:${t.port}/prep`;
  const { stdout } = await promisify(execFile)('/usr/bin/python3', [script, dsn, t.caPath], {
    timeout: 120_000,
  }).catch((err: { stdout?: string; stderr?: string }) => {
    throw new Error(`${name} failed: ${err.stdout ?? ''} ${err.stderr ?? ''}`);
  });
  return JSON.parse(stdout);
}

/** Makes node-postgres Parse a named statement again: it remembers the ones it parsed. */
function forgetParsed(c: pg.Client, name: string): void {
  const connection = (c as unknown as { connection: { parsedStatements: Record<string, string> } })
    .connection;
  delete connection.parsedStatements[name];
}

/** Whether Debian's Python has psycopg 3 (the psycopg script below needs it). */
const hasPsycopg = spawnSync('/usr/bin/python3', ['-c', 'import psycopg']).status === 0;

describe('prepared statements past the session cap', () => {
  it('node-postgres: 250 named queries, then every one of them again', async () => {
    await withClient(t.pgConfig('prep', pw), async (c) => {
      for (let i = 0; i < 250; i++) {
        const r = await c.query({ name: `q${i}`, text: `select $1::int + ${i} as v`, values: [1] });
        expect(r.rows[0].v).toBe(1 + i);
      }
      for (let i = 0; i < 250; i++) {
        const r = await c.query({ name: `q${i}`, text: `select $1::int + ${i} as v`, values: [2] });
        expect(r.rows[0].v).toBe(2 + i);
      }
    });
  });

  it('binds 40,000 parameters (counts are unsigned 16-bit, as in Postgres)', async () => {
    const n = 40_000;
    const values = Array.from({ length: n }, (_, i) => i);
    const list = values.map((i) => `$${i + 1}`).join(',');
    await withClient(t.pgConfig('prep', pw), async (c) => {
      const { rows } = await c.query(`select array_length(array[${list}]::int[], 1) as n`, values);
      expect(rows).toEqual([{ n }]);
    });
  });

  it('re-prepares inside a transaction and with other clients in between', async () => {
    await withClient(t.pgConfig('prep', pw), async (a) => {
      await withClient(t.pgConfig('prep', pw), async (b) => {
        for (let i = 0; i < 30; i++) await a.query({ name: `a${i}`, text: `select ${i} as v` });
        await b.query('select 1');
        await a.query('begin');
        for (let i = 0; i < 30; i++) {
          expect((await a.query({ name: `a${i}`, text: `select ${i} as v` })).rows[0].v).toBe(i);
        }
        await a.query('commit');
      });
    });
  });

  it("one client's DISCARD ALL drops only its own statements", async () => {
    await withClient(t.pgConfig('prep', pw), async (a) => {
      await withClient(t.pgConfig('prep', pw), async (b) => {
        await b.query({ name: 'kept', text: 'select 11 as v' });
        await a.query({ name: 'mine', text: 'select 12 as v' });
        await a.query('DISCARD ALL');
        expect((await b.query({ name: 'kept', text: 'select 11 as v' })).rows[0].v).toBe(11);
        // Its own are gone, as in Postgres (node-postgres still thinks 'mine' exists).
        const err = await a.query({ name: 'mine', text: 'select 12 as v' }).catch((e) => e);
        expect((err as pg.DatabaseError).code).toBe('26000');
      });
    });
  });

  it("DEALLOCATE ALL or DISCARD ALL written any way touches only the sender's statements", async () => {
    await withClient(t.pgConfig('prep', pw), async (a) => {
      await withClient(t.pgConfig('prep', pw), async (b) => {
        await b.query({ name: 'kept2', text: 'select 21 as v' });
        await b.query('listen kept_channel');
        for (const sql of ['/* c */ deallocate all', 'deallocate prepare all -- x', 'DISCARD ALL /* c */']) {
          await a.query({ name: `mine_${sql.length}`, text: 'select 22 as v' });
          await a.query(sql);
          const err = await a.query({ name: `mine_${sql.length}`, text: 'select 22 as v' }).catch((e) => e);
          expect((err as pg.DatabaseError).code, sql).toBe('26000');
          expect((await b.query({ name: 'kept2', text: 'select 21 as v' })).rows[0].v, sql).toBe(21);
        }
        // Inside a transaction: DEALLOCATE ALL is done for the sender; DISCARD ALL fails as in Postgres.
        await a.query('begin');
        await a.query('deallocate all');
        expect(codeOf(await a.query('discard all').catch((e) => e))).toBe('25001');
        await a.query('rollback');
        // Beside other statements it would reach the shared session: refused, nothing run.
        for (const sql of [
          'select 1; deallocate all',
          'deallocate all; select 1',
          'discard all; discard all',
        ]) {
          expect(codeOf(await a.query(sql).catch((e) => e)), sql).toBe('0A000');
        }
        expect((await b.query({ name: 'kept2', text: 'select 21 as v' })).rows[0].v).toBe(21);
        expect((await b.query('select pg_listening_channels() as c')).rows).toEqual([{ c: 'kept_channel' }]);
      });
    });
  });

  it('DISCARD ALL takes the settings back to those the client connected with, and says so', async () => {
    const a = new pg.Client({
      ...t.pgConfig('prep', pw),
      application_name: 'app0',
      options: '-c search_path=x,public',
    });
    await a.connect();
    try {
      const reported: Record<string, string> = {};
      (
        a as unknown as {
          connection: {
            on(e: string, f: (m: { parameterName: string; parameterValue: string }) => void): void;
          };
        }
      ).connection.on('parameterStatus', (m) => {
        reported[m.parameterName] = m.parameterValue;
      });
      await a.query("set application_name = 'zz'; set timezone = 'Asia/Tokyo'; set search_path = foo");
      await a.query('DISCARD ALL');
      const r = await a.query(
        "select current_setting('application_name') as app, current_setting('search_path') as path, current_setting('TimeZone') as tz",
      );
      expect(r.rows[0].app).toBe('app0');
      expect(r.rows[0].path).toBe('x, public');
      expect(r.rows[0].tz).not.toBe('Asia/Tokyo');
      expect(reported.application_name).toBe('app0');
      expect(reported.TimeZone).toBe(r.rows[0].tz);
    } finally {
      await a.end();
    }
  });

  it('a statement whose table went away fails as a Bind would, and the client carries on', async () => {
    await withClient(t.pgConfig('prep', pw), async (c) => {
      await c.query('create table gone (a int)');
      await c.query({ name: 'uses_gone', text: 'select count(*)::int as n from gone' });
      for (let i = 0; i < 25; i++) await c.query({ name: `fill${i}`, text: `select ${i}` });
      await c.query('drop table gone');
      const err = await c
        .query({ name: 'uses_gone', text: 'select count(*)::int as n from gone' })
        .catch((e) => e);
      expect((err as pg.DatabaseError).code).toBe('42P01');
      expect((await c.query('select 5 as v')).rows[0].v).toBe(5);
    });
  });

  it('asyncpg with statement_cache_size=1000: 300 distinct statements, twice, no error', async () => {
    const summary = (await runPython('asyncpg_statements.py')) as { ok: number; error_count: number };
    expect(summary.error_count).toBe(0);
    expect(summary.ok).toBe(600);
  });

  it('psycopg 3 with its defaults: rollback, DROP and a failed transaction block after statements were prepared', async () => {
    expect(await runPython('psycopg_deallocate.py')).toEqual({ errors: [] });
  });

  it("DEALLOCATE ALL in the extended protocol drops only the sender's statements", async () => {
    await withClient(t.pgConfig('prep', pw), async (a) => {
      await withClient(t.pgConfig('prep', pw), async (b) => {
        await a.query({ name: 'ext_a', text: 'select 31 as v' });
        await b.query({ name: 'ext_b', text: 'select 32 as v' });
        const done = await a.query({ text: 'DEALLOCATE ALL', queryMode: 'extended' } as pg.QueryConfig);
        expect(done.command).toBe('DEALLOCATE');
        expect(codeOf(await a.query({ name: 'ext_a', text: 'select 31 as v' }).catch((e) => e))).toBe(
          '26000',
        );
        expect((await b.query({ name: 'ext_b', text: 'select 32 as v' })).rows).toEqual([{ v: 32 }]);
        // Inside a transaction too; beside another statement in one unit it is still refused.
        await a.query('begin');
        await a.query({ text: 'deallocate prepare all', queryMode: 'extended' } as pg.QueryConfig);
        await a.query('commit');
      });
    });
  });

  it("DEALLOCATE name drops the client's own statement: simple or extended, quoted, in a transaction", async () => {
    await withClient(t.pgConfig('prep', pw), async (c) => {
      await c.query({ name: 'd1', text: 'select 1 as v' });
      expect((await c.query('DEALLOCATE d1')).command).toBe('DEALLOCATE');
      // The name is free again: a new Parse of it works (it failed with 42P05 when the text
      // reached the session unrenamed and missed the statement).
      forgetParsed(c, 'd1');
      expect((await c.query({ name: 'd1', text: 'select 2 as v' })).rows).toEqual([{ v: 2 }]);
      expect((await c.query({ name: 'd1', text: 'select 2 as v' })).rows).toEqual([{ v: 2 }]);
      // As psycopg sends it (PQexecParams: Parse, Bind, Describe, Execute, Sync).
      const extended = await c.query({ text: 'DEALLOCATE d1', queryMode: 'extended' } as pg.QueryConfig);
      expect(extended.command).toBe('DEALLOCATE');
      forgetParsed(c, 'd1');
      expect((await c.query({ name: 'd1', text: 'select 3 as v' })).rows).toEqual([{ v: 3 }]);
      // A quoted name, inside a transaction, both ways; the transaction goes on and commits.
      await c.query({ name: 'D1', text: 'select 4 as v' });
      await c.query('begin');
      await c.query('DEALLOCATE PREPARE "D1"');
      forgetParsed(c, 'D1');
      expect((await c.query({ name: 'D1', text: 'select 5 as v' })).rows).toEqual([{ v: 5 }]);
      await c.query({ text: '/* c */ deallocate prepare "D1"', queryMode: 'extended' } as pg.QueryConfig);
      forgetParsed(c, 'D1');
      expect((await c.query({ name: 'D1', text: 'select 6 as v' })).rows).toEqual([{ v: 6 }]);
      await c.query('commit');
      // One the session already closed (its cap is 20 here) but the client still has.
      for (let i = 0; i < 25; i++) await c.query({ name: `dfill${i}`, text: `select ${i}` });
      await c.query('deallocate d1');
      forgetParsed(c, 'd1');
      expect((await c.query({ name: 'd1', text: 'select 7 as v' })).rows).toEqual([{ v: 7 }]);
      // d1 really is gone: a Bind of it now fails as in Postgres.
      await c.query('deallocate d1');
      expect(codeOf(await c.query({ name: 'd1', text: 'select 7 as v' }).catch((e) => e))).toBe('26000');
    });
  });

  it('DEALLOCATE of a name the client never prepared fails as in Postgres; SQL-level PREPARE works as before', async () => {
    await withClient(t.pgConfig('prep', pw), async (c) => {
      await c.query({ name: 'u1', text: 'select 1 as v' });
      const err = (await c.query('DEALLOCATE nope').catch((e) => e)) as pg.DatabaseError;
      expect(err.code).toBe('26000');
      expect(err.message).toBe('prepared statement "nope" does not exist');
      const ext = await c
        .query({ text: 'DEALLOCATE "Nope"', queryMode: 'extended' } as pg.QueryConfig)
        .catch((e) => e);
      expect((ext as pg.DatabaseError).message).toBe('prepared statement "Nope" does not exist');
      expect((await c.query('select 8 as v')).rows).toEqual([{ v: 8 }]);
      // Inside a transaction it fails the transaction, as Postgres does.
      await c.query('begin');
      expect(codeOf(await c.query('DEALLOCATE nope').catch((e) => e))).toBe('26000');
      expect(codeOf(await c.query('select 1').catch((e) => e))).toBe('25P02');
      await c.query('rollback');
      // SQL-level PREPARE and DEALLOCATE reach the session as they are.
      await c.query('PREPARE sqlp AS select 9 as v');
      expect((await c.query('EXECUTE sqlp')).rows).toEqual([{ v: 9 }]);
      await c.query('DEALLOCATE sqlp');
      expect(codeOf(await c.query('EXECUTE sqlp').catch((e) => e))).toBe('26000');
      await c.query('PREPARE sqlp2 AS select 1; DEALLOCATE PREPARE sqlp2');
      // Beside other statements, a DEALLOCATE of one of the client's is refused, nothing run.
      for (const sql of ['select 1; deallocate u1', 'DEALLOCATE u1; DEALLOCATE u1']) {
        expect(codeOf(await c.query(sql).catch((e) => e)), sql).toBe('0A000');
      }
      expect((await c.query({ name: 'u1', text: 'select 1 as v' })).rows).toEqual([{ v: 1 }]);
      expect((await c.query('deallocate u1')).command).toBe('DEALLOCATE');
    });
  });

  it("two clients with the same name: one's DEALLOCATE leaves the other's statement", async () => {
    await withClient(t.pgConfig('prep', pw), async (a) => {
      await withClient(t.pgConfig('prep', pw), async (b) => {
        await a.query({ name: 'shared', text: 'select 1 as v' });
        await b.query({ name: 'shared', text: 'select 2 as v' });
        await a.query('DEALLOCATE shared');
        expect((await b.query({ name: 'shared', text: 'select 2 as v' })).rows).toEqual([{ v: 2 }]);
        forgetParsed(a, 'shared');
        expect((await a.query({ name: 'shared', text: 'select 3 as v' })).rows).toEqual([{ v: 3 }]);
        await b.query({ text: 'DEALLOCATE shared', queryMode: 'extended' } as pg.QueryConfig);
        expect((await a.query({ name: 'shared', text: 'select 3 as v' })).rows).toEqual([{ v: 3 }]);
      });
    });
  });

  it.skipIf(!hasPsycopg)(
    'psycopg 3 with its defaults: 150 prepared queries, evicted past 100 with DEALLOCATE',
    async () => {
      expect(await runPython('psycopg_evict.py')).toEqual({ errors: [], ok: 1 });
    },
  );
});
