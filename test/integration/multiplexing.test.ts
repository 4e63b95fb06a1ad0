import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { codeOf, internals, postgresJs, psqlConninfo, stillPending } from '../helpers/clients.js';
import { psql, sqlstateOf, startTestServer, type TestServer, withClient } from '../helpers/server.js';

let t: TestServer;

beforeAll(async () => {
  t = await startTestServer({ QUERY_WAIT_TIMEOUT: '20s', IDLE_IN_TRANSACTION_TIMEOUT: '20s' });
});
afterAll(() => t?.close());

const ROUNDS = 10;

describe('transaction pool mode under concurrent drivers', () => {
  it('serves pg and postgres.js pools of 10 with mixed workloads, losing and leaking nothing', async () => {
    const id = 'mixed';
    const pw = await t.createDatabase(id);
    await withClient(t.pgConfig(id, pw), (c) =>
      c.query(`create table ledger (id text not null, src text not null);
               create table uniq (k int primary key); insert into uniq values (0)`),
    );
    const committed: string[] = [];
    const doomed: string[] = [];
    const unexpected: string[] = [];
    const note = (who: string, err: unknown) =>
      unexpected.push(`${who}: ${codeOf(err)} ${(err as Error).message}`);
    const expectCode = async (who: string, promise: Promise<unknown>, code: string) => {
      const got = await sqlstateOf(promise);
      if (got !== code) unexpected.push(`${who}: expected ${code}, got ${got}`);
    };

    const pool = new pg.Pool({ ...t.pgConfig(id, pw), max: 10 });
    pool.on('error', (err) => note('pg pool', err));
    const pgWorker = async (w: number) => {
      for (let i = 0; i < ROUNDS; i++) {
        const who = `pg${w}.${i}`;
        const c = await pool.connect();
        try {
          const kind = (w + i) % 5;
          if (kind === 0) {
            await c.query('begin');
            await c.query('insert into ledger values ($1, $2)', [`${who}a`, 'pg']);
            await c.query('insert into ledger values ($1, $2)', [`${who}b`, 'pg']);
            await c.query('commit');
            committed.push(`${who}a`, `${who}b`);
          } else if (kind === 1 || kind === 2) {
            await c.query('begin');
            await c.query('insert into ledger values ($1, $2)', [who, 'pg']);
            doomed.push(who);
            if (kind === 1) await expectCode(who, c.query('select 1/0'), '22012');
            else await expectCode(who, c.query('insert into uniq values (0)'), '23505');
            await c.query('rollback');
          } else if (kind === 3) {
            const r = await c.query({ name: 'same', text: 'select $1::int * 2 as v', values: [i] });
            if (r.rows[0].v !== i * 2) unexpected.push(`${who}: same returned ${r.rows[0].v}`);
            await c.query({ name: 'ins', text: 'insert into ledger values ($1, $2)', values: [who, 'pg'] });
            committed.push(who);
          } else {
            await c.query('begin');
            await c.query({ name: 'ins', text: 'insert into ledger values ($1, $2)', values: [who, 'pg'] });
            const r = await c.query({ name: 'same', text: 'select $1::int * 2 as v', values: [w] });
            if (r.rows[0].v !== w * 2) unexpected.push(`${who}: same returned ${r.rows[0].v}`);
            await c.query('commit');
            committed.push(who);
          }
        } catch (err) {
          note(who, err);
          await c.query('rollback').catch(() => undefined);
        } finally {
          c.release();
        }
      }
    };

    const sql = postgresJs(t, id, pw, 10);
    const jsWorker = async (w: number) => {
      for (let i = 0; i < ROUNDS; i++) {
        const who = `js${w}.${i}`;
        const kind = (w + i) % 5;
        try {
          if (kind === 0) {
            await sql.begin(async (tx) => {
              await tx`insert into ledger values (${`${who}a`}, 'js')`;
              await tx`insert into ledger values (${`${who}b`}, 'js')`;
            });
            committed.push(`${who}a`, `${who}b`);
          } else if (kind === 1 || kind === 2) {
            doomed.push(who);
            const run = sql.begin(async (tx) => {
              await tx`insert into ledger values (${who}, 'js')`;
              if (kind === 1) await tx`select 1/0`;
              else await tx`insert into uniq values (0)`;
            });
            await expectCode(who, run, kind === 1 ? '22012' : '23505');
          } else if (kind === 3) {
            const [row] = await sql`select ${i}::int * 2 as v`;
            if (row?.v !== i * 2) unexpected.push(`${who}: got ${row?.v}`);
            await sql`insert into ledger values (${who}, 'js')`;
            committed.push(who);
          } else {
            const ids = [0, 1, 2].map((n) => `${who}c${n}`);
            const writable = await sql`copy ledger (id, src) from stdin`.writable();
            await pipeline(Readable.from(ids.map((x) => `${x}\tcopy\n`)), writable);
            committed.push(...ids);
          }
        } catch (err) {
          note(who, err);
        }
      }
    };

    // psql \copy runs alongside: COPY FROM STDIN through libpq's simple protocol.
    const copyFiles = await Promise.all(
      [0, 1, 2].map(async (n) => {
        const ids = Array.from({ length: 20 }, (_, k) => `psql${n}.${k}`);
        const file = path.join(t.root, `copy-${n}.tsv`);
        await writeFile(file, ids.map((x) => `${x}\tpsql\n`).join(''));
        return { file, ids };
      }),
    );
    const psqlCopy = async ({ file, ids }: { file: string; ids: string[] }) => {
      const r = await psql(psqlConninfo(t, id), ['-c', `\\copy ledger (id, src) from '${file}'`], {
        PGPASSWORD: pw,
      });
      if (r.code !== 0 || !/COPY 20/.test(r.stdout))
        unexpected.push(`psql: ${r.code} ${r.stdout} ${r.stderr}`);
      else committed.push(...ids);
    };

    try {
      await Promise.all([
        ...Array.from({ length: 10 }, (_, w) => pgWorker(w)),
        ...Array.from({ length: 10 }, (_, w) => jsWorker(w)),
        ...copyFiles.map(psqlCopy),
      ]);
    } finally {
      await pool.end();
      await sql.end({ timeout: 5 });
    }

    expect(unexpected).toEqual([]);
    const rows = await withClient(t.pgConfig(id, pw), (c) => c.query('select id from ledger'));
    const seen = rows.rows.map((r) => r.id as string).sort();
    expect(seen).toEqual([...committed].sort());
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen.filter((x) => doomed.includes(x))).toEqual([]);
    expect(doomed.length).toBeGreaterThan(0);
    // Each statement the pools prepared was closed when its client left.
    const left = await withClient(t.pgConfig(id, pw), (c) =>
      c.query('select count(*)::int as n from pg_prepared_statements'),
    );
    expect(left.rows[0].n).toBe(0);
  });
});

