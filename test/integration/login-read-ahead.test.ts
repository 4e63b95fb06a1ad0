import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { cstr, tagged } from '../helpers/messages.js';
import { errorFields, readUntilClose, startupMessage, tlsConnect } from '../helpers/raw.js';
import { BackendReader, parseErrorFields } from '../helpers/raw-auth.js';
import { sqlstateOf, startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * What a client sends ahead of its login. Only password messages belong to the login: a first
 * query sent with them waits for the session (whatever its size), a query sent instead of the
 * password is refused as Postgres does (08P01), and a client that keeps sending while its
 * password is being checked is not read any further, so it cannot fill the server's memory.
 */
describe('bytes sent before the login completes', () => {
  let gw: TestServer;

  beforeAll(async () => {
    // One failed login makes the next answer wait 3 s: the flood below is sent in that wait.
    gw = await startTestServer({ AUTH_FAIL_THRESHOLD: '1', AUTH_BASE_DELAY: '3s', AUTH_MAX_DELAY: '3s' });
    await gw.createDatabase('ahead');
  });
  afterAll(() => gw?.close());

  /** TLS to the database and a StartupMessage; the reader has seen nothing yet. */
  const started = async () => {
    const socket = await tlsConnect(gw.port, gw.ca, 'ahead.db.example.com');
    socket.write(startupMessage({ user: 'postgres', database: 'postgres' }));
    return socket;
  };

  it('refuses a query sent in place of the password with 08P01', async () => {
    const socket = await started();
    socket.write(tagged('Q', 'select 1\0'));
    const { data, closed } = await readUntilClose(socket);
    expect(closed).toBe(true);
    expect(errorFields(data)).toMatchObject({
      C: '08P01',
      M: 'expected password response, got message type 81',
    });
  });

  it('refuses a large message of another type from its first byte, without waiting for its body', async () => {
    const socket = await started();
    // Claims 1 GiB and sends 5 bytes of it: the answer must not wait for the rest.
    socket.write(Buffer.from([0x51, 0x40, 0, 0, 0]));
    const { data, closed } = await readUntilClose(socket);
    expect(closed).toBe(true);
    expect(errorFields(data)?.C).toBe('08P01');
  });

  it('closes quietly on a Terminate before the password', async () => {
    const socket = await started();
    socket.write(tagged('X', ''));
    const { data, closed } = await readUntilClose(socket);
    expect(closed).toBe(true);
    expect(errorFields(data)).toBeUndefined();
  });

  it('stops reading a client that keeps sending while its password is checked', async () => {
    expect(
      await sqlstateOf(withClient(gw.pgConfig('ahead', 'wrong-password'), (c) => c.query('select 1'))),
    ).toBe('28P01');
    const socket = await started();
    const reader = new BackendReader(socket);
    const auth = await reader.message(10_000);
    expect(auth.type).toBe('R');
    const first = Buffer.from('n,,n=*,r=abcdefghijklmnopqrstuvwx');
    const length = Buffer.alloc(4);
    length.writeInt32BE(first.length);
    socket.write(tagged('p', Buffer.concat([Buffer.from('SCRAM-SHA-256\0'), length, first])));
    const serverFirst = await reader.message(10_000);
    expect(serverFirst.type).toBe('R');
    const nonce = /r=([^,]+)/.exec(serverFirst.body.subarray(4).toString())?.[1];
    // A wrong proof: the server checks it, then waits out the throttle's 3 s before answering.
    socket.write(tagged('p', `c=biws,r=${nonce},p=${Buffer.alloc(32).toString('base64')}`));
    // 32 MiB of password messages behind it. A server that reads them all holds them in memory.
    const junk = tagged('p', Buffer.alloc(1019, 0x61));
    const flood = Buffer.concat(Array.from({ length: 32 * 1024 }, () => junk));
    socket.write(flood);
    // Loopback and the kernel's buffers take a few MiB; a server still reading takes it all.
    const deadline = Date.now() + 2000;
    while (Date.now() < deadline && socket.writableLength > 1024 * 1024)
      await new Promise((resolve) => setTimeout(resolve, 50));
    expect(socket.writableLength).toBeGreaterThan(16 * 1024 * 1024);
    const refusal = await reader.message(10_000);
    expect(refusal.type).toBe('E');
    expect(parseErrorFields(refusal.body).C).toBe('28P01');
    socket.destroy();
  });
});

/**
 * Over WebSocket a frame is buffered whole before its Postgres messages are read. Clients still
 * logging in share one pool of the frame limit (64 MiB) past a small allowance each: a large
 * pipelined login works while the pool has room, and clients that together send more than it
 * holds before logging in are refused with 53000 instead of each holding up to 64 MiB.
 */
describe('WebSocket bytes before login', () => {
  let gw: TestServer;
  let password = '';
  const MiB = 1024 * 1024;

  beforeAll(async () => {
    gw = await startTestServer({ LOGIN_TIMEOUT: '30s', AUTH_MAX_DELAY: '0' });
    password = await gw.createDatabase('wsahead');
  });
  afterAll(() => gw?.close());

  /** An open WebSocket to the database and what it received until closed. */
  const open = () =>
    new Promise<{ ws: WebSocket; closed: Promise<Buffer> }>((resolve, reject) => {
      const ws = new WebSocket(`wss://localhost:${gw.httpPort}/v2?address=wsahead.db.example.com:5432`, {
        ca: gw.ca,
      });
      const got: Buffer[] = [];
      ws.on('message', (d: Buffer) => got.push(d));
      ws.on('error', () => undefined);
      const closed = new Promise<Buffer>((done) => ws.once('close', () => done(Buffer.concat(got))));
      ws.once('open', () => resolve({ ws, closed }));
      ws.once('error', reject);
    });

  /** Sends `bytes` as one message in 1 MiB fragments; the last is final only when `fin`. */
  const sendFragments = async (ws: WebSocket, bytes: Buffer, fin: boolean) => {
    for (let at = 0; at < bytes.length && ws.readyState === ws.OPEN; at += MiB) {
      const last = at + MiB >= bytes.length;
      await new Promise<void>((resolve) =>
        ws.send(bytes.subarray(at, at + MiB), { binary: true, fin: fin && last }, () => resolve()),
      );
    }
  };

  /** Startup, cleartext password, a first query of `size` characters and Terminate, in one message. */
  const pipelinedLogin = (size: number) =>
    Buffer.concat([
      startupMessage({ user: 'postgres', database: 'postgres' }),
      tagged('p', cstr(password)),
      tagged('Q', cstr(`select length('${'x'.repeat(size)}') as n`)),
      tagged('X'),
    ]);

  it('refuses clients that together send more than the pool before login, and frees it when they go', async () => {
    // Two clients each send 40 MiB of one unfinished message: both cannot fit in 64 MiB.
    const [a, b] = await Promise.all([open(), open()]);
    const junk = Buffer.alloc(40 * MiB, 0x61);
    await Promise.all([sendFragments(a.ws, junk, false), sendFragments(b.ws, junk, false)]);
    const first = await Promise.race([a.closed, b.closed]);
    expect(errorFields(first)).toMatchObject({ C: '53000' });
    a.ws.terminate();
    b.ws.terminate();
    await Promise.all([a.closed, b.closed]);
    // The pool is freed when they go: a 20 MiB first query sent with the password now runs.
    let reply: Buffer = Buffer.alloc(0);
    for (let attempt = 0; attempt < 50; attempt++) {
      const c = await open();
      await sendFragments(c.ws, pipelinedLogin(20 * MiB), true);
      reply = await c.closed;
      if (errorFields(reply)?.C !== '53000') break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(errorFields(reply)).toBeUndefined();
    expect(reply.includes(Buffer.from(String(20 * MiB)))).toBe(true);
  });
});
