import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import type { ConnectionDeps } from '../gateway/connection.js';
import type { Logger } from '../log.js';
import { CORS_HEADERS, handleSql, type SqlOverHttpDeps } from './sql-over-http.js';
import { WebSocketClients } from './websocket.js';

/**
 * The HTTPS front door for serverless drivers: `POST /sql` (SQL over HTTP, one unit of work per
 * request) and WebSocket upgrades on any path (the Postgres protocol tunnelled in binary
 * messages). Both reach the same pooler as the Postgres listener. Keep-alive is on.
 */

export interface FrontDoorOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Certificate and key (PEM); undefined serves plain HTTP (loopback only, checked by config). */
  tls: { cert: Buffer; key: Buffer } | undefined;
  sql: SqlOverHttpDeps;
  /** The connection settings WebSocket clients run with (those of the Postgres listener). */
  connection: ConnectionDeps;
  /** Largest WebSocket message; a Postgres message may span several. Default 64 MiB. */
  maxWebSocketMessage?: number;
  logger: Logger;
}

export interface FrontDoor {
  port: number;
  /** WebSocket clients connected now. */
  readonly connectionCount: number;
  /** Stops accepting, lets WebSocket clients finish their transactions (bounded), then closes. */
  close(drainTimeoutMs: number): Promise<void>;
  /** Ends the WebSocket clients now instead of draining. */
  endDrain(): void;
}

/** Requests and responses are small: a slow or silent client does not hold a socket for long. */
const HEADERS_TIMEOUT_MS = 20_000;
const REQUEST_TIMEOUT_MS = 60_000;

export async function startFrontDoor(opts: FrontDoorOptions): Promise<FrontDoor> {
  const log = opts.logger.child({ mod: 'http' });
  const clients = new WebSocketClients(opts.connection);
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: opts.maxWebSocketMessage ?? 64 * 1024 * 1024,
    perMessageDeflate: false,
  });
  let closing = false;
  const inflight = new Set<Promise<void>>();

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/sql') {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ message: 'not found' }));
      return;
    }
    if (req.method === 'OPTIONS') {
      res.writeHead(204, CORS_HEADERS);
      res.end();
      return;
    }
    if (req.method !== 'POST') {
      res.writeHead(405, { ...CORS_HEADERS, allow: 'POST, OPTIONS', 'content-type': 'application/json' });
      res.end(JSON.stringify({ message: 'method not allowed' }));
      return;
    }
    if (closing) res.setHeader('connection', 'close');
    const handling = handleSql(req, res, opts.sql, log);
    inflight.add(handling);
    void handling.finally(() => inflight.delete(handling));
  };

  const server: Server = opts.tls
    ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key, minVersion: 'TLSv1.2' }, onRequest)
    : createHttpServer(onRequest);
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.on('error', (err) => log.error({ err }, 'http listener error'));
  // A failed TLS handshake or a garbled request is the client's doing: close it quietly.
  server.on('tlsClientError', (_err, socket) => socket.destroy());
  server.on('clientError', (_err, socket) => {
    if (!socket.destroyed) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    if (closing) {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.binaryType = 'nodebuffer';
      clients.accept(ws, req);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  log.info({ host: opts.host, port, tls: opts.tls !== undefined }, 'http front door listening');

  return {
    port,
    get connectionCount() {
      return clients.count;
    },
    async close(drainTimeoutMs) {
      closing = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, drainTimeoutMs);
        timer.unref();
      });
      await Promise.all([clients.close(drainTimeoutMs), Promise.race([Promise.all(inflight), deadline])]);
      clearTimeout(timer);
      // In-flight /sql requests had the drain to finish; what is left is cut.
      server.closeAllConnections();
      wss.close();
      await stopped;
    },
    endDrain() {
      clients.killAll();
    },
  };
}
