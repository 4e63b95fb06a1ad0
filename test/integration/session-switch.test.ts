import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ScramLookup } from '../../src/gateway/auth.js';
import { runUnit } from '../../src/http/session-unit.js';
import { createLogger } from '../../src/log.js';
import { query } from '../../src/wire/protocol.js';
import { internals, sendCancel, stillPending } from '../helpers/clients.js';
import { cstr, int16, int32, tagged } from '../helpers/messages.js';
import { type BackendMessage, BackendReader, parseErrorFields, rawLogin } from '../helpers/raw-auth.js';
import { sqlstateOf, startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * Handing the one shared session from client to client: settings and identities that one client
 * brings (at startup or with SET) never keep another out or reach it, and a cancelled wait in the
 * middle of an extended unit keeps the protocol in step. Each case was found by a probe.
 */

let t: TestServer;

beforeAll(async () => {
  t = await startTestServer({ QUERY_WAIT_TIMEOUT: '20s', IDLE_IN_TRANSACTION_TIMEOUT: '20s' });
});
afterAll(() => t?.close());

async function connected(config: pg.ClientConfig): Promise<pg.Client> {
  const c = new pg.Client(config);
  await c.connect();
  return c;
}

const silent = createLogger({ level: 'silent', pretty: false });
const LIMITS = {
  maxMessageSize: 1 << 20,
  maxPreparedStatements: 100,
  idleInTransactionTimeoutMs: 20_000,
  statementTimeoutMs: 0,
};

const one = async (c: pg.Client, sql: string) => (await c.query(sql)).rows[0] as Record<string, string>;

describe('startup settings', () => {
  it('refuses a startup session_authorization on a read-only database (42501), as SET is refused', async () => {
    const id = 'ro-startup';
    const pw = await t.createDatabase(id, { readOnly: true });
    const options = '-c session_authorization=postgres -c default_transaction_read_only=off';
    expect(await sqlstateOf(withClient({ ...t.pgConfig(id, pw), options }, (c) => c.query('select 1')))).toBe(
      '42501',
    );
    // Nor can it be hidden behind a line comment ended by \r (Postgres runs what follows).
    await withClient(t.pgConfig(id, pw), async (c) => {
      expect(await sqlstateOf(c.query('select 1; -- x\rset session authorization postgres'))).toBe('42501');
      expect((await one(c, 'select session_user')).session_user).not.toBe('postgres');
    });
  });

  it('RESET goes back to what the client connected with, as in Postgres', async () => {
    const id = 'reset-startup';
    const pw = await t.createDatabase(id);
    const options = '-c search_path=tenant,public -c work_mem=5MB';
    const a = await connected({ ...t.pgConfig(id, pw), options });
    const b = await connected(t.pgConfig(id, pw));
    const path = async (c: pg.Client) => (await one(c, 'show search_path')).search_path;
    try {
      await a.query('create schema tenant; create table tenant.t (v int); insert into tenant.t values (1)');
      await a.query("set search_path = public; set work_mem = '7MB'");
      await a.query('reset all');
      expect(await path(a)).toBe('tenant, public');
      expect((await one(a, 'show work_mem')).work_mem).toBe('5MB');
      expect(await path(b)).toBe('public');
      await a.query('set search_path = public');
      await a.query({ text: 'reset search_path', name: 'r' });
      expect(await path(a)).toBe('tenant, public');
      // The same prepared RESET executed again (Bind and Execute only).
      await a.query('set search_path = public');
      await a.query({ text: 'reset search_path', name: 'r' });
      expect(await path(a)).toBe('tenant, public');
      await a.query('set search_path = public');
      await a.query('set search_path to default');
      expect((await one(a, 'select count(*)::int as n from t')).n).toBe(1);
      // Undone with its transaction.
      await a.query('set search_path = public');
      await a.query('begin; reset all');
      expect(await path(a)).toBe('tenant, public');
      await a.query('rollback');
      expect(await path(a)).toBe('public');
      expect(await path(b)).toBe('public');
      // A RESET that did not take effect (its string timed out, or was refused) changes nothing.
      await a.query("set statement_timeout = '100ms'");
      expect(await sqlstateOf(a.query('reset search_path; select pg_sleep(2)'))).toBe('57014');
      await a.query('set statement_timeout = 0');
      expect(await path(a)).toBe('public');
      expect(await sqlstateOf(a.query('reset search_path; deallocate all'))).toBe('0A000');
      expect(await path(a)).toBe('public');
      // SET LOCAL ... TO DEFAULT: the value it connected with, for the rest of the transaction.
      await a.query('begin');
      await a.query('set local search_path to default');
      expect(await path(a)).toBe('tenant, public');
      await a.query('set transaction isolation level repeatable read');
      await a.query('commit');
      expect(await path(a)).toBe('public');
      expect(await path(b)).toBe('public');
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });

  it('one client connecting with settings Postgres will not RESET keeps nobody out', async () => {
    const id = 'no-reset';
    const pw = await t.createDatabase(id);
    const options =
      '-c transaction_read_only=on -c transaction_isolation=serializable -c seed=0.5 -c log_connections=on -c log_disconnections=on';
    const odd = await connected({ ...t.pgConfig(id, pw), options });
    const plain = await connected(t.pgConfig(id, pw));
    try {
      for (let round = 0; round < 3; round++) {
        // As in Postgres, the transaction_* startup values do not outlive the first transaction.
        expect(await one(odd, 'select 1 as v')).toEqual({ v: 1 });
        await plain.query('create table if not exists t (v int); insert into t values (1)');
      }
      expect(await one(plain, 'select count(*)::int as n from t')).toEqual({ n: 3 });
    } finally {
      await Promise.all([odd.end(), plain.end()]);
    }
  });
});

describe('identities and settings across clients', () => {
  it('a superuser-only setting and a role of one client never disconnect or demote another', async () => {
    const id = 'roles';
    const pw = await t.createDatabase(id);
    await withClient(t.pgConfig(id, pw), (c) =>
      c.query('create role r1; create role r2; create role ra; create role rb; grant rb to ra'),
    );
    const a = await connected(t.pgConfig(id, pw));
    const b = await connected(t.pgConfig(id, pw));
    try {
      await a.query(`set log_min_messages = 'debug1'; set role r1`);
      await b.query('select 1');
      const state = `select current_user as "user", current_setting('log_min_messages') as level`;
      expect(await one(a, state)).toEqual({ user: 'r1', level: 'debug1' });
      // B takes a role of its own while A's superuser-only setting is in the session.
      await b.query('set role r2');
      expect(await one(b, state)).toEqual({ user: 'r2', level: 'warning' });
      expect(await one(a, state)).toEqual({ user: 'r1', level: 'debug1' });

      // SET SESSION AUTHORIZATION clears the role: A's role comes back after it, even when the
      // previous client had the same role.
      await a.query('reset role; reset log_min_messages; set session authorization ra; set role rb');
      await b.query('set role rb');
      const who = 'select session_user as s, current_user as c';
      expect(await one(a, who)).toEqual({ s: 'ra', c: 'rb' });
      expect(await one(b, who)).toEqual({ s: 'postgres', c: 'rb' });
      expect(await one(a, who)).toEqual({ s: 'ra', c: 'rb' });
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });
});

describe('a database restart under a client', () => {
  it("leaves an interrupted client's settings as before its transaction, startup ones included", async () => {
    const id = 'interrupted';
    const pw = await t.createDatabase(id);
    const options = '-c search_path=app,public';
    const a = await connected({ ...t.pgConfig(id, pw), options, application_name: 'client-a' });
    const b = await connected(t.pgConfig(id, pw));
    const state = async () =>
      one(a, "select current_setting('search_path') as sp, current_setting('application_name') as app");
    try {
      await a.query('create schema app; create table app.items (v text); create table public.items (v text)');
      await a.query("set application_name = 'mine'");
      await b.query('select 1'); // a is switched in again for its next unit
      await a.query("begin; set search_path = public; set local statement_timeout = '50ms'");
      expect(await sqlstateOf(a.query('select pg_sleep(5)'))).toBe('57014');
      await a.query('rollback');
      expect(await state()).toEqual({ sp: 'app, public', app: 'mine' });
      // Cancelled rather than timed out, with another client in between.
      await b.query('select 1');
      await a.query('begin');
      const sleeping = sqlstateOf(a.query('select pg_sleep(30)'));
      await new Promise((resolve) => setTimeout(resolve, 200));
      await sendCancel(t, id, internals(a).processID, internals(a).secretKey);
      expect(await sleeping).toBe('57014');
      await a.query('rollback');
      expect(await state()).toEqual({ sp: 'app, public', app: 'mine' });
      await a.query("insert into items values ('x')");
      expect(await one(a, 'select (select count(*) from app.items)::int as n')).toEqual({ n: 1 });
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });
});

describe('a database restart under an idle client', () => {
  it('lets its first new named statement be prepared (no 42P05 from its own re-creation)', async () => {
    const id = 'restart-parse';
    const pw = await t.createDatabase(id);
    const a = await connected(t.pgConfig(id, pw));
    const b = await connected(t.pgConfig(id, pw));
    try {
      await a.query({ name: 'old', text: 'select 1 as v' });
      const sleeping = sqlstateOf(b.query('select pg_sleep(30)'));
      await new Promise((resolve) => setTimeout(resolve, 200));
      await sendCancel(t, id, internals(b).processID, internals(b).secretKey);
      expect(await sleeping).toBe('57014');
      for (let i = 0; i < 2; i++) {
        const { rows } = await a.query({ name: 'new', text: 'select $1::int as v', values: [i] });
        expect(rows).toEqual([{ v: i }]);
      }
      expect((await a.query({ name: 'old', text: 'select 1 as v' })).rows).toEqual([{ v: 1 }]);
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });

  it('prepares its statements again under its own settings (search_path picks the table)', async () => {
    const id = 'restart-path';
    const pw = await t.createDatabase(id);
    const setup = await connected(t.pgConfig(id, pw));
    await setup.query('create schema s1; create table s1.sp (v float8); create table public.sp (v bigint)');
    await setup.end();
    const a = await connected({ ...t.pgConfig(id, pw), options: '-c search_path=s1' });
    const b = await connected(t.pgConfig(id, pw));
    try {
      const insert = (v: string) => a.query({ name: 'ins', text: 'insert into sp values ($1)', values: [v] });
      await insert('1.5');
      const sleeping = sqlstateOf(b.query('select pg_sleep(30)'));
      await new Promise((resolve) => setTimeout(resolve, 200));
      await sendCancel(t, id, internals(b).processID, internals(b).secretKey);
      expect(await sleeping).toBe('57014');
      // b holds nothing now; a's next unit re-creates "ins" under a's search_path, not public's.
      await b.query('select 1');
      await insert('2.5');
      const rows = await b.query(
        'select (select array_agg(v order by v) from s1.sp)::text as s1, (select count(*)::int from public.sp) as public',
      );
      expect(rows.rows).toEqual([{ s1: '{1.5,2.5}', public: 0 }]);
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });

  it('lets its clients go quietly when the database is then closed by the admin API', async () => {
    const id = 'restart-close';
    const pw = await t.createDatabase(id);
    const clients = [await connected(t.pgConfig(id, pw)), await connected(t.pgConfig(id, pw))];
    for (const c of clients) c.on('error', () => undefined);
    const [a, b] = clients as [pg.Client, pg.Client];
    try {
      await a.query({ name: 'kept', text: 'select 1 as v' });
      const sleeping = sqlstateOf(b.query('select pg_sleep(30)'));
      await new Promise((resolve) => setTimeout(resolve, 200));
      await sendCancel(t, id, internals(b).processID, internals(b).secretKey);
      expect(await sleeping).toBe('57014');
      const before = t.errorLogs.length;
      const res = await fetch(`http://127.0.0.1:${t.server.adminPort}/v1/databases/${id}/close`, {
        method: 'POST',
      });
      expect(res.status).toBeLessThan(300);
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
      // Leaving clients had nothing to re-create in the new session only to close it.
      expect(t.errorLogs.slice(before)).toEqual([]);
    } finally {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    }
  });
});

describe("prepared statements dropped behind the gateway's back", () => {
  it('are prepared again for their clients after a DEALLOCATE in dynamic SQL', async () => {
    const id = 'dealloc-do';
    const pw = await t.createDatabase(id);
    const a = await connected(t.pgConfig(id, pw));
    const b = await connected(t.pgConfig(id, pw));
    const named = (v: number) => a.query({ name: 'double', text: 'select $1::int * 2 as v', values: [v] });
    try {
      expect((await named(1)).rows).toEqual([{ v: 2 }]);
      // The text names DEALLOCATE: A checks its statements before its next unit, no error.
      await b.query(`DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$`);
      expect((await named(2)).rows).toEqual([{ v: 4 }]);
      // Hidden from the text: A hears the loss once (26000), then has its statement back.
      await b.query(`DO $$ BEGIN EXECUTE 'DEALL' || 'OCATE ALL'; END $$`);
      expect(await sqlstateOf(named(3))).toBe('26000');
      expect((await named(4)).rows).toEqual([{ v: 8 }]);
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });
});

describe('a cancelled wait', () => {
  it('in the middle of an extended unit answers its Sync with one ReadyForQuery', async () => {
    const id = 'cancel-unit';
    const pw = await t.createDatabase(id);
    const holder = await connected(t.pgConfig(id, pw));
    const session = await rawLogin({ port: t.port, ca: t.ca, id, password: pw });
    const reader = new BackendReader(session.socket);
    try {
      await holder.query('begin');
      // Parse, Bind, Execute without Sync: the unit waits for the session A holds.
      session.socket.write(
        Buffer.concat([
          tagged('P', cstr(''), cstr('select 1'), int16(0)),
          tagged('B', cstr(''), cstr(''), int16(0), int16(0), int16(0)),
          tagged('E', cstr(''), int32(0)),
          tagged('H'),
        ]),
      );
      const first = reader.message(10_000);
      expect(await stillPending(first, 200)).toBe(true);
      await sendCancel(t, id, session.processId, session.secretKey);
      const error = await first;
      expect(error.type).toBe('E');
      expect(parseErrorFields(error.body).C).toBe('57014');
      // Nothing more until the unit's Sync, which gets exactly one ReadyForQuery.
      const next = reader.message(10_000);
      expect(await stillPending(next, 300)).toBe(true);
      session.socket.write(tagged('S'));
      expect((await next).type).toBe('Z');
      session.socket.write(tagged('Q', cstr('select 2')));
      const answer = reader.message(10_000);
      expect(await stillPending(answer, 200)).toBe(true);
      await holder.query('commit');
      const types: string[] = [(await answer).type];
      while (types.at(-1) !== 'Z') types.push((await reader.message(10_000)).type);
      expect(types).toEqual(['T', 'D', 'C', 'Z']);
    } finally {
      reader.detach();
      session.socket.destroy();
      await holder.end();
    }
  });
});

describe('a login that raced a delete and re-create of its database', () => {
  it('never reaches the new database: its verifier is checked once the database is open', async () => {
    const id = 'reborn';
    const first = await t.createDatabase(id, { password: 'first-tenant-password-1' });
    await withClient(t.pgConfig(id, first), (c) => c.query('select 1'));
    const { catalog, registry } = t.server;
    const old = await catalog.getCredential(id, 'postgres');
    // What the request saw open before its password check (the first tenant's database).
    const openBefore = registry.openDatabase(id);
    expect(openBefore).toBeDefined();
    await t.server.manager.delete(id);
    const pw = await t.createDatabase(id, { password: 'second-tenant-password-2' });
    const scram = new ScramLookup(catalog);
    const deps = { catalog, registry, scram, poolMode: 'transaction' as const, logger: silent, ...LIMITS };
    const unit = (storedKey: string | undefined) =>
      runUnit(deps, {
        id,
        user: 'postgres',
        storedKey,
        openBefore,
        messages: [query('create table written_by_first (v int)')],
        maxResponseBytes: 1 << 20,
        logger: silent,
      }).reply;
    expect(await sqlstateOf(unit(old?.scram.storedKey))).toBe('3D000');
    const current = await catalog.getCredential(id, 'postgres');
    await unit(current?.scram.storedKey);
    // Only the request whose verifier is the new database's own ran there.
    await withClient(t.pgConfig(id, pw), async (c) => {
      expect((await c.query(`select to_regclass('written_by_first') is not null as made`)).rows).toEqual([
        { made: true },
      ]);
    });
  });
});

describe('COPY FROM STDIN', () => {
  it('fails with 08P01 on a message that is no COPY message, which is dropped, as Postgres does', async () => {
    const id = 'copy-stray';
    const pw = await t.createDatabase(id);
    await withClient(t.pgConfig(id, pw), (c) => c.query('create table t (v text)'));
    const session = await rawLogin({ port: t.port, ca: t.ca, id, password: pw });
    const reader = new BackendReader(session.socket);
    const until = async (type: string) => {
      const seen: BackendMessage[] = [];
      do seen.push(await reader.message(10_000));
      while (seen.at(-1)?.type !== type);
      return seen;
    };
    try {
      session.socket.write(tagged('Q', cstr('copy t from stdin')));
      expect((await until('G')).map((m) => m.type)).toEqual(['G']);
      session.socket.write(
        Buffer.concat([tagged('d', 'a\n'), tagged('Q', cstr('insert into t values (1)'))]),
      );
      const answer = await until('Z');
      expect(answer.map((m) => m.type)).toEqual(['E', 'Z']);
      const fields = parseErrorFields(answer[0]?.body ?? Buffer.alloc(0));
      expect({ code: fields.C, message: fields.M }).toEqual({
        code: '08P01',
        message: 'unexpected message type 0x51 during COPY from stdin',
      });
      session.socket.write(tagged('Q', cstr('select count(*) from t')));
      const rows = await until('Z');
      expect(rows.filter((m) => m.type === 'D').map((m) => m.body.toString('utf8', 6))).toEqual(['0']);
    } finally {
      reader.detach();
      session.socket.destroy();
    }
  });
});
