import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { internals, psqlConninfo } from '../helpers/clients.js';
import { int16, tagged } from '../helpers/messages.js';
import { errorFields, rawConnect, readUntilClose, SSL_REQUEST, startupMessage } from '../helpers/raw.js';
import { psql, sqlstateOf, startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * Regression tests for issue 11: inputs that stopped the whole gateway or broke one database.
 * Each names the finding it covers.
 */

let t: TestServer;
let pw: string;
let otherPw: string;

beforeAll(async () => {
  t = await startTestServer({ LOGIN_TIMEOUT: '5s', POOL_MODE: 'transaction' });
  pw = await t.createDatabase('hard');
  otherPw = await t.createDatabase('other');
});
afterAll(() => t?.close());

const healthz = async () => {
  const res = await fetch(`http://127.0.0.1:${t.server.adminPort}/healthz`, {
    signal: AbortSignal.timeout(5000),
  });
  return res.status;
};

/** A logged-in client's raw socket, for bytes a driver would never send. */
async function rawSession(id: string, password: string): Promise<{ client: pg.Client; socket: TLSSocket }> {
  const client = new pg.Client(t.pgConfig(id, password));
  client.on('error', () => undefined);
  await client.connect();
  const socket = (internals(client).connection as unknown as { stream: TLSSocket }).stream;
  return { client, socket };
}

describe('finding 1: a startup that arrives in pieces', () => {
  it('answers an SSLRequest split in two with pauses, while other clients keep working', async () => {
    await withClient(t.pgConfig('other', otherPw), async (other) => {
      for (const at of [1, 4, 7]) {
        const socket = await rawConnect(t.port);
        socket.write(SSL_REQUEST.subarray(0, at));
        await new Promise((r) => setTimeout(r, 20));
        expect((await other.query('select 1 as one')).rows[0].one).toBe(1);
        expect(await healthz()).toBe(200);
        const answer = new Promise<Buffer>((resolve) => socket.once('data', resolve));
        socket.write(SSL_REQUEST.subarray(at));
        expect((await answer).toString()).toBe('S');
        socket.destroy();
      }
    });
  });

  it('reads a plaintext startup sent one byte at a time', async () => {
    const socket = await rawConnect(t.port);
    const bytes = startupMessage({ user: 'postgres', database: 'hard' });
    const reply = readUntilClose(socket, 10_000);
    for (const byte of bytes) {
      socket.write(Buffer.from([byte]));
      await new Promise((r) => setTimeout(r, 2));
    }
    // TLS is required: the whole packet was read and answered.
    expect(errorFields((await reply).data)?.M).toMatch(/SSL connection is required/);
  });
});

describe('finding 2: frontend messages not valid after login', () => {
  it.each([
    ['type 8', tagged('8', 'x')],
    ['a PasswordMessage', tagged('p', 'secret\0')],
    ['a second StartupMessage', startupMessage({ user: 'postgres', database: 'hard' })],
  ])('ends only that client with 08P01 for %s', async (_name, bytes) => {
    const { client, socket } = await rawSession('hard', pw);
    const reply = readUntilClose(socket, 10_000);
    socket.write(bytes);
    const { data, closed } = await reply;
    expect(closed).toBe(true);
    const fields = errorFields(data);
    expect(fields?.C).toBe('08P01');
    expect(fields?.S).toBe('FATAL');
    await client.end().catch(() => undefined);
    // The database and the gateway are fine.
    expect(await healthz()).toBe(200);
    await withClient(t.pgConfig('hard', pw), async (c) => {
      expect((await c.query('select 2 as two')).rows[0].two).toBe(2);
    });
  });
});

describe('finding 3: statements PGlite cannot run', () => {
  it('refuses COPY ... PROGRAM with 0A000 and the database keeps answering', async () => {
    await withClient(t.pgConfig('hard', pw), async (c) => {
      await c.query('create table if not exists p (a int)');
      expect(await sqlstateOf(c.query("copy p to program 'cat'"))).toBe('0A000');
      expect(await sqlstateOf(c.query("copy p from program 'echo 1'"))).toBe('0A000');
      expect((await c.query('select count(*)::int as n from p')).rows[0].n).toBe(0);
    });
  });

  it('restarts a database whose engine broke, and only the client that broke it hears of it', async () => {
    await withClient(t.pgConfig('hard', pw), async (bystander) => {
      await withClient(t.pgConfig('hard', pw), async (c) => {
        await c.query('create table if not exists kept (a int)');
        await c.query('insert into kept values (1)');
        // Dynamic SQL hides the statement from the gateway; the broken reply is caught instead.
        const broke = c.query(`do $$ begin execute 'copy kept to program ''cat'''; end $$`);
        const code = await sqlstateOf(broke);
        expect(code).toBeDefined();
        expect(code).not.toBe('XX000');
        expect((await c.query('select count(*)::int as n from kept')).rows[0].n).toBeGreaterThanOrEqual(1);
      });
      expect((await bystander.query('select 3 as three')).rows[0].three).toBe(3);
    });
  });

  it('refuses CREATE TABLESPACE with 0A000', async () => {
    await withClient(t.pgConfig('hard', pw), async (c) => {
      expect(await sqlstateOf(c.query("create tablespace t location '/tmp'"))).toBe('0A000');
    });
  });

  it('fails a transaction that sends COPY FROM STDIN among other statements, with a real error', async () => {
    await withClient(t.pgConfig('hard', pw), async (c) => {
      await c.query('create table if not exists big (a int)');
      await c.query('begin');
      const err = await c.query('copy big from stdin; select 1').catch((e: unknown) => e as pg.DatabaseError);
      expect((err as pg.DatabaseError).code).toBe('0A000');
      expect((err as pg.DatabaseError).message).toMatch(/COPY FROM STDIN/);
      // The transaction failed, as Postgres would have it.
      expect(await sqlstateOf(c.query('select 1'))).toBe('25P02');
      await c.query('rollback');
    });
  });
});

describe('finding 7: a departing client leaves the session clean (transaction mode)', () => {
  it('SET ROLE and SET statement_timeout do not reach the next client', async () => {
    await withClient(t.pgConfig('hard', pw), async (c) => {
      await c.query('set role pg_read_all_data');
      await c.query("set statement_timeout = '30s'");
      await c.query('set work_mem = 65');
    });
    await withClient(t.pgConfig('hard', pw), async (c) => {
      expect((await c.query('select current_user as u')).rows[0].u).toBe('postgres');
      expect((await c.query('show statement_timeout')).rows[0].statement_timeout).toBe('0');
      await c.query('create table if not exists after_role (a int)');
    });
  });

  it('SET SESSION AUTHORIZATION follows its client and is undone when it leaves', async () => {
    await withClient(t.pgConfig('hard', pw), async (a) => {
      await withClient(t.pgConfig('hard', pw), async (b) => {
        await a.query('set session authorization pg_read_all_data');
        expect((await b.query('select session_user as s, current_user as u')).rows[0]).toEqual({
          s: 'postgres',
          u: 'postgres',
        });
        expect((await a.query('select session_user as s')).rows[0].s).toBe('pg_read_all_data');
      });
      await a.query({ name: 'become', text: 'set session authorization pg_read_all_data' });
      // DISCARD ALL in a Parse would reset the whole shared session (and PGlite's reset keeps the
      // session user): refused; the simple-query form drops only this client's state.
      expect(await sqlstateOf(a.query({ name: 'forget', text: 'discard all' }))).toBe('0A000');
    });
    await withClient(t.pgConfig('hard', pw), async (c) => {
      expect((await c.query('select session_user as s, current_user as u')).rows[0]).toEqual({
        s: 'postgres',
        u: 'postgres',
      });
      await c.query('create table if not exists after_auth (a int)');
    });
  });

  it('a client that set a role keeps it while another client runs as itself', async () => {
    await withClient(t.pgConfig('hard', pw), async (a) => {
      await withClient(t.pgConfig('hard', pw), async (b) => {
        await a.query('set role pg_read_all_data');
        await a.query("set statement_timeout = '5min'");
        expect((await b.query('select current_user as u')).rows[0].u).toBe('postgres');
        expect((await b.query('show statement_timeout')).rows[0].statement_timeout).toBe('0');
        expect((await a.query('select current_user as u')).rows[0].u).toBe('pg_read_all_data');
        expect((await a.query('show statement_timeout')).rows[0].statement_timeout).toBe('5min');
        await a.query('reset role');
        await a.query('reset statement_timeout');
        expect((await b.query('select current_user as u')).rows[0].u).toBe('postgres');
        expect((await a.query('select current_user as u')).rows[0].u).toBe('postgres');
        expect((await a.query('show statement_timeout')).rows[0].statement_timeout).toBe('0');
      });
    });
  });
});

describe('finding 8: client mistakes are protocol errors, not internal ones', () => {
  it('answers a Parse without its NUL terminator with 08P01', async () => {
    const { client, socket } = await rawSession('hard', pw);
    const reply = readUntilClose(socket, 10_000);
    socket.write(tagged('P', 'unterminated-name'));
    const { data } = await reply;
    const fields = errorFields(data);
    expect(fields?.C).toBe('08P01');
    expect(fields?.M).not.toMatch(/internal/);
    await client.end().catch(() => undefined);
  });

  it('answers a statement name that is not UTF-8 with 22021, as Postgres checks names', async () => {
    const { client, socket } = await rawSession('hard', pw);
    const reply = readUntilClose(socket, 10_000);
    socket.write(
      Buffer.concat([tagged('P', Buffer.from([0x73, 0xff, 0]), 'select 1\0', int16(0)), tagged('S')]),
    );
    const { data, closed } = await reply;
    expect(closed).toBe(true);
    const fields = errorFields(data);
    expect(fields?.C).toBe('22021');
    expect(fields?.M).toMatch(/invalid byte sequence for encoding "UTF8"/);
    await client.end().catch(() => undefined);
    await withClient(t.pgConfig('hard', pw), async (c) => {
      expect((await c.query('select 3 as three')).rows[0].three).toBe(3);
    });
  });

  it('ends a garbage TLS handshake quietly', async () => {
    const socket = await rawConnect(t.port);
    socket.write(SSL_REQUEST);
    await new Promise((resolve) => socket.once('data', resolve));
    const reply = readUntilClose(socket, 10_000);
    socket.write(Buffer.alloc(64, 0x42));
    const { closed } = await reply;
    expect(closed).toBe(true);
    expect(await healthz()).toBe(200);
  });
});

describe('fuzz findings: messages in unusual places', () => {
  /** Sends raw bytes on a logged-in connection and collects what comes back for a while. */
  async function exchange(bytes: Buffer, ms = 1500): Promise<Buffer> {
    const { client, socket } = await rawSession('hard', pw);
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.write(bytes);
    await new Promise((r) => setTimeout(r, ms));
    await client.end().catch(() => undefined);
    return Buffer.concat(chunks);
  }

  const restarts = () => t.server.registry.stats.restarts;

  it("serves psql's \\lo_import and \\lo_export (libpq's large-object calls use the fast path)", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'lo-'));
    try {
      const source = path.join(dir, 'in.bin');
      const back = path.join(dir, 'out.bin');
      const data = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7) % 256));
      await writeFile(source, data);
      const env = { PGPASSWORD: pw };
      const imported = await psql(psqlConninfo(t, 'hard'), ['-c', `\\lo_import '${source}'`], env);
      expect(imported.stderr).toBe('');
      const oid = /lo_import (\d+)/.exec(imported.stdout)?.[1];
      expect(oid).toBeDefined();
      const exported = await psql(psqlConninfo(t, 'hard'), ['-c', `\\lo_export ${oid} '${back}'`], env);
      expect(exported.stderr).toBe('');
      expect((await readFile(back)).equals(data)).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a fast-path FunctionCall of any other function with 0A000 and keeps the session', async () => {
    const call = tagged('F', [0, 0, 0, 1], [0, 0], [0, 0], [0, 0]);
    const reply = await exchange(Buffer.concat([call, tagged('Q', 'select 1\0')]));
    expect(errorFields(reply)?.C).toBe('0A000');
    expect(reply.includes(Buffer.from('SELECT 1'))).toBe(true);
  });

  it('answers a Query sent inside an unfinished extended unit without restarting the database', async () => {
    const before = restarts();
    const reply = await exchange(
      Buffer.concat([tagged('E', 'nope\0', [0, 0, 0, 0]), tagged('Q', 'select 42\0')]),
    );
    expect(errorFields(reply)?.C).toBe('34000');
    expect(restarts()).toBe(before);
    await withClient(t.pgConfig('hard', pw), async (c) => {
      expect((await c.query('select 7 as v')).rows[0].v).toBe(7);
    });
  });
});

