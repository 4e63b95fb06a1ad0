import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postgresJs } from '../helpers/clients.js';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/** Issue 12 finding 4: LISTEN/NOTIFY across the clients of one database in transaction mode. */

let t: TestServer;
let pw: string;

beforeAll(async () => {
  t = await startTestServer({ POOL_MODE: 'transaction' });
  pw = await t.createDatabase('chat');
});
afterAll(() => t?.close());

const until = async (check: () => boolean, ms = 10_000) => {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return check();
};

describe('LISTEN/NOTIFY in transaction mode', () => {
  it('delivers to the listener, not the sender, and only on its channel', async () => {
    await withClient(t.pgConfig('chat', pw), async (a) => {
      await withClient(t.pgConfig('chat', pw), async (b) => {
        const gotA: string[] = [];
        const gotB: string[] = [];
        a.on('notification', (n) => gotA.push(`${n.channel}:${n.payload}`));
        b.on('notification', (n) => gotB.push(`${n.channel}:${n.payload}`));
        await a.query('LISTEN chan');
        await b.query("NOTIFY chan, 'hello'");
        await b.query("NOTIFY other, 'nobody'");
        expect(await until(() => gotA.length === 1)).toBe(true);
        expect(gotA).toEqual(['chan:hello']);
        expect(gotB).toEqual([]);
        // The sender hears its own notification only when it listens too.
        await b.query('LISTEN chan');
        await b.query("select pg_notify('chan', 'both')");
        expect(await until(() => gotA.length === 2 && gotB.length === 1)).toBe(true);
        // One client's UNLISTEN does not stop another's.
        await b.query('UNLISTEN chan');
        await b.query("NOTIFY chan, 'after'");
        expect(await until(() => gotA.length === 3)).toBe(true);
        expect(gotA[2]).toBe('chan:after');
        expect(gotB).toEqual(['chan:both']);
      });
    });
  });

  it("a notification carries its sender's BackendKeyData process id, as in Postgres", async () => {
    await withClient(t.pgConfig('chat', pw), async (a) => {
      await withClient(t.pgConfig('chat', pw), async (b) => {
        const heard: { by: string; pid: number }[] = [];
        a.on('notification', (n) => heard.push({ by: 'a', pid: n.processId }));
        b.on('notification', (n) => heard.push({ by: 'b', pid: n.processId }));
        await a.query('LISTEN pids');
        await b.query('LISTEN pids');
        await b.query("NOTIFY pids, 'from b'");
        await a.query("NOTIFY pids, 'from a'");
        expect(await until(() => heard.length === 4)).toBe(true);
        const pidA = (a as unknown as { processID: number }).processID;
        const pidB = (b as unknown as { processID: number }).processID;
        expect(pidA).not.toBe(pidB);
        // Drivers skip their own notifications by this comparison (psycopg, node-postgres users).
        expect(
          heard
            .filter((h) => h.by === 'a')
            .map((h) => h.pid)
            .sort(),
        ).toEqual([pidA, pidB].sort());
        expect(
          heard
            .filter((h) => h.by === 'b')
            .map((h) => h.pid)
            .sort(),
        ).toEqual([pidA, pidB].sort());
      });
    });
  });

  it('postgres.js sql.listen hears a NOTIFY from another client while a third runs transactions', async () => {
    const sql = postgresJs(t, 'chat', pw, 2);
    const received: string[] = [];
    try {
      await sql.listen('jobs', (payload) => received.push(payload));
      await withClient(t.pgConfig('chat', pw), async (worker) => {
        await worker.query('create table if not exists ticks (n int)');
        const busy = (async () => {
          for (let i = 0; i < 30; i++) {
            await worker.query('begin');
            await worker.query('insert into ticks values ($1)', [i]);
            await worker.query('commit');
          }
        })();
        await withClient(t.pgConfig('chat', pw), async (sender) => {
          for (let i = 0; i < 5; i++) await sender.query(`select pg_notify('jobs', 'job-${i}')`);
        });
        await busy;
      });
      expect(await until(() => received.length === 5)).toBe(true);
      expect(received).toEqual(['job-0', 'job-1', 'job-2', 'job-3', 'job-4']);
    } finally {
      await sql.end({ timeout: 5 });
    }
  });

  it('a listener that leaves stops hearing, and the others keep hearing', async () => {
    const a = new pg.Client(t.pgConfig('chat', pw));
    await a.connect();
    await a.query('LISTEN leaving');
    await a.end();
    await withClient(t.pgConfig('chat', pw), async (b) => {
      const got: string[] = [];
      b.on('notification', (n) => got.push(n.payload ?? ''));
      await b.query("NOTIFY leaving, 'x'");
      await b.query('select 1');
      expect(got).toEqual([]);
      await b.query('LISTEN leaving');
      await b.query("NOTIFY leaving, 'y'");
      expect(await until(() => got.length === 1)).toBe(true);
    });
  });

  it('hears channels named as Postgres names them: long names cut to 63 bytes, U& escapes', async () => {
    await withClient(t.pgConfig('chat', pw), async (a) => {
      await withClient(t.pgConfig('chat', pw), async (b) => {
        const got: string[] = [];
        a.on('notification', (n) => got.push(`${n.channel}:${n.payload}`));
        const long = `c${'x'.repeat(80)}`;
        await a.query(`LISTEN ${long}`);
        await a.query(`LISTEN U&"d\\0061t\\0061"`);
        await a.query(`LISTEN "Mixed"`);
        await b.query(`NOTIFY ${long}, 'long'`);
        await b.query(`select pg_notify('data', 'unicode'), pg_notify('Mixed', 'quoted')`);
        expect(await until(() => got.length === 3)).toBe(true);
        expect(got).toEqual([`${long.slice(0, 63)}:long`, 'data:unicode', 'Mixed:quoted']);
      });
    });
  });
});
