import { Client, Pool } from '@neondatabase/serverless';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { useWebSocketFrontDoor } from '../helpers/neon.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/** The WebSocket front door with the real Neon driver's Pool and Client, over wss. */
describe('WebSocket with the Neon Pool and Client', () => {
  let gw: TestServer;
  let password = '';
  let url = '';

  beforeAll(async () => {
    gw = await startTestServer({ LOGIN_TIMEOUT: '2s', AUTH_MAX_DELAY: '0' });
    password = await gw.createDatabase('sock');
    url = `postgres://postgres:${password}@sock.db.example.com/postgres`;
    useWebSocketFrontDoor(gw);
  });
  afterAll(() => gw?.close());

  /** An open raw WebSocket, and what it received until it was closed. */
  const rawSocket = (path = '/v2?address=sock.db.example.com:5432') =>
    new Promise<{ ws: WebSocket; closed: Promise<Buffer> }>((resolve, reject) => {
      const ws = new WebSocket(`wss://localhost:${gw.httpPort}${path}`, { ca: gw.ca });
      const got: Buffer[] = [];
      ws.on('message', (d: Buffer) => got.push(d));
      const closed = new Promise<Buffer>((done) => ws.once('close', () => done(Buffer.concat(got))));
      ws.once('open', () => resolve({ ws, closed }));
      ws.once('error', reject);
    });

  it('runs 10 concurrent clients with transactions and prepared statements', async () => {
    const pool = new Pool({ connectionString: url, max: 10 });
    await pool.query('create table if not exists counters (id int primary key, n int not null)');
    await pool.query('insert into counters values (1, 0) on conflict do nothing');
    await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const client = await pool.connect();
        try {
          for (let round = 0; round < 5; round++) {
            await client.query('begin');
            await client.query({
              name: 'bump',
              text: 'update counters set n = n + $1 where id = 1',
              values: [1],
            });
            const { rows } = await client.query({
              name: 'read',
              text: 'select n from counters where id = $1',
              values: [1],
            });
            expect(rows[0].n).toBeGreaterThan(0);
            await client.query('commit');
          }
          expect((await client.query('select $1::int as i', [i])).rows).toEqual([{ i }]);
        } finally {
          client.release();
        }
      }),
    );
    expect((await pool.query('select n from counters where id = 1')).rows).toEqual([{ n: 50 }]);
    await pool.end();
  });

  it('cancels a running statement through a second WebSocket', async () => {
    const client = new Client(url);
    await client.connect();
    // With a pipelined connect, connect() resolves before the server's BackendKeyData arrives.
    await client.query('select 1');
    const { processID, secretKey } = client as unknown as { processID: number; secretKey: number };
    const running = client.query('select pg_sleep(30)').then(
      () => 'finished',
      (err: { code?: string }) => err.code,
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    const { ws: canceller } = await rawSocket();
    const cancel = Buffer.alloc(16);
    cancel.writeInt32BE(16, 0);
    cancel.writeInt32BE(80877102, 4);
    cancel.writeInt32BE(processID, 8);
    cancel.writeInt32BE(secretKey, 12);
    canceller.send(cancel);
    expect(await running).toBe('57014');
    expect((await client.query('select 1 as ok')).rows).toEqual([{ ok: 1 }]);
    await client.end();
  });

  it('rolls back a client killed mid-transaction', async () => {
    const pool = new Pool({ connectionString: url });
    await pool.query('create table if not exists notes (t text)');
    await pool.end();
    const doomed = new Client(url);
    doomed.on('error', () => undefined);
    await doomed.connect();
    await doomed.query('begin');
    await doomed.query("insert into notes values ('uncommitted')");
    (doomed as unknown as { connection: { stream: { ws: WebSocket } } }).connection.stream.ws.terminate();
    await new Promise((resolve) => setTimeout(resolve, 300));
    const next = new Client(url);
    await next.connect();
    expect((await next.query('select count(*)::int as n from notes')).rows).toEqual([{ n: 0 }]);
    // Outside any transaction: in a simple query, now() is this statement's own start.
    expect((await next.query('select now() = statement_timestamp() as fresh')).rows).toEqual([
      { fresh: true },
    ]);
    await next.end();
  });

  it('runs a first query of 2 MB sent with the password, as SQL text and as a parameter', async () => {
    // The driver sends startup, password and first query in one message, before the login is
    // answered; such a query is session traffic, bounded by MAX_MESSAGE_SIZE, not by 64 KiB.
    const big = 'x'.repeat(2_000_000);
    const asText = new Client(url);
    const connected = asText.connect();
    const textQuery = asText.query(`select length('${big}') as n`);
    await connected;
    expect((await textQuery).rows).toEqual([{ n: big.length }]);
    await asText.end();
    const asParam = new Client(url);
    const paramConnected = asParam.connect();
    const paramQuery = asParam.query('select length($1) as n', [big]);
    await paramConnected;
    expect((await paramQuery).rows).toEqual([{ n: big.length }]);
    await asParam.end();
  });

  it('refuses a wrong password with 28P01', async () => {
    const client = new Client('postgres://postgres:wrong-password-1@sock.db.example.com/postgres');
    const failed = new Promise((resolve) => client.on('error', resolve));
    // A pipelined connect resolves at once; the refusal answers the first query.
    await client.connect().catch(() => undefined);
    const refusal = await Promise.race([client.query('select 1').catch((err: unknown) => err), failed]);
    expect(refusal).toMatchObject({ code: '28P01' });
  });

  it('closes sockets that send garbage or an oversized startup, opening nothing', async () => {
    const opens = gw.server.registry.stats.opens;
    const { ws: garbage, closed: garbageClosed } = await rawSocket();
    garbage.send(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    const { ws: huge, closed: hugeClosed } = await rawSocket();
    const head = Buffer.alloc(8);
    head.writeInt32BE(1_000_000, 0);
    head.writeInt32BE(196608, 4);
    huge.send(head);
    expect((await hugeClosed).toString()).toContain('invalid startup packet length');
    await garbageClosed;
    expect(gw.server.registry.stats.opens).toBe(opens);
  });

  it('closes 300 idle unauthenticated sockets after LOGIN_TIMEOUT', { timeout: 60_000 }, async () => {
    const opens = gw.server.registry.stats.opens;
    const sockets = await Promise.all(Array.from({ length: 300 }, () => rawSocket()));
    const started = Date.now();
    await Promise.all(sockets.map((s) => s.closed));
    expect(Date.now() - started).toBeGreaterThan(1000);
    expect(gw.server.registry.stats.opens).toBe(opens);
  });
});
