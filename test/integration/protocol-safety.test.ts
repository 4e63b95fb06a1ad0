import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  errorFields,
  rawConnect,
  readUntilClose,
  SSL_REQUEST,
  startupMessage,
  tlsConnect,
  untagged,
} from '../helpers/raw.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

let t: TestServer;

beforeAll(async () => {
  t = await startTestServer({ LOGIN_TIMEOUT: '1s' });
  await t.createDatabase('safe');
});
afterAll(() => t?.close());

describe('before TLS', () => {
  it('closes the connection when bytes follow the SSLRequest before the handshake', async () => {
    const socket = await rawConnect(t.port);
    socket.write(Buffer.concat([SSL_REQUEST, startupMessage({ user: 'postgres', database: 'safe' })]));
    const { data, closed } = await readUntilClose(socket);
    expect(closed).toBe(true);
    // Never an 'S': the injected startup packet must not be read as if TLS protected it.
    expect(data.subarray(0, 1).toString()).not.toBe('S');
  });

  it('refuses an oversized startup length prefix without waiting for the body', async () => {
    const socket = await rawConnect(t.port);
    const head = Buffer.alloc(8);
    head.writeUInt32BE(0x7fff_fff0, 0);
    head.writeUInt32BE(196608, 4);
    socket.write(head);
    const { data, closed } = await readUntilClose(socket, 5000);
    expect(closed).toBe(true);
    expect(errorFields(data)?.C).toBe('08P01');
  });

  it('refuses a startup packet just over 10,000 bytes', async () => {
    const socket = await rawConnect(t.port);
    socket.write(untagged(196608, Buffer.alloc(10_000 - 7)).subarray(0, 8));
    const { data } = await readUntilClose(socket, 5000);
    expect(errorFields(data)?.C).toBe('08P01');
  });

  it('requires TLS by default', async () => {
    const socket = await rawConnect(t.port);
    socket.write(startupMessage({ user: 'postgres', database: 'safe' }));
    const { data } = await readUntilClose(socket);
    const fields = errorFields(data);
    expect(fields?.S).toBe('FATAL');
    expect(fields?.M).toMatch(/SSL connection is required/);
  });

  it('answers GSSENCRequest with N and goes on', async () => {
    const socket = await rawConnect(t.port);
    socket.write(untagged(80877104));
    const answer = await new Promise<Buffer>((resolve) => socket.once('data', resolve));
    expect(answer.toString()).toBe('N');
    socket.destroy();
  });
});

describe('before authentication', () => {
  it('refuses a pre-authentication message over 64 KiB from its length alone', async () => {
    const socket = await tlsConnect(t.port, t.ca, 'safe.db.example.com');
    socket.write(startupMessage({ user: 'postgres' }));
    await new Promise((resolve) => socket.once('data', resolve)); // AuthenticationSASL
    const head = Buffer.alloc(5);
    head[0] = 0x70; // 'p' SASLInitialResponse
    head.writeUInt32BE(64 * 1024 + 100, 1);
    socket.write(head);
    const { data, closed } = await readUntilClose(socket, 5000);
    expect(closed).toBe(true);
    expect(errorFields(data)?.C).toBe('08P01');
  });

  it('closes connections that never authenticate after LOGIN_TIMEOUT', async () => {
    const socket = await tlsConnect(t.port, t.ca, 'safe.db.example.com');
    socket.write(startupMessage({ user: 'postgres' }));
    const { data, closed } = await readUntilClose(socket, 15_000);
    expect(closed).toBe(true);
    expect(errorFields(data)?.M).toMatch(/timed out/);
  });

  it('refuses replication connections', async () => {
    const socket = await tlsConnect(t.port, t.ca, 'safe.db.example.com');
    socket.write(startupMessage({ user: 'postgres', replication: 'database' }));
    const { data } = await readUntilClose(socket);
    expect(errorFields(data)?.S).toBe('FATAL');
  });
});

describe('a CancelRequest', () => {
  it('of another length (protocol 3.2 keys) is never answered, as Postgres answers none', async () => {
    const socket = await tlsConnect(t.port, t.ca, 'safe.db.example.com');
    const body = Buffer.concat([Buffer.from([0, 0, 0, 42]), Buffer.alloc(32, 7)]);
    socket.write(untagged(80877102, body));
    const { data, closed } = await readUntilClose(socket);
    expect(closed).toBe(true);
    expect(data.length).toBe(0);
  });
});

describe('protocol version', () => {
  it('answers a 3.2 startup with NegotiateProtocolVersion and goes on with 3.0', async () => {
    const socket = await tlsConnect(t.port, t.ca, 'safe.db.example.com');
    socket.write(untagged((3 << 16) | 2, Buffer.from('user\0postgres\0_pq_.test\0x\0\0')));
    const first = await new Promise<Buffer>((resolve) => socket.once('data', resolve));
    socket.destroy();
    expect(String.fromCharCode(first[0] as number)).toBe('v');
    // The newest version we speak, whole (3 << 16 | 0), as PostgreSQL sends it: libpq 18 takes
    // a smaller number for a downgrade below 3.0 and fails the connection.
    expect(first.readInt32BE(5)).toBe(196608);
    expect(first.readInt32BE(9)).toBe(1);
    expect(first.toString('utf8', 13, 13 + '_pq_.test'.length)).toBe('_pq_.test');
  });
});
