import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cstr, tagged } from '../helpers/messages.js';
import { rawLogin } from '../helpers/raw-auth.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * A client that sends a query and stops reading its results holds the database's session: the
 * worker blocks once 4 MB are in flight, as a Postgres backend blocks on a full socket. Every
 * other client of that database waited for it without bound. Now it is ended after
 * IDLE_IN_TRANSACTION_TIMEOUT without a drain, as a client idle in a transaction is.
 */
describe('a client that stops reading its results', () => {
  let gw: TestServer;
  let pw = '';

  beforeAll(async () => {
    gw = await startTestServer({ IDLE_IN_TRANSACTION_TIMEOUT: '2s', QUERY_WAIT_TIMEOUT: '20s' });
    pw = await gw.createDatabase('stall');
  });
  afterAll(() => gw?.close());

  it('is ended, and the database serves its other clients', async () => {
    const stalled = await rawLogin({ port: gw.port, ca: gw.ca, id: 'stall', password: pw });
    const closed = new Promise<void>((resolve) => stalled.socket.once('close', () => resolve()));
    stalled.socket.on('error', () => undefined);
    stalled.socket.pause(); // reads nothing from here on
    stalled.socket.write(tagged('Q', cstr("select repeat('x', 1000) from generate_series(1, 100000)")));

    const other = new pg.Client(gw.pgConfig('stall', pw));
    await other.connect();
    try {
      // Waits behind the stalled client until it is ended, then runs.
      const { rows } = await other.query('select 41 + 1 as answer');
      expect(rows).toEqual([{ answer: 42 }]);
      // Its end reaches it once it reads again (a paused socket never sees it).
      stalled.socket.resume();
      await closed;
      expect(gw.errorLogs).toEqual([]);
    } finally {
      await other.end();
      stalled.socket.destroy();
    }
  });
});
