import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * A `/sql` client that sends a request and then never reads its answer must not hold the
 * answer in the server's memory for as long as it keeps the connection: the response is cut
 * HTTP_REQUEST_TIMEOUT after it was ended, and the server answers others meanwhile.
 */
describe('a /sql client that never reads its answer', () => {
  let gw: TestServer;
  let password = '';

  beforeAll(async () => {
    gw = await startTestServer({
      HTTP_TLS: 'disable',
      AUTH_MAX_DELAY: '0',
      HTTP_REQUEST_TIMEOUT: '2s',
      MAX_HTTP_RESPONSE: '64MB',
    });
    password = await gw.createDatabase('slow');
  });
  afterAll(() => gw?.close());

  const request = (query: string) => {
    const body = JSON.stringify({ query, params: [] });
    return [
      'POST /sql HTTP/1.1',
      'host: slow.db.example.com',
      'content-type: application/json',
      `neon-connection-string: postgres://postgres:${password}@slow.db.example.com/postgres`,
      `content-length: ${Buffer.byteLength(body)}`,
      '',
      body,
    ].join('\r\n');
  };

  it('has its answer cut once it waited past HTTP_REQUEST_TIMEOUT', async () => {
    const socket = net.connect(gw.httpPort, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    // ~40 MB of JSON: more than loopback's socket buffers take, so the server cannot finish it.
    socket.write(request("select repeat('x', 1000000) from generate_series(1, 40)"));
    let received = 0;
    socket.on('data', (chunk: Buffer) => {
      // The first chunk shows the answer has begun; then the client stops reading for a while.
      if (received === 0) socket.pause();
      received += chunk.length;
    });
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    await new Promise((resolve) => setTimeout(resolve, 6_000));
    // Reading again: what the server had not handed to the kernel by the deadline was dropped.
    socket.resume();
    await closed;
    expect(received).toBeGreaterThan(0);
    expect(received).toBeLessThan(40_000_000);
    // The database answers the next request.
    const res = await fetch(`http://127.0.0.1:${gw.httpPort}/sql`, {
      method: 'POST',
      headers: {
        'neon-connection-string': `postgres://postgres:${password}@slow.db.example.com/postgres`,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ query: 'select 1 as one', params: [] }),
    });
    expect(res.status).toBe(200);
  });

  it('answers a request body that never finishes with 408 (not 400), soon after HTTP_REQUEST_TIMEOUT', async () => {
    const socket = net.connect(gw.httpPort, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    const head = request('select 1')
      .split('\r\n\r\n')[0]
      ?.replace(/content-length: \d+/, 'content-length: 100');
    socket.write(`${head}\r\n\r\n{"query"`);
    let answer = '';
    socket.on('data', (chunk: Buffer) => {
      answer += chunk.toString();
    });
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      setTimeout(() => resolve(), 20_000).unref();
    });
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
  });
});
