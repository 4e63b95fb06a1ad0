import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../log.js';
import { dialPeer, PeerUnreachableError } from './forward.js';
import type { Hello } from './hello.js';
import { PeerListener } from './peer-listener.js';

/**
 * The internal listener speaks TLS keyed by CLUSTER_SECRET: a peer with another secret, or one
 * speaking plain TCP, never gets a session, and a forwarded session's bytes cross the wire
 * encrypted (checked on a loopback relay that records what passes).
 */

const logger = createLogger({ level: 'silent', pretty: false });
const SECRET = 'the-cluster-secret-0123456789';
const MARKER = 'select secret_payload_visible_in_clear';
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

const hello = (): Hello => ({ kind: 'session', from: 'node-a', db: 'db1', user: 'postgres', params: {} });

/** A listener whose adopted sessions echo what they receive. */
async function echoListener(): Promise<{ port: number; adopted: string[] }> {
  const adopted: string[] = [];
  const listener = new PeerListener(
    SECRET,
    {
      prepareSession: async () => undefined,
      adoptSession: (socket: Socket, h, pipelined) => {
        adopted.push(h.kind === 'session' ? h.db : h.kind);
        if (pipelined.length > 0) socket.write(pipelined);
        socket.on('data', (d) => socket.write(d));
        socket.on('error', () => undefined);
        socket.resume();
        cleanups.push(() => void socket.destroy());
      },
      cancel: () => undefined,
      claim: async () => undefined,
    },
    logger,
  );
  const port = await listener.listen(0, '127.0.0.1');
  cleanups.push(() => listener.close());
  return { port, adopted };
}

/** A TCP relay in front of `port` that records every byte it passes, both ways. */
async function recordingRelay(port: number): Promise<{ port: number; seen: () => Buffer }> {
  const chunks: Buffer[] = [];
  const open = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    open.add(client).add(upstream);
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      from.on('data', (d: Buffer) => {
        chunks.push(d);
        to.write(d);
      });
      from.on('error', () => to.destroy());
      from.on('close', () => to.destroy());
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of open) socket.destroy();
        server.close(() => resolve());
      }),
  );
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    seen: () => Buffer.concat(chunks),
  };
}

describe('peer TLS', () => {
  it('forwards a session encrypted on the wire', async () => {
    const { port, adopted } = await echoListener();
    const relay = await recordingRelay(port);
    const { socket } = await dialPeer(`127.0.0.1:${relay.port}`, SECRET, hello());
    cleanups.push(() => void socket.destroy());
    const echoed = new Promise<string>((resolve) => {
      let got = '';
      socket.on('data', (d: Buffer) => {
        got += d.toString();
        if (got.length >= MARKER.length) resolve(got);
      });
    });
    socket.resume(); // dialPeer leaves it paused after the reply, for whoever relays it
    socket.write(MARKER);
    expect(await echoed).toBe(MARKER);
    expect(adopted).toEqual(['db1']);
    const wire = relay.seen();
    expect(wire.length).toBeGreaterThan(MARKER.length);
    expect(wire.includes(Buffer.from(MARKER))).toBe(false);
    // Neither the database name in the hello nor the secret appear either.
    expect(wire.includes(Buffer.from('db1'))).toBe(false);
    expect(wire.includes(Buffer.from(SECRET))).toBe(false);
  });

  it('refuses a peer with another secret at the handshake', async () => {
    const { port, adopted } = await echoListener();
    await expect(dialPeer(`127.0.0.1:${port}`, 'another-secret-0123456789', hello())).rejects.toBeInstanceOf(
      PeerUnreachableError,
    );
    expect(adopted).toEqual([]);
  });

  it('refuses plain TCP: the connection is closed without a session', async () => {
    const { port, adopted } = await echoListener();
    const closed = await new Promise<boolean>((resolve) => {
      const raw = connect(port, '127.0.0.1', () => raw.write('\u0000\u0000\u0000\u0010{"kind":"session"}'));
      raw.on('error', () => resolve(true));
      raw.on('close', () => resolve(true));
      setTimeout(() => resolve(false), 10_000).unref();
    });
    expect(closed).toBe(true);
    expect(adopted).toEqual([]);
  });
});
