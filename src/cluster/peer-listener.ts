import type { Socket } from 'node:net';
import { createServer, type Server } from 'node:tls';
import { GatewayError } from '../errors.js';
import { listen } from '../listen.js';
import type { Logger } from '../log.js';
import { ThrottledWarning } from '../log-throttle.js';
import { frame, type Hello, HelloError, type HelloReply, NonceWindow, openHello } from './hello.js';
import { peerServerTls } from './peer-tls.js';
import { readFrame } from './wire.js';

/** How long a peer has to send its hello. */
const HELLO_TIMEOUT_MS = 5000;

export interface PeerHandlers {
  /**
   * A forwarded session: resolve once this node serves the database (claimed if needed), or throw
   * (a GatewayError is sent back to the entry node, which retries elsewhere or tells the client).
   */
  prepareSession(hello: Extract<Hello, { kind: 'session' }>): Promise<void>;
  /** Takes the socket over as an authenticated client (after the accepting reply was written). */
  adoptSession(socket: Socket, hello: Extract<Hello, { kind: 'session' }>, pipelined: Buffer): void;
  /** A cancel relayed by a peer. */
  cancel(hello: Extract<Hello, { kind: 'cancel' }>): void;
  /** A hand-over (`db move`): claim the database now. */
  claim(hello: Extract<Hello, { kind: 'claim' }>): Promise<void>;
}

/**
 * The internal listener (CLUSTER_PORT): TLS keyed by CLUSTER_SECRET (peer-tls.ts), so only peers
 * that know it complete the handshake and a forwarded session's traffic is encrypted between
 * nodes; inside, the authenticated hello (a fresh nonce, a recent timestamp) says what the peer
 * wants.
 */
export class PeerListener {
  private readonly server: Server;
  private readonly nonces = new NonceWindow();
  private readonly sockets = new Set<Socket>();

  constructor(
    private readonly secret: string,
    private readonly handlers: PeerHandlers,
    private readonly logger: Logger,
  ) {
    this.server = createServer(
      { ...peerServerTls(secret), noDelay: true },
      (socket) => void this.accept(socket),
    );
    this.server.on('error', (err) => this.logger.error({ err }, 'cluster listener error'));
    // Someone without the secret (or not speaking TLS) reached the port.
    const refused = new ThrottledWarning(this.logger, 'peer TLS handshake refused');
    this.server.on('tlsClientError', (err, socket) => {
      const peer = socket.remoteAddress ?? 'unknown';
      refused.warn(peer, { err: err.message, peer });
      socket.destroy();
    });
  }

  listen(port: number, host: string): Promise<number> {
    return listen(this.server, port, host);
  }

  private async accept(socket: Socket): Promise<void> {
    socket.on('error', (err) => this.logger.debug({ err }, 'peer connection error'));
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    let hello: Hello;
    let rest: Buffer;
    try {
      const got = await readFrame(socket, HELLO_TIMEOUT_MS);
      rest = got.rest;
      hello = openHello(this.secret, got.frame, this.nonces);
    } catch (err) {
      this.logger.warn(
        { err: err instanceof HelloError ? err.message : err, peer: socket.remoteAddress },
        'peer hello refused',
      );
      socket.destroy();
      return;
    }
    if (hello.kind === 'cancel' || hello.kind === 'ping') {
      if (hello.kind === 'cancel') this.handlers.cancel(hello);
      socket.end(frame({ ok: true } satisfies HelloReply));
      return;
    }
    try {
      if (hello.kind === 'claim') {
        await this.handlers.claim(hello);
        socket.end(frame({ ok: true } satisfies HelloReply));
        return;
      }
      await this.handlers.prepareSession(hello);
    } catch (err) {
      const reply: HelloReply =
        err instanceof GatewayError
          ? { ok: false, code: err.code, message: err.message, retry: err.code === '57P03' }
          : { ok: false, code: 'XX000', message: 'the owner could not open the database', retry: true };
      if (!(err instanceof GatewayError))
        this.logger.error({ err, db: hello.db }, 'forwarded session failed');
      socket.end(frame(reply));
      return;
    }
    socket.write(frame({ ok: true } satisfies HelloReply));
    // From here the gateway listener owns (and drains) the session.
    this.sockets.delete(socket);
    this.handlers.adoptSession(socket, hello, rest);
  }

  /** Stops accepting; adopted sessions are ended by the gateway listener's drain. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
  }
}
