import net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { WebSocket } from 'ws';
import { PreLoginBudget } from '../../src/http/prelogin-budget.js';
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

  it('answers malformed SCRAM messages with 08P01 as Postgres does, not a silent close', async () => {
    // pg-gateway printed such messages' stack traces with console.error and closed without a word.
    const printed = vi.spyOn(console, 'error');
    const length = (n: number) => {
      const b = Buffer.alloc(4);
      b.writeInt32BE(n);
      return b;
    };
    const attempts: [Buffer, string][] = [
      [Buffer.alloc(0), 'invalid string in message'],
      [Buffer.concat([cstr('SCRAM-SHA-256'), length(1000), Buffer.from('n,,n=,r=x')]), 'insufficient data'],
      [Buffer.concat([cstr('SCRAM-SHA-256'), length(3), Buffer.from('abc')]), 'malformed SCRAM message'],
    ];
    try {
      for (const [body, message] of attempts) {
        const socket = await started();
        socket.write(tagged('p', body));
        const { data, closed } = await readUntilClose(socket);
        expect(closed).toBe(true);
        const fields = errorFields(data);
        expect(fields).toMatchObject({ C: '08P01', S: 'FATAL' });
        expect(fields?.M).toContain(message);
      }
      expect(printed).not.toHaveBeenCalled();
      expect(gw.errorLogs).toEqual([]);
    } finally {
      printed.mockRestore();
    }
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

/**
 * A client refused before login is read no further, even when the bytes that overdrew the pool
 * also completed a WebSocket message (which makes the stream above ask for more). The server's
 * pool is shrunk to 512 KiB through its budget object, so the test need not send 64 MiB.
 */
describe('a WebSocket client refused before login', () => {
  let gw: TestServer;
  let budget: PreLoginBudget | undefined;
  const KiB = 1024;
  const MiB = 1024 * KiB;
  const POOL = 512 * KiB;
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  beforeAll(async () => {
    // The front door's budget is the one object whose accounts are opened: catch it there.
    const open = PreLoginBudget.prototype.open;
    PreLoginBudget.prototype.open = function (this: PreLoginBudget) {
      if (budget !== this) Object.assign(this, { pool: POOL });
      budget = this;
      return open.call(this);
    };
    gw = await startTestServer({ AUTH_MAX_DELAY: '0', LOGIN_TIMEOUT: '60s' });
    await gw.createDatabase('refused');
  });
  afterAll(() => gw?.close());

  /** A client frame header, masked with a zero key so the payload goes as it is. */
  const header = (length: number, fin = true) => {
    const head = [(fin ? 0x80 : 0) | 2];
    if (length < 126) head.push(0x80 | length);
    else if (length < 65536) head.push(0x80 | 126, length >> 8, length & 0xff);
    else
      head.push(
        0x80 | 127,
        0,
        0,
        0,
        0,
        length >>> 24,
        (length >>> 16) & 0xff,
        (length >>> 8) & 0xff,
        length & 0xff,
      );
    return Buffer.from([...head, 0, 0, 0, 0]);
  };
  const frame = (payload: Buffer) => Buffer.concat([header(payload.length), payload]);

  /** A WebSocket upgrade over TLS written by hand, so frames can be cut anywhere. */
  const rawWebSocket = async () => {
    const socket = tls.connect({
      socket: net.connect({ host: '127.0.0.1', port: gw.httpPort }),
      ca: gw.ca,
      servername: 'localhost',
    });
    socket.on('error', () => undefined);
    await new Promise((resolve) => socket.once('secureConnect', resolve));
    socket.write(
      `GET /v2?address=refused.db.example.com:5432 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n` +
        'Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    const received: Buffer[] = [];
    await new Promise<void>((resolve) => {
      const onData = (d: Buffer) => {
        received.push(d);
        if (!Buffer.concat(received).includes('\r\n\r\n')) return;
        socket.off('data', onData);
        resolve();
      };
      socket.on('data', onData);
    });
    expect(Buffer.concat(received).toString()).toMatch(/^HTTP\/1\.1 101/);
    received.length = 0;
    socket.on('data', (d: Buffer) => received.push(d));
    return { socket, received };
  };

  it('is read no further when the refused bytes also completed a message', async () => {
    // A filler holds an unfinished message: the pool is drawn to within 8 KiB.
    const filler = await rawWebSocket();
    filler.socket.write(header(48 * MiB));
    filler.socket.write(Buffer.alloc(64 * KiB + POOL - 8 * KiB - 14, 0x61));
    for (let i = 0; i < 200 && (budget?.drawn ?? 0) < POOL - 8 * KiB; i++) await sleep(25);
    expect(budget?.drawn).toBe(POOL - 8 * KiB);
    // The client: a startup, then 60 KiB of a password message (its own 64 KiB allowance)...
    const client = await rawWebSocket();
    client.socket.write(frame(startupMessage({ user: 'postgres', database: 'postgres' })));
    await sleep(100);
    client.socket.write(
      frame(Buffer.concat([Buffer.from([0x70, 0, 0, 0xff, 0xf0]), Buffer.alloc(60 * KiB)])),
    );
    await sleep(200);
    // ...then, at once, a whole 1-byte message and the start of a large one: over the pool.
    client.socket.write(
      Buffer.concat([frame(Buffer.from([0x62])), header(64 * MiB - 1), Buffer.alloc(14 * KiB)]),
    );
    await sleep(300);
    // Then 48 MiB more. A server still reading takes it all; one that stopped, a few MiB of buffers.
    const piece = Buffer.alloc(256 * KiB, 0x63);
    let queued = 0;
    const deadline = Date.now() + 3000;
    while (queued < 48 * MiB && Date.now() < deadline && !client.socket.destroyed) {
      queued += piece.length;
      if (client.socket.write(piece)) continue;
      const drained = await Promise.race([
        new Promise<boolean>((resolve) => client.socket.once('drain', () => resolve(true))),
        sleep(Math.max(1, deadline - Date.now())).then(() => false),
      ]);
      if (!drained) break;
    }
    const accepted = queued - client.socket.writableLength;
    expect(Buffer.concat(client.received).includes(Buffer.from('53000'))).toBe(true);
    expect(accepted).toBeLessThan(16 * MiB);
    client.socket.destroy();
    filler.socket.destroy();
  });
});
