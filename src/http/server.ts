import { chmod, lstat, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { getRequestListener } from '@hono/node-server';
import type { Hono } from 'hono';
import { listen } from '../listen.js';
import type { Logger } from '../log.js';
import type { AdminEnv } from './env.js';

/**
 * Serves the admin app twice: on TCP (token-protected when the app has a token) and on a Unix
 * socket in the data directory, mode 0600, whose requests are trusted — the file mode is the
 * access control, which is how the CLI talks to a running server.
 */

export interface AdminServerOptions {
  app: Hono<AdminEnv>;
  /** TCP address; keep loopback unless a token is set. */
  host: string;
  /** TCP port; 0 picks a free port. */
  port: number;
  /** Unix socket path (config `admin.socketPath` = `DATA_DIR/admin.sock`). */
  socketPath: string;
  logger: Logger;
  /** How long close() lets in-flight requests finish before cutting connections. Default 5 s. */
  closeTimeoutMs?: number;
}

export interface AdminServer {
  /** The TCP port actually bound. */
  port: number;
  close(): Promise<void>;
}

/** sun_path is 108 bytes on Linux, 104 on macOS, including the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 103;

/** A socket file left by a process that died is removed; anything else at that path is an error. */
async function removeStaleSocket(socketPath: string): Promise<void> {
  const st = await lstat(socketPath).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (!st) return;
  if (!st.isSocket()) throw new Error(`admin socket path ${socketPath} exists and is not a socket`);
  // The data-directory lock guarantees no other live server owns it.
  await rm(socketPath, { force: true });
}

function closeServer(server: Server, timeoutMs: number): Promise<void> {
  if (!server.listening) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => server.closeAllConnections(), timeoutMs);
    timer.unref();
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
  });
}

export async function startAdmin(opts: AdminServerOptions): Promise<AdminServer> {
  const { app, logger } = opts;
  if (Buffer.byteLength(opts.socketPath) > MAX_SOCKET_PATH_BYTES) {
    throw new Error(
      `admin socket path is too long for a Unix socket (max ${MAX_SOCKET_PATH_BYTES} bytes): ${opts.socketPath}`,
    );
  }
  const errorHandler = (err: unknown) => {
    logger.error({ err }, 'admin request failed');
  };
  const tcp = createServer(getRequestListener((req) => app.fetch(req, {}), { errorHandler }));
  const unix = createServer(getRequestListener((req) => app.fetch(req, { trusted: true }), { errorHandler }));
  const closeTimeoutMs = opts.closeTimeoutMs ?? 5000;
  let ownsSocket = false;
  const close = async () => {
    await Promise.all([closeServer(tcp, closeTimeoutMs), closeServer(unix, closeTimeoutMs)]);
    if (ownsSocket) await rm(opts.socketPath, { force: true });
  };
  let port: number;
  try {
    port = await listen(tcp, opts.port, opts.host);
    await removeStaleSocket(opts.socketPath);
    await listen(unix, opts.socketPath);
    ownsSocket = true;
    await chmod(opts.socketPath, 0o600);
  } catch (err) {
    await close();
    throw err;
  }
  logger.info({ host: opts.host, port, socket: opts.socketPath }, 'admin API listening');
  return { port, close };
}
