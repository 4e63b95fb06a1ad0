import { type ClientHttp2Session, connect, constants } from 'node:http2';
import { Agent, request } from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

/** The HTTPS front door speaks HTTP/2 to clients that offer it (ALPN h2), HTTP/1.1 to the rest. */
describe('POST /sql over HTTP/2', () => {
  let gw: TestServer;
  let conn = '';
  let session: ClientHttp2Session;

  beforeAll(async () => {
    gw = await startTestServer({ AUTH_MAX_DELAY: '0', HTTP_REQUEST_TIMEOUT: '3s' });
    const password = await gw.createDatabase('hh');
    conn = `postgres://postgres:${password}@hh.db.example.com/postgres`;
    session = connect(`https://localhost:${gw.httpPort}`, { ca: gw.ca });
    await new Promise<void>((resolve, reject) => {
      session.once('connect', () => resolve());
      session.once('error', reject);
    });
  });
  afterAll(async () => {
    session?.close();
    await gw?.close();
  });

  /** One request on the shared HTTP/2 connection: status, headers, body. */
  const h2 = (method: string, body?: unknown, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
      const stream = session.request({
        [constants.HTTP2_HEADER_METHOD]: method,
        [constants.HTTP2_HEADER_PATH]: '/sql',
        'content-type': 'application/json',
        'neon-connection-string': conn,
        ...headers,
      });
      let got: Record<string, unknown> = {};
      const chunks: Buffer[] = [];
      stream.on('response', (h) => {
        got = h;
      });
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () =>
        resolve({ status: Number(got[':status']), headers: got, body: Buffer.concat(chunks).toString() }),
      );
      stream.on('error', reject);
      stream.end(body === undefined ? undefined : Buffer.isBuffer(body) ? body : JSON.stringify(body));
    });

  it('negotiates h2 and answers a query', async () => {
    expect(session.alpnProtocol).toBe('h2');
    // One connection cannot open an unbounded number of requests at once.
    expect(session.remoteSettings.maxConcurrentStreams).toBe(100);
    const res = await h2('POST', { query: 'select $1::int + 1 as n', params: ['41'] });
    expect(res.status).toBe(200);
    expect(res.headers['access-control-allow-origin']).toBe('*');
    expect(JSON.parse(res.body)).toMatchObject({ command: 'SELECT', rowCount: 1, rows: [{ n: '42' }] });
  });

  it('runs concurrent requests as streams of one connection, batches and errors included', async () => {
    const answers = await Promise.all([
      ...Array.from({ length: 10 }, (_, i) =>
        h2('POST', { query: 'select $1::int as i', params: [String(i)] }),
      ),
      h2('POST', { queries: [{ query: 'select 1 as a' }, { query: 'select 2 as b' }] }),
      h2('POST', { query: 'select * from no_such_table' }),
    ]);
    for (let i = 0; i < 10; i++) {
      expect(answers[i]?.status).toBe(200);
      expect(JSON.parse(answers[i]?.body ?? '').rows).toEqual([{ i: String(i) }]);
    }
    expect(JSON.parse(answers[10]?.body ?? '').results.map((r: { rows: unknown[] }) => r.rows)).toEqual([
      [{ a: '1' }],
      [{ b: '2' }],
    ]);
    expect(answers[11]?.status).toBe(400);
    expect(JSON.parse(answers[11]?.body ?? '')).toMatchObject({ code: '42P01' });
  });

  it('cancels the statement of a request whose stream the client resets', { timeout: 20_000 }, async () => {
    const stream = session.request({
      [constants.HTTP2_HEADER_METHOD]: 'POST',
      [constants.HTTP2_HEADER_PATH]: '/sql',
      'neon-connection-string': conn,
    });
    stream.on('error', () => {});
    stream.end(JSON.stringify({ query: 'select pg_sleep(60)' }));
    const reset = new Promise<void>((resolve) => stream.once('close', () => resolve()));
    await new Promise((resolve) => setTimeout(resolve, 500));
    stream.close(constants.NGHTTP2_CANCEL);
    await reset;
    // The database's session is free again long before the sleep would have ended.
    const next = await h2('POST', { query: 'select 5 as five' });
    expect(JSON.parse(next.body).rows).toEqual([{ five: '5' }]);
  });

  it('cancels the statement of an HTTP/1.1 request whose client hangs up', { timeout: 20_000 }, async () => {
    const req = request({
      host: 'localhost',
      port: gw.httpPort,
      path: '/sql',
      method: 'POST',
      ca: gw.ca,
      headers: { 'content-type': 'application/json', 'neon-connection-string': conn },
    });
    req.on('error', () => {});
    req.end(JSON.stringify({ query: 'select pg_sleep(60)' }));
    await new Promise((resolve) => setTimeout(resolve, 500));
    req.destroy();
    const next = await h2('POST', { query: 'select 6 as six' });
    expect(JSON.parse(next.body).rows).toEqual([{ six: '6' }]);
  });

  it('closes an idle HTTP/1.1 keep-alive connection', { timeout: 20_000 }, async () => {
    const agent = new Agent({ ca: gw.ca, keepAlive: true });
    try {
      const socketClosed = await new Promise<Promise<void>>((resolve, reject) => {
        const req = request(
          { host: 'localhost', port: gw.httpPort, path: '/sql', method: 'OPTIONS', agent },
          (res) => {
            res.resume();
            resolve(new Promise<void>((done) => res.socket.once('close', () => done())));
          },
        );
        req.on('error', reject);
        req.end();
      });
      // The client keeps the socket for reuse; the server ends it once it has been idle.
      await socketClosed;
    } finally {
      agent.destroy();
    }
  });

  it('ends a stream whose body does not arrive within HTTP_REQUEST_TIMEOUT with 408', {
    timeout: 20_000,
  }, async () => {
    const stream = session.request({
      [constants.HTTP2_HEADER_METHOD]: 'POST',
      [constants.HTTP2_HEADER_PATH]: '/sql',
      'content-type': 'application/json',
      'neon-connection-string': conn,
    });
    // A byte now and then keeps the connection busy; the request itself never completes.
    stream.write('{');
    const trickle = setInterval(() => stream.write(' '), 500);
    try {
      const status = await new Promise<number>((resolve, reject) => {
        stream.once('response', (h) => resolve(Number(h[constants.HTTP2_HEADER_STATUS])));
        stream.once('error', reject);
      });
      expect(status).toBe(408);
    } finally {
      clearInterval(trickle);
      stream.close();
    }
    // The connection still serves other requests.
    expect((await h2('POST', { query: 'select 1 as v' })).status).toBe(200);
  });

  it('refuses text that is not valid UTF-8 with 22021 instead of storing U+FFFD', async () => {
    const rawBytes = Buffer.concat([
      Buffer.from('{"query":"select $1::text as v","params":["a'),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('"]}'),
    ]);
    for (const body of [
      rawBytes,
      { query: 'select $1::text as v', params: ['\ud800'] },
      { query: "select '\udc00'" },
    ]) {
      const res = await h2('POST', body);
      expect(res.status).toBe(400);
      expect(JSON.parse(res.body).code).toBe('22021');
    }
    const ok = await h2('POST', { query: 'select $1::text as v', params: ['é 😀'] });
    expect(JSON.parse(ok.body).rows).toEqual([{ v: 'é 😀' }]);
  });

  it('answers the CORS preflight and refuses bad bodies over h2', async () => {
    const preflight = await h2('OPTIONS');
    expect(preflight.status).toBe(204);
    expect(String(preflight.headers['access-control-allow-headers'])).toContain('Neon-Connection-String');
    const malformed = await h2('POST', undefined, {});
    expect(malformed.status).toBe(400);
    const wrong = await h2(
      'POST',
      { query: 'select 1' },
      { 'neon-connection-string': conn.replace(':pw-', ':no-') },
    );
    expect(wrong.status).toBe(400);
    expect(JSON.parse(wrong.body)).toMatchObject({ code: '28P01' });
  });

  it('still speaks HTTP/1.1 to a client that does not offer h2', async () => {
    const res = await new Promise<{ version: string; status: number; body: string }>((resolve, reject) => {
      const req = request(
        {
          host: 'localhost',
          port: gw.httpPort,
          path: '/sql',
          method: 'POST',
          ca: gw.ca,
          headers: { 'content-type': 'application/json', 'neon-connection-string': conn },
        },
        (r) => {
          const chunks: Buffer[] = [];
          r.on('data', (c: Buffer) => chunks.push(c));
          r.on('end', () =>
            resolve({
              version: r.httpVersion,
              status: r.statusCode ?? 0,
              body: Buffer.concat(chunks).toString(),
            }),
          );
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify({ query: 'select 7 as seven' }));
    });
    expect(res).toMatchObject({ version: '1.1', status: 200 });
    expect(JSON.parse(res.body).rows).toEqual([{ seven: '7' }]);
  });
});

describe('shutdown with HTTP/2 clients connected', () => {
  it('ends an idle HTTP/2 connection instead of waiting for the client to hang up', async () => {
    const gw = await startTestServer({ AUTH_MAX_DELAY: '0' });
    let session: ClientHttp2Session | undefined;
    try {
      const password = await gw.createDatabase('bye');
      session = connect(`https://localhost:${gw.httpPort}`, { ca: gw.ca });
      const closed = new Promise<void>((resolve) => session?.once('close', () => resolve()));
      const stream = session.request({
        [constants.HTTP2_HEADER_METHOD]: 'POST',
        [constants.HTTP2_HEADER_PATH]: '/sql',
        'neon-connection-string': `postgres://postgres:${password}@bye.db.example.com/postgres`,
      });
      stream.resume();
      await new Promise<void>((resolve, reject) => {
        stream.once('end', () => resolve());
        stream.once('error', reject);
        stream.end(JSON.stringify({ query: 'select 1' }));
      });
      // The connection is idle and the client keeps it: closing the server ends it.
      await gw.close();
      await closed;
      expect(session.closed || session.destroyed).toBe(true);
    } finally {
      session?.destroy();
      await gw.close();
    }
  }, 30_000);
});
