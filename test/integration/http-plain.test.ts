import { neon, neonConfig, Pool } from '@neondatabase/serverless';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * Local development without certificates: HTTP_TLS=disable on a loopback HTTP_HOST serves
 * `POST /sql` over plain HTTP (HTTP/1.1 only) and the WebSocket over `ws://`, with the same
 * cleartext password check.
 */
describe('front door with HTTP_TLS=disable on loopback', () => {
  let gw: TestServer;
  let url = '';

  beforeAll(async () => {
    gw = await startTestServer({ HTTP_TLS: 'disable', AUTH_MAX_DELAY: '0' });
    const password = await gw.createDatabase('plain');
    url = `postgres://postgres:${password}@plain.db.example.com/postgres`;
    // Node's own fetch, unmodified: plain http needs no CA.
    neonConfig.fetchEndpoint = () => `http://127.0.0.1:${gw.httpPort}/sql`;
    neonConfig.webSocketConstructor = WebSocket;
    neonConfig.wsProxy = (host, port) => `127.0.0.1:${gw.httpPort}/v2?address=${host}:${port}`;
    neonConfig.useSecureWebSocket = false;
    neonConfig.pipelineConnect = 'password';
  });
  afterAll(() => gw?.close());

  it('answers neon() over http://', async () => {
    const sql = neon(url);
    expect(await sql`select ${'plain'}::text as v`).toEqual([{ v: 'plain' }]);
    const wrong = await neon(url.replace(':pw-', ':nope-'))`select 1`.catch(
      (err: { code?: string }) => err.code,
    );
    expect(wrong).toBe('28P01');
  });

  it('runs a Pool over ws://', async () => {
    const pool = new Pool({ connectionString: url, max: 3 });
    try {
      const sums = await Promise.all(
        [1, 2, 3].map(async (i) => (await pool.query('select $1::int * 2 as d', [i])).rows[0].d),
      );
      expect(sums).toEqual([2, 4, 6]);
    } finally {
      await pool.end();
    }
  });
});
