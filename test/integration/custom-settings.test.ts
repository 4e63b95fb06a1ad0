import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * Settings that Postgres does not list in pg_settings (custom `app.*` names, the row-level-security
 * tenant pattern) follow their client like any other, and the gateway's own read-back of settings
 * never becomes the first statement of a client's transaction (SET TRANSACTION must come first).
 */

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(() => t?.close());

async function connected(config: pg.ClientConfig): Promise<pg.Client> {
  const c = new pg.Client(config);
  await c.connect();
  return c;
}

const setting = async (c: pg.Client, name: string): Promise<string | null> =>
  (await c.query<{ v: string | null }>('select current_setting($1, true) as v', [name])).rows[0]?.v ?? null;

/** The ParameterStatus messages a client hears, in order (name, value). */
function reportedBy(c: pg.Client): [string, string][] {
  const reported: [string, string][] = [];
  c.connection.on('parameterStatus', (m: { parameterName: string; parameterValue: string }) =>
    reported.push([m.parameterName, m.parameterValue]),
  );
  return reported;
}

/** SHOW of one setting on a client. */
const showOf = (c: pg.Client) => async (name: string) =>
  Object.values((await c.query(`show ${name}`)).rows[0] ?? {})[0];

/** A value that no other client set: NULL, or '' once any client of the session used the name. */
const unset = (v: string | null) => v === null || v === '';

