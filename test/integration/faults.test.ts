import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { internals, killSocket, sendCancel, stillPending } from '../helpers/clients.js';
import { sqlstateOf, startTestServer, type TestServer, withClient } from '../helpers/server.js';

/** Short idle-in-transaction timeout and a small statement cap. */
let idle: TestServer;
/** Short queue wait and two clients per database. */
let tight: TestServer;
/** Generous timeouts, for clients that wait on purpose. */
let patient: TestServer;

beforeAll(async () => {
  [idle, tight, patient] = await Promise.all([
    startTestServer({ IDLE_IN_TRANSACTION_TIMEOUT: '1s', MAX_PREPARED_STATEMENTS: '3' }),
    startTestServer({
      QUERY_WAIT_TIMEOUT: '1s',
      MAX_CLIENTS_PER_DB: '2',
      IDLE_IN_TRANSACTION_TIMEOUT: '30s',
    }),
    startTestServer({ QUERY_WAIT_TIMEOUT: '30s', IDLE_IN_TRANSACTION_TIMEOUT: '30s' }),
  ]);
});
afterAll(() => Promise.all([idle?.close(), tight?.close(), patient?.close()]));

async function connected(config: pg.ClientConfig): Promise<pg.Client> {
  const client = new pg.Client(config);
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

describe('clients that vanish', () => {
  it('cleans up after 50 disconnects mid-transaction and 50 after a lone Parse (no Sync)', async () => {
    const t = idle;
    const id = 'vanish';
    const pw = await t.createDatabase(id);
    const config = t.pgConfig(id, pw);
    await withClient(config, (c) => c.query('create table t (v int)'));
    const fresh = () =>
      withClient(config, async (c) => {
        const notices: string[] = [];
        c.on('notice', (n) => notices.push(String(n.message)));
        const r = await c.query(
          `select (select count(*)::int from pg_prepared_statements) as prepared,
                  txid_current_if_assigned() as xid, now() = statement_timestamp() as fresh,
                  (select count(*)::int from t) as rows`,
        );
        await c.query('begin');
        await c.query('rollback');
        return { ...r.rows[0], notices };
      });
    const clean = { prepared: 0, xid: null, fresh: true, rows: 0, notices: [] };

    for (let i = 0; i < 50; i++) {
      const a = await connected(config);
      await a.query({ name: 'mine', text: 'select $1::int as v', values: [i] });
      await a.query('begin');
      await a.query({ name: 'ins', text: 'insert into t values ($1)', values: [i] });
      killSocket(a);
      expect(await fresh(), `mid-transaction #${i}`).toEqual(clean);

      const b = await connected(config);
      await b.query({ name: 'before', text: 'select 1' });
      const con = internals(b).connection;
      const parsed = new Promise<boolean>((resolve) => {
        con.once('parseComplete', () => resolve(true));
        setTimeout(() => resolve(false), 5000);
      });
      con.parse({ name: 'x', text: 'select 2' });
      con.flush();
      // Odd rounds drop the socket at once, racing the gateway's handling of the Parse.
      if (i % 2 === 0) expect(await parsed, `ParseComplete after Flush #${i}`).toBe(true);
      killSocket(b);
      expect(await fresh(), `lone Parse #${i}`).toEqual(clean);
    }
  });

  it('terminates a client idle in a transaction with 25P03 and rolls its work back', async () => {
    const t = idle;
    const id = 'idler';
    const pw = await t.createDatabase(id);
    const config = t.pgConfig(id, pw);
    await withClient(config, (c) => c.query('create table t (v int)'));
    const a = new pg.Client(config);
    const failed = new Promise<Error & { code?: string; severity?: string }>((resolve) =>
      a.on('error', resolve),
    );
    await a.connect();
    await a.query('begin');
    await a.query('insert into t values (1)');
    const started = Date.now();
    const err = await failed;
    expect(err.code).toBe('25P03');
    expect(err.severity).toBe('FATAL');
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    await a.end().catch(() => undefined);
    const after = await withClient(config, async (c) => {
      await c.query('insert into t values (2)');
      return (await c.query('select array_agg(v)::text as v from t')).rows[0].v;
    });
    expect(after).toBe('{2}');
  });

  it('terminates a client that holds the session mid-unit (Parse + Flush, no Sync), freeing it', async () => {
    const t = idle;
    const id = 'midunit';
    const pw = await t.createDatabase(id);
    const config = t.pgConfig(id, pw);
    const a = new pg.Client(config);
    // node-postgres also complains about the ParseComplete it did not ask for: keep every error.
    const errs: (Error & { code?: string; severity?: string })[] = [];
    a.on('error', (e) => errs.push(e));
    await a.connect();
    const con = internals(a).connection;
    const parsed = new Promise<void>((resolve) => con.once('parseComplete', resolve));
    con.parse({ name: '', text: 'select 1' });
    con.flush();
    await parsed;
    // B waits for the session A holds, and gets it once A is ended.
    const b = await connected(config);
    try {
      expect((await b.query('select 2 as v')).rows).toEqual([{ v: 2 }]);
      await vi.waitFor(() => expect(errs.map((e) => e.code)).toContain('25P03'));
      expect(errs.find((e) => e.code === '25P03')?.severity).toBe('FATAL');
    } finally {
      await b.end();
      await a.end().catch(() => undefined);
    }
  });

  it('caps prepared statements per client, keeping the most recent', async () => {
    const t = idle;
    const id = 'capped';
    const pw = await t.createDatabase(id);
    await withClient(t.pgConfig(id, pw), async (c) => {
      for (let i = 0; i < 10; i++) {
        const r = await c.query({ name: `s${i}`, text: `select $1::int + ${i} as v`, values: [1] });
        expect(r.rows).toEqual([{ v: 1 + i }]);
      }
      const left = await c.query('select name from pg_prepared_statements');
      expect(left.rows.length).toBeLessThanOrEqual(4);
      for (const row of left.rows) expect(row.name).toMatch(/^_g\d+_\d+$/);
      for (let i = 7; i < 10; i++) {
        const r = await c.query({ name: `s${i}`, text: `select $1::int + ${i} as v`, values: [2] });
        expect(r.rows).toEqual([{ v: 2 + i }]);
      }
    });
  });
});

describe('waiting for the session', () => {
  it('fails a query that waits past QUERY_WAIT_TIMEOUT with 57014', async () => {
    const t = tight;
    const id = 'queue';
    const pw = await t.createDatabase(id);
    const a = await connected(t.pgConfig(id, pw));
    const b = await connected(t.pgConfig(id, pw));
    try {
      await a.query('begin');
      const started = Date.now();
      expect(await sqlstateOf(b.query('select 1'))).toBe('57014');
      expect(Date.now() - started).toBeGreaterThanOrEqual(900);
      await a.query('commit');
    } finally {
      await Promise.all([a.end(), b.end().catch(() => undefined)]);
    }
  });

  it('refuses the connection past MAX_CLIENTS_PER_DB with 53300', async () => {
    const t = tight;
    const id = 'full';
    const pw = await t.createDatabase(id);
    const a = await connected(t.pgConfig(id, pw));
    const b = await connected(t.pgConfig(id, pw));
    try {
      expect(await sqlstateOf(withClient(t.pgConfig(id, pw), (c) => c.query('select 1')))).toBe('53300');
      await b.end();
      await vi.waitFor(
        async () => {
          const rows = await withClient(t.pgConfig(id, pw), (c) => c.query('select 1 as v'));
          expect(rows.rows).toEqual([{ v: 1 }]);
        },
        { timeout: 5000, interval: 100 },
      );
    } finally {
      await Promise.all([a.end(), b.end().catch(() => undefined)]);
    }
  });

  it('cancels a waiting query with the right BackendKeyData and ignores a wrong one', async () => {
    const t = patient;
    const id = 'cancel';
    const pw = await t.createDatabase(id);
    const a = await connected(t.pgConfig(id, pw));
    const b = await connected(t.pgConfig(id, pw));
    const key = internals(b);
    try {
      await a.query('begin');
      const waiting = b.query('select 1 as v');
      expect(await stillPending(waiting, 200)).toBe(true);
      await sendCancel(t, id, key.processID, key.secretKey);
      const err = await waiting.then(
        () => undefined,
        (e: { code?: string; severity?: string }) => e,
      );
      expect({ code: err?.code, severity: err?.severity }).toEqual({ code: '57014', severity: 'ERROR' });
      // B keeps its connection: its next query waits for A like any other, then runs.
      const next = b.query('select 2 as v');
      expect(await stillPending(next, 200)).toBe(true);
      await a.query('commit');
      expect((await next).rows).toEqual([{ v: 2 }]);

      await a.query('begin');
      const patientQuery = b.query('select 3 as v');
      await sendCancel(t, id, key.processID, key.secretKey ^ 1);
      expect(await stillPending(patientQuery, 300)).toBe(true);
      await a.query('commit');
      expect((await patientQuery).rows).toEqual([{ v: 3 }]);
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });
});
