import type { Socket } from 'node:net';
import { type SecureContext, TLSSocket } from 'node:tls';
import { errors } from '../errors.js';
import { readStartupParameters, StartupCode } from '../wire/protocol.js';

/**
 * The untagged first phase of a connection, on the raw socket: SSLRequest / GSSENCRequest /
 * CancelRequest / StartupMessage. We do it ourselves rather than in pg-gateway because we must
 * refuse oversized startup packets from their length prefix alone and must never read bytes a
 * client (or an attacker in the middle) sent after SSLRequest but before the TLS handshake.
 */

export const MAX_STARTUP_BYTES = 10_000;

export type StartupOutcome =
  | {
      kind: 'startup';
      socket: Socket;
      tls: boolean;
      serverName: string | undefined;
      message: Buffer;
      params: Record<string, string>;
      /** Set when the client asked for more than 3.0: the options we do not support. */
      negotiate: string[] | undefined;
    }
  | { kind: 'cancel'; processId: number; secretKey: number };

export interface StartupOptions {
  tlsMode: 'require' | 'prefer' | 'disable';
  secureContext: () => SecureContext | undefined;
}

class ClosedError extends Error {}

/** A negotiation failure, with the socket (raw or TLS) the error must be written to. */
export class StartupFailure extends Error {
  constructor(
    readonly error: unknown,
    readonly socket: Socket,
  ) {
    super('startup failed');
  }
}

/**
 * Reads exactly n bytes from a paused stream. `read(n)` returns null while fewer than n bytes
 * are buffered, and Node then fires 'readable' again at once, so waiting for 'readable' after a
 * null `read(n)` would spin. Instead everything buffered is taken (`read()` with no size), kept
 * here, and we wait only when the stream's buffer is empty: the next 'readable' then means new
 * bytes or the end. Bytes past n go back with `unshift`, so nothing after an SSLRequest is
 * consumed before the TLS handshake.
 */
async function readExactly(socket: Socket, n: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let have = 0;
  for (;;) {
    const chunk = socket.read() as Buffer | null;
    if (chunk) {
      parts.push(chunk);
      have += chunk.length;
      if (have >= n) {
        const all = parts.length === 1 ? chunk : Buffer.concat(parts, have);
        if (have > n) socket.unshift(all.subarray(n));
        return all.subarray(0, n);
      }
      continue;
    }
    if (socket.readableEnded || socket.destroyed) throw new ClosedError('connection closed');
    await new Promise<void>((resolve) => {
      const done = () => {
        socket.off('readable', done);
        socket.off('end', done);
        socket.off('close', done);
        resolve();
      };
      socket.on('readable', done);
      socket.on('end', done);
      socket.on('close', done);
    });
  }
}

async function readUntaggedMessage(socket: Socket): Promise<{ code: number; message: Buffer }> {
  const head = await readExactly(socket, 8);
  const length = head.readUInt32BE(0);
  if (length < 8 || length > MAX_STARTUP_BYTES) throw errors.startupTooLarge(MAX_STARTUP_BYTES);
  const body = length > 8 ? await readExactly(socket, length - 8) : Buffer.alloc(0);
  return { code: head.readUInt32BE(4), message: Buffer.concat([head, body]) };
}

async function upgradeToTls(socket: Socket, context: SecureContext): Promise<TLSSocket> {
  const secure = new TLSSocket(socket, { isServer: true, secureContext: context });
  await new Promise<void>((resolve, reject) => {
    secure.once('secure', resolve);
    // A failed handshake is the client's doing (garbage, wrong protocol, no shared cipher): it
    // ends this connection quietly, never as a server fault in the logs.
    secure.once('error', (err) => reject(new ClosedError(`TLS handshake failed: ${err.message}`)));
    secure.once('close', () => reject(new ClosedError('closed during TLS handshake')));
  });
  return secure;
}

/**
 * Runs the negotiation until a StartupMessage arrives (returned whole, not yet parsed) or a
 * CancelRequest. Throws a GatewayError the caller should send before closing, or ClosedError.
 */
export async function negotiateStartup(raw: Socket, opts: StartupOptions): Promise<StartupOutcome> {
  const current = { socket: raw };
  try {
    return await negotiate(current, opts);
  } catch (err) {
    throw new StartupFailure(err, current.socket);
  }
}

async function negotiate(current: { socket: Socket }, opts: StartupOptions): Promise<StartupOutcome> {
  let socket = current.socket;
  let tls = false;
  let serverName: string | undefined;
  for (;;) {
    const { code, message } = await readUntaggedMessage(socket);
    switch (code) {
      case StartupCode.SslRequest: {
        const context = opts.tlsMode === 'disable' ? undefined : opts.secureContext();
        if (tls) throw errors.protocolViolation('SSLRequest received inside TLS');
        if (!context) {
          socket.write('N');
          continue;
        }
        // Anything already buffered was sent before our answer: it would be read as if it had
        // been protected by TLS (CVE-2021-23214). Refuse the connection.
        if (socket.readableLength > 0) throw errors.protocolViolation('unexpected data after SSLRequest');
        socket.write('S');
        const secure = await upgradeToTls(socket, context);
        socket = secure;
        current.socket = secure;
        tls = true;
        serverName = typeof secure.servername === 'string' ? secure.servername : undefined;
        continue;
      }
      case StartupCode.GssEncRequest:
        if (tls) throw errors.protocolViolation('GSSENCRequest received inside TLS');
        socket.write('N');
        continue;
      case StartupCode.CancelRequest:
        // Postgres never answers a CancelRequest. Ours carry a 4-byte key (BackendKeyData of
        // protocol 3.0): a longer one (3.2) or a broken one matches nothing.
        if (message.length !== 16) throw new ClosedError('CancelRequest of another length');
        return { kind: 'cancel', processId: message.readInt32BE(8), secretKey: message.readInt32BE(12) };
      default: {
        const major = code >>> 16;
        if (major !== 3) throw errors.unsupportedProtocol(major, code & 0xffff);
        if (!tls && opts.tlsMode === 'require') throw errors.tlsRequired();
        const params = readStartupParameters(message);
        if (!params) throw errors.protocolViolation('invalid startup packet layout');
        if (!params.user)
          throw errors.protocolViolation('no PostgreSQL user name specified in startup packet');
        // We speak 3.0: a newer minor version or protocol options (_pq_.*) are answered with
        // NegotiateProtocolVersion, and the packet goes on as a 3.0 one.
        const unsupported = Object.keys(params).filter((k) => k.startsWith('_pq_.'));
        for (const k of unsupported) delete params[k];
        const negotiate = (code & 0xffff) !== 0 || unsupported.length > 0 ? unsupported : undefined;
        if (negotiate) message.writeUInt32BE(StartupCode.Protocol30, 4);
        return { kind: 'startup', socket, tls, serverName, message, params, negotiate };
      }
    }
  }
}

export { ClosedError };