describe('custom settings', () => {
  it('SET app.tenant and set_config stay with the client that made them', async () => {
    const pw = await t.createDatabase('custom-gucs');
    const config = t.pgConfig('custom-gucs', pw);
    const a = await connected(config);
    const b = await connected(config);
    try {
      await a.query('create table docs (tenant text, body text)');
      await a.query("insert into docs values ('a', 'for a'), ('b', 'for b')");
      const mine = (c: pg.Client) =>
        c.query<{ body: string }>("select body from docs where tenant = current_setting('app.tenant', true)");

      await a.query("SET app.tenant = 'a'");
      expect(unset(await setting(b, 'app.tenant'))).toBe(true);
      expect((await mine(b)).rows).toEqual([]);
      expect((await mine(a)).rows).toEqual([{ body: 'for a' }]);

      // set_config in a SELECT, session-wide, and a quoted, mixed-case name.
      await b.query("select set_config('app.tenant', 'b', false), 1 as x");
      await b.query('SET "App"."Mode" TO strict');
      expect((await mine(b)).rows).toEqual([{ body: 'for b' }]);
      expect((await mine(a)).rows).toEqual([{ body: 'for a' }]);
      expect(unset(await setting(a, 'App.Mode'))).toBe(true);
      expect(await setting(b, 'App.Mode')).toBe('strict');

      // RESET and a transaction-local value end where Postgres ends them.
      await a.query('RESET app.tenant');
      expect((await mine(a)).rows).toEqual([]);
      expect((await mine(b)).rows).toEqual([{ body: 'for b' }]);
      await a.query('begin');
      await a.query("select set_config('app.tenant', 'a', true)");
      expect((await mine(a)).rows).toEqual([{ body: 'for a' }]);
      await a.query('commit');
      expect((await mine(a)).rows).toEqual([]);
      expect((await mine(b)).rows).toEqual([{ body: 'for b' }]);

      // A new client of the session sees none of them.
      const c = await connected(config);
      expect(unset(await setting(c, 'app.tenant'))).toBe(true);
      expect(unset(await setting(c, 'app.mode'))).toBe(true);
      await c.end();
    } finally {
      await a.end();
      await b.end();
    }
  });

  it('a named prepared set_config, executed again with another value, is followed each time', async () => {
    const pw = await t.createDatabase('custom-named');
    const config = t.pgConfig('custom-named', pw);
    const a = await connected(config);
    const b = await connected(config);
    // Prepared once (Parse), then only Bind/Execute: how drivers with a statement cache send it.
    const use = (c: pg.Client, tenant: string) =>
      c.query({ name: 'use_tenant', text: "select set_config('app.tenant', $1, false)", values: [tenant] });
    try {
      await use(a, 'a1');
      await use(b, 'b1');
      await use(a, 'a2');
      expect(await setting(b, 'app.tenant')).toBe('b1');
      expect(await setting(a, 'app.tenant')).toBe('a2');
      await use(b, 'b2');
      expect(await setting(a, 'app.tenant')).toBe('a2');
      expect(await setting(b, 'app.tenant')).toBe('b2');
    } finally {
      await a.end();
      await b.end();
    }
  });

  it('SET LOCAL custom names do not use up the names tracked: a later SET still stays with its client', async () => {
    const pw = await t.createDatabase('custom-local');
    const config = t.pgConfig('custom-local', pw);
    const a = await connected(config);
    const b = await connected(config);
    try {
      // More than the 200 custom names a database tracks, each only for a transaction.
      const locals = Array.from({ length: 250 }, (_, i) => `set local req.k${i} = '${i}'`).join('; ');
      await a.query(`begin; ${locals}`);
      expect(await setting(a, 'req.k249')).toBe('249');
      await a.query('commit');
      await a.query("set app.tenant = 'secret-a'");
      expect(unset(await setting(b, 'app.tenant'))).toBe(true);
      expect(await setting(a, 'app.tenant')).toBe('secret-a');
      expect(unset(await setting(b, 'app.tenant'))).toBe(true);
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });

  it('a custom setting given at connect time (options -c) stays with its client', async () => {
    const pw = await t.createDatabase('custom-startup');
    const config = t.pgConfig('custom-startup', pw);
    const a = await connected({ ...config, options: '-c app.tenant=a' });
    const b = await connected(config);
    try {
      expect(await setting(a, 'app.tenant')).toBe('a');
      expect(unset(await setting(b, 'app.tenant'))).toBe(true);
      await b.query("set app.tenant = 'b'");
      expect(await setting(a, 'app.tenant')).toBe('a');
      expect(await setting(b, 'app.tenant')).toBe('b');
    } finally {
      await a.end();
      await b.end();
    }
  });
});

describe("the gateway's statements and a client's transaction", () => {
  it('BEGIN, then SET TRANSACTION ISOLATION LEVEL works while clients with other settings take turns', async () => {
    const pw = await t.createDatabase('iso-turns');
    const config = t.pgConfig('iso-turns', pw);
    // Different startup settings: every turn switches the session and reads the settings back.
    const clients = await Promise.all(
      ['UTC', 'Europe/Paris', 'America/New_York'].map((tz) =>
        connected({ ...config, options: `-c TimeZone=${tz} -c statement_timeout=30s` }),
      ),
    );
    try {
      for (let round = 0; round < 3; round++) {
        for (const [i, c] of clients.entries()) {
          const level = ['serializable', 'repeatable read', 'read committed'][i] as string;
          await c.query(round === 0 ? 'begin' : 'start transaction');
          if (round === 2) await c.query('set transaction read write');
          await c.query(`set transaction isolation level ${level}`);
          expect((await c.query('show transaction_isolation')).rows).toEqual([
            { transaction_isolation: level },
          ]);
          await c.query('commit');
        }
      }
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });
  it('SET and SET LOCAL inside a transaction, then SET TRANSACTION ISOLATION LEVEL, as separate statements', async () => {
    const pw = await t.createDatabase('iso-set-local');
    const config = t.pgConfig('iso-set-local', pw);
    const c = await connected(config);
    const other = await connected(config);
    const reported = reportedBy(c);
    const show = showOf(c);
    try {
      const zone = await show('timezone');
      for (const level of ['serializable', 'repeatable read']) {
        reported.length = 0;
        await c.query('begin');
        await c.query("set local statement_timeout = '300ms'");
        // A pause: the gateway reads the settings back while nothing else is queued.
        await new Promise((r) => setTimeout(r, 50));
        await c.query("set local timezone = 'Asia/Tokyo'");
        await c.query("set app.tenant = 'a'");
        await c.query(`set transaction isolation level ${level}`);
        expect(await show('transaction_isolation')).toBe(level);
        // The values read back are the client's own, in force for the rest of the transaction.
        expect(reported).toContainEqual(['TimeZone', 'Asia/Tokyo']);
        expect(await show('app.tenant')).toBe('a');
        await expect(c.query('select pg_sleep(5)')).rejects.toMatchObject({ code: '57014' });
        await c.query('rollback');
        // ROLLBACK undid all three, and the client heard the TimeZone go back.
        expect(reported.at(-1)).toEqual(['TimeZone', zone]);
        expect(await show('statement_timeout')).toBe('0');
        expect(await show('timezone')).toBe(zone);
        expect(unset(await setting(c, 'app.tenant'))).toBe(true);
        expect(unset(await setting(other, 'app.tenant'))).toBe(true);
      }
    } finally {
      await Promise.all([c.end(), other.end()]);
    }
  });
  it('ROLLBACK TO SAVEPOINT undoes a SET: the client hears it, and SET TRANSACTION still works', async () => {
    const pw = await t.createDatabase('iso-savepoint');
    const c = await connected(t.pgConfig('iso-savepoint', pw));
    const reported = reportedBy(c);
    const show = showOf(c);
    try {
      const zone = await show('timezone');
      await c.query('begin');
      await c.query('savepoint s');
      await c.query("set local timezone = 'Asia/Tokyo'");
      await c.query("set local statement_timeout = '200ms'");
      expect(reported.at(-1)).toEqual(['TimeZone', 'Asia/Tokyo']);
      await c.query('rollback to savepoint s');
      expect(reported.at(-1)).toEqual(['TimeZone', zone]);
      await c.query('release savepoint s');
      await c.query('set transaction isolation level serializable');
      expect(await show('transaction_isolation')).toBe('serializable');
      // The timeout went with the savepoint: nothing cuts this.
      await c.query('select pg_sleep(0.5)');
      await c.query('commit');
      expect(await show('timezone')).toBe(zone);
    } finally {
      await c.end();
    }
  });

  it('a read-back whose SHOW fails (a superuser-only setting under SET ROLE) falls back, the transaction intact', async () => {
    const pw = await t.createDatabase('iso-fallback');
    const c = await connected(t.pgConfig('iso-fallback', pw));
    const show = showOf(c);
    try {
      await c.query('create role app');
      await c.query("set dynamic_library_path = '$libdir:/tmp'");
      await c.query('begin');
      await c.query('set local role app');
      // SHOW dynamic_library_path fails for app: rolled back to its savepoint, read by query.
      await c.query("set local work_mem = '2MB'");
      expect(await show('work_mem')).toBe('2MB');
      expect((await c.query('select current_user as u')).rows).toEqual([{ u: 'app' }]);
      await c.query('commit');
      expect((await c.query('select current_user as u')).rows).toEqual([{ u: 'postgres' }]);
      expect(await show('work_mem')).not.toBe('2MB');
      expect(await show('dynamic_library_path')).toBe('$libdir:/tmp');
    } finally {
      await c.end();
    }
  });

  it('psycopg with its defaults (BEGIN through the extended protocol): SET LOCAL, RESET, then SET TRANSACTION', async () => {
    const pw = await t.createDatabase('iso-psycopg');
    const script = path.join(import.meta.dirname, '../python/psycopg_set_local.py');
    const dsn = `postgres://postgres:${pw}@127.0.0.1:${t.port}/iso-psycopg`;
    const { stdout } = await promisify(execFile)('/usr/bin/python3', [script, dsn, t.caPath], {
      timeout: 60_000,
    }).catch((err: { stdout?: string; stderr?: string }) => {
      throw new Error(`psycopg_set_local.py failed: ${err.stdout ?? ''} ${err.stderr ?? ''}`);
    });
    expect(JSON.parse(stdout)).toEqual({
      seen: {
        'set local': 'serializable',
        tenant: 'p',
        timeout: '57014',
        reset: 'serializable',
        'set local transaction': 'serializable',
        read_only: 'on',
        after: '0',
      },
      errors: [],
    });
  });
});