describe('issue 12: statement inspection understands SQL', () => {
  it('lets a read-only client select a string that mentions discard all', async () => {
    const roPw = await t.createDatabase('ro-lit', { readOnly: true });
    await withClient(t.pgConfig('ro-lit', roPw), async (c) => {
      expect((await c.query("select 'how to discard all items' as s")).rows[0].s).toBe(
        'how to discard all items',
      );
      expect(await sqlstateOf(c.query('reset session authorization'))).toBe('42501');
      expect(await sqlstateOf(c.query('discard all'))).toBe('42501');
    });
  });
});

describe('client encodings PGlite cannot convert to', () => {
  it('refuses them at connect and in SET with 0A000, and UTF8 keeps working', async () => {
    const restartsBefore = t.server.registry.stats.restarts;
    const latin = new pg.Client({ ...t.pgConfig('hard', pw), options: '-c client_encoding=LATIN1' });
    latin.on('error', () => undefined);
    expect(await sqlstateOf(latin.connect())).toBe('0A000');
    await latin.end().catch(() => undefined);
    // Setting names are case-insensitive.
    const upper = new pg.Client({ ...t.pgConfig('hard', pw), options: '-c CLIENT_ENCODING=LATIN1' });
    upper.on('error', () => undefined);
    const upperErr = await upper.connect().then(
      () => undefined,
      (e: Error & { code?: string }) => e,
    );
    expect(upperErr?.code, String(upperErr)).toBe('0A000');
    await upper.end().catch(() => undefined);
    // A way the statement check cannot see (set_config's arguments as parameters): the read-back
    // puts UTF8 back and ends that client; nobody else notices.
    const sneaky = new pg.Client(t.pgConfig('hard', pw));
    sneaky.on('error', () => undefined);
    await sneaky.connect();
    expect(
      await sqlstateOf(
        sneaky.query('select pg_catalog.set_config($1, $2, false)', ['client_encoding', 'LATIN1']),
      ),
    ).toBe('0A000');
    await sneaky.end().catch(() => undefined);
    const r = await psql(psqlConninfo(t, 'hard'), ['-tAc', 'select 1'], {
      PGPASSWORD: pw,
      PGCLIENTENCODING: 'LATIN1',
    });
    expect(r.stderr).toContain('UTF8 only');
    await withClient(t.pgConfig('hard', pw), async (c) => {
      for (const sql of ["set client_encoding = 'WIN1252'", "set names 'LATIN1'"]) {
        expect(await sqlstateOf(c.query(sql)), sql).toBe('0A000');
      }
      expect((await c.query("select current_setting('client_encoding') as e, 'é' as s")).rows[0]).toEqual({
        e: 'UTF8',
        s: 'é',
      });
    });
    expect(t.server.registry.stats.restarts).toBe(restartsBefore);
  });
});