describe('per-client session state', () => {
  it('keeps settings, startup options and failed transactions to the client that made them', async () => {
    const id = 'isolated';
    const pw = await t.createDatabase(id);
    await withClient(t.pgConfig(id, pw), (c) =>
      c.query(`create schema other; create table public.t (v text); create table other.t (v text);
               insert into public.t values ('public'); insert into other.t values ('other')`),
    );
    const baseline = await withClient(t.pgConfig(id, pw), (c) =>
      c.query("select current_setting('TimeZone') as tz, current_setting('search_path') as path"),
    );
    const { tz: defaultZone, path: defaultPath } = baseline.rows[0] as { tz: string; path: string };
    expect(defaultZone).not.toBe('Asia/Tokyo');
    expect(defaultPath).not.toMatch(/other/);

    const a = new pg.Client(t.pgConfig(id, pw, { options: '-c search_path=other' }));
    const b = new pg.Client(t.pgConfig(id, pw, { application_name: 'b' }));
    a.on('error', () => undefined);
    b.on('error', () => undefined);
    await Promise.all([a.connect(), b.connect()]);
    const reportedToA: Record<string, string> = {};
    internals(a).connection.on('parameterStatus', (m) => {
      reportedToA[m.parameterName] = m.parameterValue;
    });
    const state = async (c: pg.Client) => {
      const r = await c.query(
        `select current_setting('TimeZone') as tz, current_setting('application_name') as app,
                current_setting('search_path') as path, (select v from t) as t`,
      );
      return r.rows[0];
    };
    try {
      await a.query("set TimeZone = 'Asia/Tokyo'");
      await a.query("set application_name = 'a'");
      await vi.waitFor(() =>
        expect(reportedToA).toMatchObject({ TimeZone: 'Asia/Tokyo', application_name: 'a' }),
      );
      expect(await state(b)).toEqual({ tz: defaultZone, app: 'b', path: defaultPath, t: 'public' });
      expect(await state(a)).toEqual({ tz: 'Asia/Tokyo', app: 'a', path: 'other', t: 'other' });
      expect(await state(b)).toMatchObject({ tz: defaultZone, app: 'b', t: 'public' });

      // A's failed transaction holds the session; B waits, then runs clean after A's ROLLBACK.
      await a.query('begin');
      expect(await sqlstateOf(a.query('select 1/0'))).toBe('22012');
      const bWhileAFailed = state(b);
      expect(await stillPending(bWhileAFailed, 300)).toBe(true);
      expect(await sqlstateOf(a.query('select 1'))).toBe('25P02');
      await a.query('rollback');
      expect(await bWhileAFailed).toEqual({ tz: defaultZone, app: 'b', path: defaultPath, t: 'public' });
      expect(await state(a)).toEqual({ tz: 'Asia/Tokyo', app: 'a', path: 'other', t: 'other' });
      expect((await b.query('select 1 as one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });

  it('gives a client its search_path list back as a list after another client used the session', async () => {
    const id = 'pathlist';
    const pw = await t.createDatabase(id);
    await withClient(t.pgConfig(id, pw), (c) =>
      c.query(`create schema other; create schema "My Schema"; create table public.pub (v text);
               create table other.oth (v text); insert into public.pub values ('p');
               insert into other.oth values ('o')`),
    );
    const a = new pg.Client(t.pgConfig(id, pw, { options: '-c search_path=other,public' }));
    const b = new pg.Client(t.pgConfig(id, pw));
    a.on('error', () => undefined);
    b.on('error', () => undefined);
    await Promise.all([a.connect(), b.connect()]);
    const both = 'select (select v from pub) as pub, (select v from oth) as oth';
    try {
      // From the startup options: B runs in between, then A gets its list back.
      await b.query('select 1');
      expect((await a.query(both)).rows).toEqual([{ pub: 'p', oth: 'o' }]);
      await a.query(`set search_path = other, "My Schema", public`);
      for (let round = 0; round < 3; round++) {
        await b.query('select 1');
        const r = await a.query("select current_setting('search_path') as path");
        expect(r.rows[0].path).toBe('other, "My Schema", public');
        expect((await a.query(both)).rows).toEqual([{ pub: 'p', oth: 'o' }]);
      }
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });

  it('reports a changed setting with ParameterStatus before the ReadyForQuery that ends the SET', async () => {
    const id = 'reporting';
    const pw = await t.createDatabase(id);
    await withClient(t.pgConfig(id, pw), async (c) => {
      const events: string[] = [];
      const con = internals(c).connection;
      con.on('parameterStatus', (m) => events.push(`${m.parameterName}=${m.parameterValue}`));
      con.on('readyForQuery', () => events.push('ReadyForQuery'));
      await c.query("set application_name = 'reported'");
      // Postgres reports the change inside the unit; libpq's PQparameterStatus relies on that.
      expect(events).toEqual(['application_name=reported', 'ReadyForQuery']);
    });
  });
});

describe('session pool mode per database', () => {
  it('keeps PREPARE and temp tables across transactions, queues others, and leaves nothing behind', async () => {
    const id = 'sessiondb';
    const pw = await t.createDatabase(id);
    await t.server.catalog.updateDatabase(id, { poolMode: 'session' });
    const first = new pg.Client(t.pgConfig(id, pw));
    const second = new pg.Client(t.pgConfig(id, pw));
    first.on('error', () => undefined);
    second.on('error', () => undefined);
    await Promise.all([first.connect(), second.connect()]);
    try {
      await first.query('prepare answer as select 42 as v');
      await first.query('create temp table scratch (v int)');
      await first.query('begin');
      await first.query('insert into scratch values (1)');
      await first.query('commit');
      const waiting = second.query(
        `select (select count(*)::int from pg_prepared_statements) as prepared,
                to_regclass('pg_temp.scratch') is not null as temp`,
      );
      expect(await stillPending(waiting, 300)).toBe(true);
      await first.query('begin');
      expect((await first.query('execute answer')).rows).toEqual([{ v: 42 }]);
      expect((await first.query('select count(*)::int as n from scratch')).rows).toEqual([{ n: 1 }]);
      await first.query('commit');
      expect(await stillPending(waiting, 100)).toBe(true);
      await first.end();
      expect((await waiting).rows).toEqual([{ prepared: 0, temp: false }]);
      expect(await sqlstateOf(second.query('execute answer'))).toBe('26000');
    } finally {
      await first.end().catch(() => undefined);
      await second.end();
    }
  });
});
