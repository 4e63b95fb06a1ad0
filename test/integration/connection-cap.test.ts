import { connect, type Socket } from 'node:net';
import { Client as NeonClient } from '@neondatabase/serverless';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { internals, sendCancel } from '../helpers/clients.js';
import { useWebSocketFrontDoor } from '../helpers/neon.js';
import { sqlstateOf, startTestServer, type TestServer } from '../helpers/server.js';

/**
 * MAX_CONNECTIONS: past it a client hears Postgres's own 53300, a cancel still gets through, the
 * WebSocket door shares the count, and a flood past the margin is closed without being held.
 */
describe('MAX_CONNECTIONS', () => {
  let gw: TestServer;
  let pw = '';

  beforeAll(async () => {
    gw = await startTestServer({ MAX_CONNECTIONS: '3', AUTH_MAX_DELAY: '0' });
    pw = await gw.createDatabase('capped');
    useWebSocketFrontDoor(gw);
  });
  afterAll(() => gw?.close());

  const connected = async () => {
    const c = new pg.Client(gw.pgConfig('capped', pw));
    await c.connect();
    return c;
  };
  const refusal = async (attempt: Promise<unknown>) => {
    const err = (await attempt.then(
      () => undefined,
      (e: unknown) => e,
    )) as { code?: string; message?: string } | undefined;
    return `${err?.code} ${err?.message}`;
  };
  const rawSocket = () =>
    new Promise<Socket>((resolve, reject) => {
      const s = connect(gw.port, '127.0.0.1', () => resolve(s));
      s.once('error', reject);
    });
  const closesWithin = (s: Socket, ms: number) =>
    new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      s.once('close', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });

  it('refuses the next client with 53300, serves a cancel at the cap, and admits again once one leaves', async () => {
    const clients = [await connected(), await connected(), await connected()];
    try {
      expect(await refusal(connected())).toBe('53300 sorry, too many clients already');
      const url = `postgres://postgres:${pw}@capped.db.example.com/postgres`;
      const ws = new NeonClient(url);
      // The driver pipelines its login: the refusal may come as an 'error' event after connect.
      const wsRefused = new Promise<unknown>((resolve) => {
        ws.on('error', resolve);
        ws.connect()
          .then(() => ws.query('select 1'))
          .catch(resolve);
      });
      expect(await refusal(wsRefused.then((e) => Promise.reject(e)))).toBe(
        '53300 sorry, too many clients already',
      );
      const [first] = clients as [pg.Client];
      const sleeping = sqlstateOf(first.query('select pg_sleep(30)'));
      await new Promise((resolve) => setTimeout(resolve, 200));
      const { processID, secretKey } = internals(first);
      await sendCancel(gw, 'capped', processID, secretKey);
      expect(await sleeping).toBe('57014');
      await clients.pop()?.end();
      const again = await connected();
      clients.push(again);
      expect((await again.query('select 1 as one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    }
  });

  it('closes connections past the margin at once instead of holding them', async () => {
    const clients = [await connected(), await connected(), await connected()];
    // Held until they send a startup packet (or LOGIN_TIMEOUT): the margin, 16 for a cap of 3.
    const held: Socket[] = [];
    try {
      for (let i = 0; i < 16; i++) held.push(await rawSocket());
      await new Promise((resolve) => setTimeout(resolve, 200));
      const past = await rawSocket();
      expect(await closesWithin(past, 5000)).toBe(true);
      expect(await closesWithin(held[0] as Socket, 300)).toBe(false);
    } finally {
      for (const s of held) s.destroy();
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    }
    // Every slot is given back: a full set of clients connects again.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const again = [await connected(), await connected(), await connected()];
    await Promise.all(again.map((c) => c.end()));
  });
});
