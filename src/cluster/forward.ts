import type { Socket } from 'node:net';
import { connect } from 'node:tls';
import { errors, type GatewayError } from '../errors.js';
import type { Logger } from '../log.js';
import { MessageBoundary } from '../wire/message-boundary.js';
import { errorResponse } from '../wire/protocol.js';
import { type Hello, type HelloReply, sealHello } from './hello.js';
import { peerClientTls } from './peer-tls.js';
import { FrameTimeoutError, readFrame } from './wire.js';

/** How long dialing a peer and its answer to the hello may take. */
export const PEER_TIMEOUT_MS = 5000;

export class PeerUnreachableError extends Error {}
/** Unreachable by silence (no connection, no reply in time), not by a refused or reset connection. */
export class PeerTimeoutError extends PeerUnreachableError {}
/** The peer answered but would not take the session (it no longer owns the database). */
export class PeerRefusedError extends Error {
  constructor(readonly reply: Extract<HelloReply, { ok: false }>) {
    super(reply.message);
  }
}

/** `host:port` into its parts. */
export function splitAddress(address: string): { host: string; port: number } {
  const at = address.lastIndexOf(':');
  return { host: address.slice(0, at), port: Number(address.slice(at + 1)) };
}

/** Connects to a peer's internal listener and sends a hello; resolves with the socket once accepted. */
export async function dialPeer(
  address: string,
  secret: string,
  hello: Hello,
): Promise<{ socket: Socket; rest: Buffer }> {
  const { host, port } = splitAddress(address);
  // TLS keyed by CLUSTER_SECRET (peer-tls.ts): a peer without the secret fails the handshake.
  const socket = connect({ host, port, ...peerClientTls(secret) });
  socket.setNoDelay(true);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new PeerTimeoutError(`${address}: connect timed out`)),
        PEER_TIMEOUT_MS,
      );
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(new PeerUnreachableError(`${address}: ${err.message}`));
      });
    });
    socket.write(sealHello(secret, hello));
    const { frame, rest } = await readFrame(socket, PEER_TIMEOUT_MS).catch((err: Error) => {
      const Unreachable = err instanceof FrameTimeoutError ? PeerTimeoutError : PeerUnreachableError;
      throw new Unreachable(`${address}: ${err.message}`);
    });
    const reply = JSON.parse(frame.toString('utf8')) as HelloReply;
    if (!reply.ok) throw new PeerRefusedError(reply);
    return { socket, rest };
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

/** A relayed session, as the entry node sees it. */
export interface Relay {
  /** Resolves when both sides are closed. */
  done: Promise<void>;
  /** performance.now() of the owner's last bytes (a relay with fresh bytes needs no ping). */
  readonly heardAt: number;
  /**
   * Ends the session from this node (its owner stopped answering): the client hears `err` when
   * the owner's bytes so far end between two messages, else the connection just closes.
   */
  end(err: GatewayError): void;
}

/**
 * Relays an authenticated client to its database's owner: bytes both ways with backpressure
 * (`pipe` pauses the faster side), until either side ends.
 */
export function relay(client: Socket, upstream: Socket, rest: Buffer, pipelined: Buffer, log: Logger): Relay {
  const boundary = new MessageBoundary();
  boundary.feed(rest);
  if (rest.length > 0) client.write(rest);
  if (pipelined.length > 0) upstream.write(pipelined);
  upstream.on('error', (err) => log.debug({ err }, 'peer socket error'));
  let heardAt = performance.now();
  upstream.on('data', (chunk: Buffer) => {
    boundary.feed(chunk);
    heardAt = performance.now();
  });
  const clientClosed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  const upstreamClosed = new Promise<void>((resolve) => upstream.once('close', () => resolve()));
  // Either side going away ends the other: the owner then releases the client's session.
  void clientClosed.then(() => upstream.destroy());
  void upstreamClosed.then(() => {
    if (!client.destroyed) client.end();
    setTimeout(() => client.destroy(), 1000).unref();
  });
  client.pipe(upstream);
  upstream.pipe(client);
  client.resume();
  upstream.resume();
  return {
    done: Promise.all([clientClosed, upstreamClosed]).then(() => undefined),
    get heardAt() {
      return heardAt;
    },
    end: (err) => {
      if (client.destroyed) return;
      upstream.unpipe(client);
      upstream.destroy();
      if (boundary.atBoundary) client.end(errorResponse(err));
      else client.destroy();
    },
  };
}

/**
 * A socket to an owner that this node reads itself (an HTTP unit), watched like a relay: ending
 * it just closes it, and its reader sees the close.
 */
export function socketRelay(socket: Socket): Relay {
  let heardAt = performance.now();
  socket.on('data', () => {
    heardAt = performance.now();
  });
  return {
    done: new Promise<void>((resolve) => socket.once('close', () => resolve())),
    get heardAt() {
      return heardAt;
    },
    end: () => socket.destroy(),
  };
}

/** The error a client sees when its database's owner cannot be reached. */
export const ownerUnavailable = (id: string) => errors.databaseUnavailable(id);
