import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import {
  createSecureServer,
  type Http2SecureServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type Http2Session,
  constants as http2Constants,
} from 'node:http2';
import type { Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import type { ConnectionDeps } from '../gateway/connection.js';
import { listen } from '../listen.js';
import type { Logger } from '../log.js';
import { PreLoginBudget } from './prelogin-budget.js';
import {
  CORS_HEADERS,
  handleSql,
  type SqlOverHttpDeps,
  type SqlRequest,
  type SqlResponse,
} from './sql-over-http.js';
import { WebSocketClients } from './websocket.js';

/**
 * The HTTPS front door for serverless drivers: `POST /sql` (SQL over HTTP, one unit of work per
 * request) and WebSocket upgrades on any path (the Postgres protocol tunnelled in binary
 * messages). Both reach the same pooler as the Postgres listener. Keep-alive is on. Over TLS a
 * client that offers HTTP/2 (ALPN h2) gets it, many requests sharing one connection; HTTP/1.1
 * otherwise, which is also what WebSocket upgrades use.
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
  /** Time to receive a whole request (HTTP_REQUEST_TIMEOUT). Default 60 s. */
  requestTimeoutMs?: number | undefined;
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
  /** Serves a renewed certificate to new TLS handshakes (no effect without TLS). */
  setCertificate(pair: { cert: Buffer; key: Buffer }): void;
}

/** Requests and responses are small: a slow or silent client does not hold a socket for long. */
const HEADERS_TIMEOUT_MS = 20_000;
const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;
/** An idle HTTP/1.1 keep-alive connection is closed after this (node:http's default). */
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** An HTTP/2 connection with no stream activity this long is closed (HTTP/1.1 has keepAliveTimeout). */
const H2_IDLE_TIMEOUT_MS = 60_000;
/** How long an idle HTTP/2 connection that was asked to close may finish its streams. */
const H2_CLOSE_GRACE_MS = 5_000;
/** Requests in flight on one HTTP/2 connection at most (what browsers expect; RFC 9113 suggests ≥ 100). */
const H2_MAX_STREAMS = 100;
/** Bytes a WebSocket client may send before its login without drawing on the shared pool. */
const PRELOGIN_ALLOWANCE = 64 * 1024;

/**
 * HTTP/1.1 requests must arrive whole within requestTimeout; node:http2 has only the session's
 * idle timeout, which a client trickling one byte every few seconds keeps resetting (and one
 * session carries up to H2_MAX_STREAMS requests). The same bound, per stream: 408, then the
 * stream is reset.
 */
function boundRequestTime(req: Http2ServerRequest, res: Http2ServerResponse, timeoutMs: number): void {
  const timer = setTimeout(() => {
    if (req.complete) return;
    if (!res.headersSent) {
      res.writeHead(408, { ...CORS_HEADERS, 'content-type': 'application/json' });
      res.end(JSON.stringify({ message: 'request body not received in time' }));
    }
    req.stream.close(http2Constants.NGHTTP2_CANCEL);
  }, timeoutMs);
  timer.unref();
  const done = () => clearTimeout(timer);
  req.once('end', done);
  req.once('close', done);
}

/**
 * A response the client does not read within `timeoutMs` of its end() is cut (the socket, or
 * the HTTP/2 stream): an answer of up to MAX_HTTP_RESPONSE is held in memory until it is read,
 * and a client that never reads would hold it for as long as it keeps the connection.
 */
function boundResponseTime(res: SqlResponse, timeoutMs: number): void {
  const sent = res as unknown as {
    writableFinished: boolean;
    destroy?: () => void;
    stream?: { close(code: number): void };
    once(event: 'finish' | 'close', listener: () => void): unknown;
  };
  if (sent.writableFinished) return;
  const timer = setTimeout(() => {
    if (sent.writableFinished) return;
    if (sent.stream) sent.stream.close(http2Constants.NGHTTP2_CANCEL);
    else sent.destroy?.();
  }, timeoutMs);
  timer.unref();
  const done = () => clearTimeout(timer);
  sent.once('finish', done);
  sent.once('close', done);
}

