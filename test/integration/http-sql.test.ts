import { NeonDbError } from '@neondatabase/serverless';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { neon, neonUrl, useFrontDoor } from '../helpers/neon.js';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/** SQL over HTTP with the real Neon serverless driver, over real TLS. */
describe('POST /sql with the neon() driver', () => {
  let gw: TestServer;
  let password = '';
  let url = '';

  beforeAll(async () => {
    gw = await startTestServer({ AUTH_MAX_DELAY: '0' });
    password = await gw.createDatabase('web');
    const frozen = await gw.createDatabase('frozen');
    await withClient(gw.pgConfig('frozen', frozen), (c) => c.query('create table facts (v int)'));
    await gw.server.registry.close('frozen');
    await gw.server.catalog.updateDatabase('frozen', { readOnly: true });
    url = neonUrl('web', password);
    useFrontDoor(gw);
    await withClient(gw.pgConfig('web', password), (c) =>
      c.query('create table items (id int primary key, name text, tags text[], data jsonb)'),
    );
  });
  afterAll(() => gw?.close());

  const caught = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (err) {
      return err as NeonDbError;
    }
    throw new Error('expected the query to fail');
  };

  it('runs a parameterised query', async () => {
    const sql = neon(url);
    const rows =
      await sql`select ${41}::int + 1 as answer, ${'héllo'}::text as greeting, ${null}::text as nothing`;
    expect(rows).toEqual([{ answer: 42, greeting: 'héllo', nothing: null }]);
    const viaQuery = await sql.query('select $1::text || $2::text as joined', ['a', 'b']);
    expect(viaQuery).toEqual([{ joined: 'ab' }]);
  });

  it('supports array mode and full results equal to node-postgres', async () => {
    const sql = neon(url, { arrayMode: true, fullResults: true });
    await sql`insert into items values (1, 'one', '{a,b}', '{"k": [1, 2]}'), (2, 'two', null, null)`;
    const text = 'select id, name, tags, data, now() > $1 as later from items order by id';
    const params = ['2000-01-01'];
    const ours = await sql.query(text, params);
    const theirs = await withClient(gw.pgConfig('web', password), (c) =>
      c.query({ text, values: params, rowMode: 'array' }),
    );
    expect(ours.rows).toEqual(theirs.rows);
    expect(ours.rowCount).toBe(theirs.rowCount);
    expect(ours.command).toBe(theirs.command);
    expect(JSON.parse(JSON.stringify(ours.fields))).toEqual(JSON.parse(JSON.stringify(theirs.fields)));
    expect(ours.rows[0]).toEqual([1, 'one', ['a', 'b'], { k: [1, 2] }, true]);

    const plain = neon(url);
    expect(await plain`select name from items where id = ${2}`).toEqual([{ name: 'two' }]);
    const updated = await neon(url, { fullResults: true })`update items set name = name where id > 0`;
    expect(updated).toMatchObject({ command: 'UPDATE', rowCount: 2, rows: [] });
    const created = await neon(url, { fullResults: true })`create temp table if not exists t (x int)`;
    expect(created).toMatchObject({ command: 'CREATE', rowCount: null });
  });

  it('runs transactions with isolation level and read-only options', async () => {
    const sql = neon(url);
    const [, level, ro] = await sql.transaction(
      [
        sql`insert into items values (10, 'ten')`,
        sql`show transaction_isolation`,
        sql`show transaction_read_only`,
      ],
      { isolationLevel: 'RepeatableRead' },
    );
    expect(level).toEqual([{ transaction_isolation: 'repeatable read' }]);
    expect(ro).toEqual([{ transaction_read_only: 'off' }]);
    const [readOnly] = await sql.transaction([sql`show transaction_read_only`], {
      isolationLevel: 'Serializable',
      readOnly: true,
      deferrable: true,
    });
    expect(readOnly).toEqual([{ transaction_read_only: 'on' }]);
    const refused = await caught(
      sql.transaction([sql`insert into items values (11, 'eleven')`], { readOnly: true }),
    );
    expect(refused.code).toBe('25006');
    // A failed batch is rolled back as a whole.
    const failed = await caught(
      sql.transaction([sql`insert into items values (12, 'twelve')`, sql`select 1/0`]),
    );
    expect(failed.code).toBe('22012');
    expect(await sql`select id from items where id >= 10 order by id`).toEqual([{ id: 10 }]);
    // Nothing is left open on the shared session: the next request is outside a transaction.
    expect(await sql`show transaction_isolation`).toEqual([{ transaction_isolation: 'read committed' }]);
  });

  it('reports Postgres errors with SQLSTATE and position', async () => {
    const sql = neon(url);
    const err = await caught(sql`select * from no_such_table`);
    expect(err).toBeInstanceOf(NeonDbError);
    expect(err.message).toBe('relation "no_such_table" does not exist');
    expect(err.code).toBe('42P01');
    expect(err.position).toBe('15');
    expect(err.severity).toBe('ERROR');
    const dup = await caught(sql`insert into items values (1, 'again')`);
    expect(dup).toMatchObject({ code: '23505', constraint: 'items_pkey', table: 'items', schema: 'public' });
  });

  it('refuses writes on a read-only database with 25006', async () => {
    const sql = neon(neonUrl('frozen', 'pw-frozen-password'));
    const err = await caught(sql`insert into facts values (1)`);
    expect(err.code).toBe('25006');
    expect(await sql`select count(*)::int as n from facts`).toEqual([{ n: 0 }]);
  });

  it('cannot tell a wrong password from an unknown database or user', async () => {
    const answers = await Promise.all(
      [
        neonUrl('web', 'wrong-password-123'),
        neonUrl('nosuchdb', password),
        neonUrl('web', password, 'nobody'),
      ].map(async (u) => {
        const err = await caught(neon(u)`select 1`);
        return { message: err.message.replace(/"[^"]*"/, '"?"'), code: err.code, severity: err.severity };
      }),
    );
    expect(answers[0]).toEqual({
      message: 'password authentication failed for user "?"',
      code: '28P01',
      severity: 'FATAL',
    });
    expect(answers[1]).toEqual(answers[0]);
    expect(answers[2]).toEqual(answers[0]);
  });

  it('answers binary parameters and many rows like node-postgres', async () => {
    const sql = neon(url);
    const rows = await sql`select ${Buffer.from([1, 2, 255])}::bytea as b, generate_series(1, 1000) as n`;
    expect(rows).toHaveLength(1000);
    expect(rows[0]?.b).toEqual(Buffer.from([1, 2, 255]));
    const { rows: theirs } = await withClient(gw.pgConfig('web', password), (c: pg.Client) =>
      c.query('select generate_series(1, 1000) as n'),
    );
    expect(rows.map((r) => ({ n: r.n }))).toEqual(theirs);
  });
});
