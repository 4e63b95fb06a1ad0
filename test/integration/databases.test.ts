import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { firstRow } from '../../src/wire/backend-scan.js';
import { query } from '../../src/wire/protocol.js';
import { stillPending } from '../helpers/clients.js';
import { psql, sqlstateOf, startTestServer, type TestServer, withClient } from '../helpers/server.js';

let t: TestServer;

beforeAll(async () => {
  t = await startTestServer({ QUERY_WAIT_TIMEOUT: '2s', MAX_CLIENTS_PER_DB: '3' });
});
afterAll(() => t?.close());

describe('lazy databases', () => {
  it('keeps committed data across a server restart', async () => {
    const pw = await t.createDatabase('durable');
    await withClient(t.pgConfig('durable', pw), async (c) => {
      await c.query('create table notes (id int primary key, body text)');
      await c.query("insert into notes values (1, 'kept')");
    });
    await t.restart();
    expect(t.server.registry.openCount).toBe(0);
    const rows = await withClient(t.pgConfig('durable', pw), (c) => c.query('select body from notes'));
    expect(rows.rows).toEqual([{ body: 'kept' }]);
  });

  it('opens one PGlite for clients that arrive together, and loses no write', async () => {
    const pw = await t.createDatabase('together');
    const opensBefore = t.server.registry.stats.opens;
    const clients = Array.from({ length: 3 }, () => new pg.Client(t.pgConfig('together', pw)));
    await Promise.all(clients.map((c) => c.connect()));
    expect(t.server.registry.stats.opens - opensBefore).toBe(1);
    // Session pool mode: clients take turns, each holding the database until it disconnects.
    await clients[0]?.query('create table if not exists hits (client int)');
    await clients[0]?.end();
    await Promise.all(
      clients.slice(1).map(async (c, i) => {
        for (let n = 0; n < 10; n++) await c.query('insert into hits values ($1)', [i]);
        await c.end();
      }),
    );
    const rows = await withClient(t.pgConfig('together', pw), (c) =>
      c.query('select client, count(*)::int as n from hits group by client order by client'),
    );
    expect(rows.rows).toEqual([
      { client: 0, n: 10 },
      { client: 1, n: 10 },
    ]);
  });

  it('rolls back what a disconnected client left open, so the next client starts clean', async () => {
    const pw = await t.createDatabase('rollback');
    await t.server.catalog.updateDatabase('rollback', { poolMode: 'session' });
    await withClient(t.pgConfig('rollback', pw), (c) => c.query('create table t (v int)'));
    const a = new pg.Client(t.pgConfig('rollback', pw));
    a.on('error', () => undefined);
    await a.connect();
    await a.query('begin');
    await a.query('insert into t values (1)');
    await a.query("set application_name = 'left-behind'");
    await a.query('prepare leftover as select 1');
    // Drop the socket without Terminate, mid-transaction.
    (a as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    const state = await withClient(t.pgConfig('rollback', pw), async (c) => ({
      rows: (await c.query('select count(*)::int as n from t')).rows[0].n,
      app: (await c.query("select current_setting('application_name') as v")).rows[0].v,
      prepared: (await c.query('select count(*)::int as n from pg_prepared_statements')).rows[0].n,
    }));
    expect(state).toEqual({ rows: 0, app: '', prepared: 0 });
  });

  it('fails a client that waits longer than QUERY_WAIT_TIMEOUT with 57014', async () => {
    const pw = await t.createDatabase('busy');
    await withClient(t.pgConfig('busy', pw), async (holder) => {
      // An open transaction keeps the database pinned to this client.
      await holder.query('begin');
      const code = await sqlstateOf(withClient(t.pgConfig('busy', pw), (c) => c.query('select 1')));
      expect(code).toBe('57014');
    });
  });

  it('refuses clients past MAX_CLIENTS_PER_DB with 53300', async () => {
    const pw = await t.createDatabase('crowded');
    const clients = Array.from({ length: 3 }, () => new pg.Client(t.pgConfig('crowded', pw)));
    await Promise.all(clients.map((c) => c.connect()));
    try {
      const code = await sqlstateOf(withClient(t.pgConfig('crowded', pw), (c) => c.query('select 1')));
      expect(code).toBe('53300');
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });

  it('gives 3D000 when an authenticated database has lost its data directory', async () => {
    const pw = await t.createDatabase('vanished');
    const { rm } = await import('node:fs/promises');
    await rm(`${t.dataDir}/vanished`, { recursive: true });
    const code = await sqlstateOf(withClient(t.pgConfig('vanished', pw), (c) => c.query('select 1')));
    expect(code).toBe('3D000');
  });
});

describe('closing', () => {
  it('waits for whoever holds the session (a snapshot copying the directory) before closing', async () => {
    const pw = await t.createDatabase('held-close');
    await withClient(t.pgConfig('held-close', pw), (c) => c.query('create table kept (v int)'));
    const db = (await t.server.registry.openDatabases()).find((d) => d.id === 'held-close');
    if (!db) throw new Error('held-close is not open');
    const snapshot = Symbol('snapshot');
    await db.hold.acquire(snapshot);
    const closing = t.server.registry.close('held-close');
    expect(await stillPending(closing, 500)).toBe(true);
    // The engine is still there for the holder.
    expect(firstRow(await db.engine.exec(query('select count(*) from kept')))).toEqual(['0']);
    db.hold.release(snapshot);
    await closing;
    expect((await t.server.registry.openDatabases()).map((d) => d.id)).not.toContain('held-close');
  });
});

describe('read-only databases', () => {
  it('refuses writes with 25006 and serves reads', async () => {
    const pw = await t.createDatabase('reports');
    await withClient(t.pgConfig('reports', pw), async (c) => {
      await c.query('create table facts (v int)');
      await c.query('insert into facts values (42)');
    });
    await t.server.registry.close('reports');
    await t.server.catalog.updateDatabase('reports', { readOnly: true });
    await withClient(t.pgConfig('reports', pw), async (c) => {
      expect((await c.query('select v from facts')).rows).toEqual([{ v: 42 }]);
      expect(await sqlstateOf(c.query('insert into facts values (1)'))).toBe('25006');
      expect(await sqlstateOf(c.query('update facts set v = 1'))).toBe('25006');
      expect(await sqlstateOf(c.query('create temp table scratch (v int)'))).toBe('25006');
      // Turning read-only off is not a way around it: the role itself cannot write.
      await c.query('set default_transaction_read_only = off');
      expect(await sqlstateOf(c.query('insert into facts values (1)'))).toBe('42501');
    });
  });

  it('cannot be talked back into the superuser identity', async () => {
    const pw = await t.createDatabase('locked', { readOnly: true });
    await withClient(t.pgConfig('locked', pw), async (c) => {
      for (const sql of [
        'reset session authorization',
        'set session authorization default',
        'discard all',
        "select set_config('session_authorization', 'postgres', false)",
        'set "session_authorization" = postgres',
        'set U&"session\\005Fauthorization" = postgres',
        'set U&"session\\005F\\0061uthorization" = postgres',
        'set role postgres',
        "do $$ begin execute 'reset role'; end $$",
      ]) {
        const code = await sqlstateOf(c.query(sql));
        expect(code, sql).toMatch(/^(42501|42883)$/);
      }
      await c.query('reset role');
      const who = await c.query('select session_user as s, current_user as u');
      expect(who.rows[0]).toEqual({ s: 'gateway_readonly', u: 'gateway_readonly' });
      // The extended protocol gets the same refusal.
      expect(await sqlstateOf(c.query({ text: 'reset session authorization', values: [] }))).toBe('42501');
    });
    // And the next client still starts read-only after the first one left.
    await withClient(t.pgConfig('locked', pw), async (c) => {
      expect(await sqlstateOf(c.query('create table x (v int)'))).toMatch(/^(25006|42501)$/);
      expect((await c.query("select current_setting('is_superuser') as v")).rows[0].v).toBe('off');
    });
  });

  it('is served through a non-superuser role', async () => {
    const pw = await t.createDatabase('ro2', { readOnly: true });
    const r = await psql(
      `host=ro2.db.example.com hostaddr=127.0.0.1 port=${t.port} user=postgres dbname=postgres sslmode=verify-full sslrootcert=${t.caPath}`,
      ['-tAc', "select current_setting('is_superuser')"],
      { PGPASSWORD: pw },
    );
    expect(r.stdout.trim(), r.stderr).toBe('off');
  });
});