export async function startFrontDoor(opts: FrontDoorOptions): Promise<FrontDoor> {
  const log = opts.logger.child({ mod: 'http' });
  const requestTimeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const maxMessage = opts.maxWebSocketMessage ?? 64 * 1024 * 1024;
  // All clients still logging in hold at most one largest message between them, plus a small
  // allowance each (enough for a startup, a password and a modest first query).
  const clients = new WebSocketClients(
    opts.connection,
    new PreLoginBudget(maxMessage, Math.min(maxMessage, PRELOGIN_ALLOWANCE)),
  );
  const wss = new WebSocketServer({ noServer: true, maxPayload: maxMessage, perMessageDeflate: false });
  let closing = false;
  const inflight = new Set<Promise<void>>();

  const onRequest = (
    req: SqlRequest,
    res: SqlResponse & { setHeader(name: string, value: string): unknown },
  ) => {
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
    // HTTP/2 has no Connection header; its connections get a GOAWAY when closing (closeIdle).
    if (closing && req.httpVersionMajor === 1) res.setHeader('connection', 'close');
    if (req.httpVersionMajor === 2)
      boundRequestTime(req as Http2ServerRequest, res as Http2ServerResponse, requestTimeoutMs);
    const handling = handleSql(req, res, opts.sql, log).then(() => boundResponseTime(res, requestTimeoutMs));
    inflight.add(handling);
    void handling.finally(() => inflight.delete(handling));
  };

  // With allowHTTP1 node:http2 serves HTTP/1.1 clients (and their upgrades) through node:http.
  const server: Server | Http2SecureServer = opts.tls
    ? createSecureServer(
        {
          cert: opts.tls.cert,
          key: opts.tls.key,
          minVersion: 'TLSv1.2',
          allowHTTP1: true,
          // Node's default is unbounded; an HTTP/1.1 connection has one request at a time.
          settings: { maxConcurrentStreams: H2_MAX_STREAMS },
        },
        onRequest,
      )
    : // Node looks for requests past requestTimeout this often (default 30 s, so up to 90 s late).
      createHttpServer({ connectionsCheckingInterval: Math.min(5_000, requestTimeoutMs) }, onRequest);
  const connections = trackConnections(server, opts.tls !== undefined);
  // For HTTP/1.1 connections; node:http2 honours them for allowHTTP1 but leaves keepAliveTimeout
  // unset, which would keep idle connections open forever.
  Object.assign(server, {
    headersTimeout: Math.min(HEADERS_TIMEOUT_MS, requestTimeoutMs),
    requestTimeout: requestTimeoutMs,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
  });
  server.on('error', (err) => log.error({ err }, 'http listener error'));
  // A failed TLS handshake or a garbled request is the client's doing: close it quietly.
  server.on('tlsClientError', (_err, socket) => socket.destroy());
  server.on('clientError', (err: { code?: string }, socket) => {
    if (socket.destroyed) return;
    // requestTimeout ran out (Node checks it every connectionsCheckingInterval, 30 s by default).
    const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\n\r\n`);
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    if (closing) {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.binaryType = 'nodebuffer';
      clients.accept(ws, req, socket);
    });
  });

  const port = await listen(server, opts.port, opts.host);
  log.info({ host: opts.host, port, tls: opts.tls !== undefined }, 'http front door listening');

  return {
    port,
    get connectionCount() {
      return clients.count;
    },
    setCertificate(pair) {
      if (opts.tls && 'setSecureContext' in server)
        server.setSecureContext({ cert: pair.cert, key: pair.key, minVersion: 'TLSv1.2' });
    },
    async close(drainTimeoutMs) {
      closing = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      connections.closeIdle();
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, drainTimeoutMs);
        timer.unref();
      });
      await Promise.all([clients.close(drainTimeoutMs), Promise.race([Promise.all(inflight), deadline])]);
      clearTimeout(timer);
      // In-flight /sql requests had the drain to finish; what is left is cut.
      connections.closeAll();
      wss.close();
      await stopped;
    },
    endDrain() {
      clients.killAll();
    },
  };
}

/**
 * The connections of a listener, for shutdown: node:http2's server has no closeAllConnections,
 * and closing it waits for HTTP/2 connections until their clients hang up.
 */
function trackConnections(server: Server | Http2SecureServer, tls: boolean) {
  const sockets = new Set<Socket>();
  const sessions = new Set<Http2Session>();
  server.on(tls ? 'secureConnection' : 'connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('session', (session: Http2Session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
    // A client's protocol error ends its connection; it is not the server's error.
    session.on('error', () => session.destroy());
    // Closing waits for open streams; one whose client stopped reading is cut by
    // boundResponseTime, and whatever is left after a grace is cut with the connection.
    session.setTimeout(H2_IDLE_TIMEOUT_MS, () => {
      session.close();
      setTimeout(() => session.destroy(), H2_CLOSE_GRACE_MS).unref();
    });
  });
  return {
    /** HTTP/1.1 connections between requests end now; HTTP/2 ones after their open streams. */
    closeIdle() {
      // node:http2's server has it too at run time (for allowHTTP1), though not in its types.
      (server as Server).closeIdleConnections();
      for (const session of sessions) session.close();
    },
    closeAll() {
      for (const session of sessions) session.destroy();
      for (const socket of sockets) socket.destroy();
    },
  };
}
