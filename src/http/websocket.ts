import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import { errors } from '../errors.js';
import { type ClientHandle, type ConnectionDeps, handleConnection } from '../gateway/connection.js';
import { idFromServerName } from '../gateway/routing.js';
import { API_HOST_IDS } from '../ids.js';
import { ThrottledWarning } from '../log-throttle.js';
import { errorResponse } from '../wire/protocol.js';
import type { PreLoginBudget } from './prelogin-budget.js';

/**
 * The WebSocket front door: each binary message carries raw Postgres protocol bytes (a message
 * may hold several protocol messages, or part of one). The socket is turned into a byte stream
 * and run by the same connection code as a TCP client, minus SSLRequest (TLS is the wss layer),
 * with a cleartext password since the Neon driver pipelines startup, password and first query.
 */

/**
 * A WebSocket as the Node socket the connection code expects. `reading` false keeps a paused
 * WebSocket paused whatever the reader asks (a client refused before login).
 */
export function webSocketStream(
  ws: WebSocket,
  remote: { address: string; port: number },
  reading: () => boolean = () => true,
): Socket {
  const duplex = new Duplex({
    read: () => {
      if (ws.isPaused && reading()) ws.resume();
    },
    write: (chunk: Buffer, _encoding, callback) => {
      if (ws.readyState !== ws.OPEN) return callback();
      ws.send(chunk, { binary: true }, () => callback());
    },
    final: (callback) => {
      ws.close(1000);
      callback();
    },
    destroy: (err, callback) => {
      if (ws.readyState !== ws.CLOSED) ws.terminate();
      callback(err);
    },
  });
  ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
    const chunk = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    if (!duplex.push(chunk)) ws.pause();
  });
  ws.once('close', () => {
    duplex.push(null);
    duplex.destroy();
  });
  ws.on('error', () => duplex.destroy());
  return Object.assign(duplex, {
    remoteAddress: remote.address,
    remotePort: remote.port,
    setNoDelay: () => duplex,
  }) as unknown as Socket;
}

/**
 * The host name that routes the connection like an SNI name: the Host header when it is
 * `<id>.<domain>` (not one of the driver's API names), else the `address` query parameter the
 * driver adds (`?address=<id>.<domain>:5432`). Undefined lets the startup packet decide.
 */
export function webSocketServerName(req: IncomingMessage, domain: string): string | undefined {
  const stripPort = (hostPort: string) => hostPort.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
  const candidates: string[] = [];
  if (req.headers.host) candidates.push(stripPort(req.headers.host));
  const address = new URL(req.url ?? '/', 'http://x').searchParams.get('address');
  if (address) candidates.push(stripPort(address));
  for (const name of candidates) {
    const id = idFromServerName(name, domain);
    if (id !== undefined && !API_HOST_IDS.has(id)) return name;
  }
  return undefined;
}

/** How long a client refused before login has to read why before its socket is destroyed. */
const REFUSED_LINGER_MS = 1000;

/** The WebSocket clients of one front door, for shutdown. */
export class WebSocketClients {
  private readonly clients = new Set<ClientHandle>();
  private readonly refusals: ThrottledWarning;

  constructor(
    private readonly deps: ConnectionDeps,
    /** What clients still logging in may make us hold (see PreLoginBudget). */
    readonly preLogin: PreLoginBudget,
  ) {
    this.refusals = new ThrottledWarning(deps.logger, 'websocket refused: too many bytes before login');
  }

  get count(): number {
    return this.clients.size;
  }

  /** `transport` is the connection under the WebSocket: its bytes are counted until login. */
  accept(ws: WebSocket, req: IncomingMessage, transport: Duplex): void {
    const address = req.socket.remoteAddress ?? '';
    let refused = false;
    const socket = webSocketStream(ws, { address, port: req.socket.remotePort ?? 0 }, () => !refused);
    const account = this.preLogin.open();
    const onBytes = (chunk: Buffer) => {
      if (account.receive(chunk.length)) return;
      // The account stays charged until the connection is gone: ws still holds what came.
      refused = true;
      transport.off('data', onBytes);
      this.refusals.warn(address, { address, pool: this.preLogin.pool });
      // Read no more (the stream above must not resume it either); the client hears why, a
      // close frame and the end of the stream. Not terminate() at once: closing a socket with
      // unread input resets the connection, and the client could lose the error. A second
      // later the socket goes, and with it what ws buffered.
      ws.pause();
      ws.send(errorResponse(errors.preLoginBytes()));
      ws.close(1008, 'too many bytes before login');
      transport.end();
      setTimeout(() => transport.destroy(), REFUSED_LINGER_MS).unref();
    };
    transport.on('data', onBytes);
    const loggedIn = () => {
      transport.off('data', onBytes);
      account.release();
    };
    const serverName = webSocketServerName(req, this.deps.wildcardDomain);
    const client = handleConnection(socket, this.deps, {
      serverName,
      password: 'cleartext',
      onLogin: loggedIn,
    });
    this.clients.add(client);
    void client.closed.then(() => {
      loggedIn();
      this.clients.delete(client);
    });
  }

  /** Lets clients finish their transactions for up to `timeoutMs`, then ends them. */
  async close(timeoutMs: number): Promise<void> {
    for (const client of this.clients) client.drain();
    const all = () => Promise.all([...this.clients].map((c) => c.closed));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
      timer.unref();
    });
    const outcome = await Promise.race([all().then(() => 'drained' as const), timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      for (const client of this.clients) client.kill();
      await Promise.race([all(), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
    }
  }

  /** Ends every client now (a second shutdown signal). */
  killAll(): void {
    for (const client of this.clients) client.kill();
  }
}
