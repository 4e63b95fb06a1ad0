import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sqlstateOf, startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * Timeouts Postgres enforces by ending the connection (idle_in_transaction_session_timeout,
 * idle_session_timeout, transaction_timeout) would end PGlite's one session, and so restart the
 * database under every client. A client's own idle_in_transaction_session_timeout is enforced by
 * the gateway instead: that client alone is ended with 25P03, as Postgres ends it.
 */
let t: TestServer;
let pw = '';

beforeAll(async () => {
  t = await startTestServer({ IDLE_IN_TRANSACTION_TIMEOUT: '60s' });
  pw = await t.createDatabase('timeouts');
});
afterAll(() => t?.close());

describe("a client's connection timeouts", () => {
  it('idle_in_transaction_session_timeout at startup ends that client with 25P03; the database keeps running', async () => {
    await withClient(t.pgConfig('timeouts', pw), async (bystander) => {
      await bystander.query('create table if not exists kept (v int)');
      const before = t.errorLogs.length;
      const c = new pg.Client({ ...t.pgConfig('timeouts', pw), idle_in_transaction_session_timeout: 500 });
      const ended = new Promise<string | undefined>((resolve) => {
        c.on('error', (err) => resolve((err as { code?: string }).code));
      });
      await c.connect();
      await c.query('begin');
      await c.query('insert into kept values (1)');
      expect(await ended).toBe('25P03');
      await c.end().catch(() => undefined);
      // The database did not restart: the bystander's session goes on, the insert was rolled back.
      expect((await bystander.query('select count(*)::int as n from kept')).rows[0].n).toBe(0);
      expect(t.errorLogs.slice(before).filter((l) => /restart|broke/.test(JSON.stringify(l)))).toEqual([]);
    });
  });

  it('idle_session_timeout and transaction_timeout at startup are not given to the engine', async () => {
    const c = new pg.Client({
      ...t.pgConfig('timeouts', pw),
      options: '-c idle_session_timeout=300 -c transaction_timeout=300',
    });
    await c.connect();
    try {
      await c.query('begin');
      await new Promise((resolve) => setTimeout(resolve, 800));
      expect((await c.query('select 1 as one')).rows[0].one).toBe(1);
      await c.query('commit');
      await new Promise((resolve) => setTimeout(resolve, 800));
      expect((await c.query('select 2 as two')).rows[0].two).toBe(2);
    } finally {
      await c.end();
    }
  });

  it('SET of one of them in SQL is refused with 0A000 (0 and DEFAULT pass); the database keeps running', async () => {
    await withClient(t.pgConfig('timeouts', pw), async (c) => {
      for (const sql of [
        "set idle_in_transaction_session_timeout = '300ms'",
        'set local transaction_timeout to 300',
        "select set_config('idle_session_timeout', '1s', false)",
      ])
        expect(await sqlstateOf(c.query(sql)), sql).toBe('0A000');
      await c.query('set idle_in_transaction_session_timeout = 0');
      await c.query('reset idle_session_timeout');
      await c.query('begin');
      await new Promise((resolve) => setTimeout(resolve, 800));
      expect((await c.query('select 1 as one')).rows[0].one).toBe(1);
      await c.query('commit');
    });
  });
});
