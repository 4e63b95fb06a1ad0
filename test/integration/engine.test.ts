import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { internals, sendCancel } from '../helpers/clients.js';
import { sqlstateOf, startTestServer, type TestServer, withClient } from '../helpers/server.js';

/** Issue 5: databases run in worker threads, can be interrupted, and are evicted under caps. */
let t: TestServer;
let timed: TestServer;

beforeAll(async () => {
  [t, timed] = await Promise.all([
    startTestServer({ MAX_OPEN_DATABASES: '3' }),
    startTestServer({ STATEMENT_TIMEOUT: '1s' }),
  ]);
});
afterAll(async () => {
  await Promise.all([t?.close(), timed?.close()]);
});

describe('worker threads', () => {
  it('answers database B while database A runs a 10 s query', async () => {
    const [pa, pb] = await Promise.all([t.createDatabase('iso-a'), t.createDatabase('iso-b')]);
    await withClient(t.pgConfig('iso-a', pa), async (a) => {
      await withClient(t.pgConfig('iso-b', pb), async (b) => {
        await b.query('select 1');
        let aDone = false;
        const slow = a.query('select pg_sleep(10)').then(() => {
          aDone = true;
        });
        await new Promise((r) => setTimeout(r, 300));
        const answers: boolean[] = [];
        for (let i = 0; i < 5; i++) {
          await b.query('select 1');
          answers.push(aDone);
        }
        // Every answer from B arrived while A was still running.
        expect(answers).toEqual([false, false, false, false, false]);
        await slow;
        expect(aDone).toBe(true);
      });
    });
  });
});

describe('interrupting a running statement', () => {
  it('cancels a running statement with 57014; the client and the data carry on', async () => {
    const pw = await t.createDatabase('cancel-run');
    await withClient(t.pgConfig('cancel-run', pw), async (c) => {
      await c.query('create table kept (v int)');
      await c.query('insert into kept values (1)');
      await c.query('prepare stays as select 42 as v');
      const named = await c.query({ name: 'named', text: 'select 7 as v' });
      expect(named.rows[0].v).toBe(7);
      const running = c.query('select pg_sleep(30)');
      await new Promise((r) => setTimeout(r, 500));
      const { processID, secretKey } = internals(c);
      await sendCancel(t, 'cancel-run', processID, secretKey);
      expect(await sqlstateOf(running)).toBe('57014');
      expect((await c.query('select count(*)::int as n from kept')).rows[0].n).toBe(1);
      // Statements prepared through the protocol survive the engine restart.
      expect((await c.query({ name: 'named', text: 'select 7 as v' })).rows[0].v).toBe(7);
    });
  });

  it('a wrong cancel key does nothing', async () => {
    const pw = await t.createDatabase('cancel-wrong');
    await withClient(t.pgConfig('cancel-wrong', pw), async (c) => {
      const running = c.query('select pg_sleep(1) as done');
      const { processID, secretKey } = internals(c);
      await sendCancel(t, 'cancel-wrong', processID, secretKey ^ 1);
      expect((await running).rowCount).toBe(1);
    });
  });

  it('STATEMENT_TIMEOUT interrupts a runaway statement; a transaction around it is failed', async () => {
    const pw = await timed.createDatabase('runaway');
    await withClient(timed.pgConfig('runaway', pw), async (c) => {
      await c.query('create table t (v int)');
      expect(await sqlstateOf(c.query('select pg_sleep(10)'))).toBe('57014');
      expect((await c.query('select 1 as ok')).rows[0].ok).toBe(1);
      await c.query('begin');
      await c.query('insert into t values (1)');
      expect(await sqlstateOf(c.query('select pg_sleep(10)'))).toBe('57014');
      // As in Postgres: the transaction is aborted until ROLLBACK.
      expect(await sqlstateOf(c.query('insert into t values (2)'))).toBe('25P02');
      await c.query('rollback');
      expect((await c.query('select count(*)::int as n from t')).rows[0].n).toBe(0);
    });
  });
});

describe("a client's own statement_timeout", () => {
  it('interrupts its statements (SET, startup options), not those of other clients', async () => {
    const pw = await t.createDatabase('own-timeout');
    await withClient(t.pgConfig('own-timeout', pw), async (a) => {
      await withClient(t.pgConfig('own-timeout', pw), async (b) => {
        await a.query("set statement_timeout = '300ms'");
        expect(await sqlstateOf(a.query('select pg_sleep(5)'))).toBe('57014');
        // The other client has no timeout of its own (and the server none).
        expect((await b.query('select pg_sleep(0.6) is not null as ok')).rows[0].ok).toBe(true);
        expect((await a.query("select current_setting('statement_timeout') as v")).rows[0].v).toBe('300ms');
        await a.query('reset statement_timeout');
        expect((await a.query('select pg_sleep(0.6) is not null as ok')).rows[0].ok).toBe(true);
      });
    });
    const c = new pg.Client({ ...t.pgConfig('own-timeout', pw), options: '-c statement_timeout=1s' });
    await c.connect();
    try {
      expect(await sqlstateOf(c.query('select pg_sleep(5)'))).toBe('57014');
    } finally {
      await c.end();
    }
  });
});

describe('eviction', () => {
  it('serves 10 databases round-robin under a cap of 3 open, with data intact', async () => {
    const ids = Array.from({ length: 10 }, (_, i) => `rr-${i}`);
    const passwords = await Promise.all(ids.map((id) => t.createDatabase(id)));
    for (let round = 0; round < 2; round++) {
      for (const [i, id] of ids.entries()) {
        await withClient(t.pgConfig(id, passwords[i] as string), async (c) => {
          await c.query('create table if not exists log (round int, db text)');
          await c.query('insert into log values ($1, $2)', [round, id]);
        });
        expect(t.server.registry.openCount).toBeLessThanOrEqual(3);
      }
    }
    for (const [i, id] of ids.entries()) {
      const rows = await withClient(t.pgConfig(id, passwords[i] as string), (c) =>
        c.query('select round, db from log order by round'),
      );
      expect(rows.rows).toEqual([0, 1].map((round) => ({ round, db: id })));
    }
  });

  it('refuses a new database promptly with 53300 when every open one has clients', async () => {
    const ids = ['busy-0', 'busy-1', 'busy-2', 'busy-3'];
    const pws = await Promise.all(ids.map((id) => t.createDatabase(id)));
    // Close the idle ones left over by other tests so the cap is ours.
    for (const id of [
      'iso-a',
      'iso-b',
      'cancel-run',
      'cancel-wrong',
      ...Array.from({ length: 10 }, (_, i) => `rr-${i}`),
    ])
      await t.server.registry.close(id);
    const holders = ids.slice(0, 3).map((id, i) => new pg.Client(t.pgConfig(id, pws[i] as string)));
    await Promise.all(holders.map((c) => c.connect()));
    try {
      const code = await sqlstateOf(
        withClient(t.pgConfig('busy-3', pws[3] as string), (c) => c.query('select 1')),
      );
      expect(code).toBe('53300');
    } finally {
      await Promise.all(holders.map((c) => c.end()));
    }
    // Once they leave, the fourth gets in (by evicting one of them).
    await withClient(t.pgConfig('busy-3', pws[3] as string), (c) => c.query('select 1'));
  });
});
