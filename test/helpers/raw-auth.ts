import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import type net from 'node:net';
import tls from 'node:tls';
import { tagged } from './messages.js';
import { rawConnect, SSL_REQUEST, startupMessage } from './raw.js';

/**
 * A byte-level client that logs in for real: SSLRequest, TLS with SNI, StartupMessage and
 * SCRAM-SHA-256 (node:crypto), then hands over the TLS socket after the first ReadyForQuery. Each
 * pre-authentication packet can be split at chosen offsets with pauses in between, so tests can
 * check that the server reassembles what TCP splits. Every wait has a timeout.
 */

export interface BackendMessage {
  type: string;
  body: Buffer;
}

/** Buffers a socket's data and hands out whole backend messages; also sees the close. */
export class BackendReader {
  private buffer: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  closed = false;

  constructor(readonly socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('close', this.onClose);
    socket.on('error', () => undefined);
  }

  private readonly onData = (chunk: Buffer) => {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    this.wake();
  };

  private readonly onClose = () => {
    this.closed = true;
    this.wake();
  };

  private wake() {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** Bytes received and not yet taken (for raw answers like 'S'/'N'). */
  get pending(): Buffer {
    return this.buffer;
  }

  /** Stops listening; returns what was received and not taken. */
  detach(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('close', this.onClose);
    const rest = this.buffer;
    this.buffer = Buffer.alloc(0);
    return rest;
  }

  private async waitFor(ready: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!ready()) {
      if (this.closed) throw new Error(`connection closed while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** The next `n` raw bytes. */
  async bytes(n: number, timeoutMs: number): Promise<Buffer> {
    await this.waitFor(() => this.buffer.length >= n, timeoutMs, `${n} byte(s)`);
    const out = this.buffer.subarray(0, n);
    this.buffer = this.buffer.subarray(n);
    return out;
  }

  /** The next whole tagged message. */
  async message(timeoutMs: number): Promise<BackendMessage> {
    const complete = () => this.buffer.length >= 5 && this.buffer.length >= 1 + this.buffer.readUInt32BE(1);
    await this.waitFor(complete, timeoutMs, 'a backend message');
    const length = this.buffer.readUInt32BE(1);
    const message = {
      type: String.fromCharCode(this.buffer[0] as number),
      body: Buffer.from(this.buffer.subarray(5, 1 + length)),
    };
    this.buffer = this.buffer.subarray(1 + length);
    return message;
  }
}

/** The fields of an ErrorResponse/NoticeResponse body, keyed by field letter. */
export function parseErrorFields(body: Buffer): Record<string, string> {
  const fields: Record<string, string> = {};
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const end = body.indexOf(0, i + 1);
    if (end < 0) break;
    fields[String.fromCharCode(body[i] as number)] = body.toString('utf8', i + 1, end);
    i = end + 1;
  }
  return fields;
}

/**
 * Reads to the next ReadyForQuery: the SQLSTATE of the first error in between, or 'ok', and the
 * transaction status the ReadyForQuery gives.
 */
export async function readToReady(
  reader: BackendReader,
  timeoutMs = 10_000,
): Promise<{ outcome: string; status: string }> {
  let outcome = 'ok';
  for (;;) {
    const m = await reader.message(timeoutMs);
    if (m.type === 'E' && outcome === 'ok') outcome = parseErrorFields(m.body).C ?? '?';
    if (m.type === 'Z') return { outcome, status: m.body.toString('latin1') };
  }
}

/**
 * Writes `data` in pieces cut at `offsets` (any order; those outside 1..length-1 are ignored),
 * pausing `pauseMs` between pieces. Resolves false if the socket closed before all was written.
 */
export async function writeSplit(
  socket: net.Socket,
  data: Buffer,
  offsets: readonly number[],
  pauseMs: number | ((piece: number) => number),
): Promise<boolean> {
  let start = 0;
  let piece = 0;
  const cuts = [...new Set(offsets)].filter((o) => o > 0 && o < data.length).sort((a, b) => a - b);
  for (const cut of [...cuts, data.length]) {
    if (cut <= start) continue;
    if (start > 0) await sleep(typeof pauseMs === 'function' ? pauseMs(piece) : pauseMs);
    if (socket.destroyed || socket.writableEnded) return false;
    socket.write(data.subarray(start, cut));
    start = cut;
    piece++;
  }
  return true;
}

export interface RawLoginOptions {
  port: number;
  ca: Buffer;
  /** Database id, sent as SNI `<id>.db.example.com`. */
  id: string;
  password: string;
  user?: string;
  /** Where to cut the 8-byte SSLRequest (default: not at all). */
  sslRequestSplits?: readonly number[];
  /** Where to cut the StartupMessage, which is written over TLS. */
  startupSplits?: readonly number[];
  /** Pause between pieces, ms. Default 10. */
  pauseMs?: number;
  /** Bound on each wait (the 'S', the handshake, each authentication message). Default 10 s. */
  stepTimeoutMs?: number;
}

export interface RawSession {
  socket: tls.TLSSocket;
  /** Bytes received after ReadyForQuery (normally none). */
  leftover: Buffer;
  processId: number;
  secretKey: number;
}

/** Thrown when the server refused the login with an ErrorResponse. */
export class LoginRefused extends Error {
  constructor(readonly fields: Record<string, string>) {
    super(`login refused: ${fields.C} ${fields.M}`);
  }
}

const xor = (a: Buffer, b: Buffer) => Buffer.from(a.map((v, i) => v ^ (b[i] as number)));
const hmac = (key: Buffer, data: string) => createHmac('sha256', key).update(data).digest();

/** The StartupMessage `rawLogin` sends (tests split it at every offset). */
export const loginStartupMessage = (user = 'postgres') => startupMessage({ user, database: 'postgres' });

/** SSLRequest + TLS + StartupMessage + SCRAM-SHA-256, then the socket after ReadyForQuery. */
export async function rawLogin(opts: RawLoginOptions): Promise<RawSession> {
  const timeout = opts.stepTimeoutMs ?? 10_000;
  const pause = opts.pauseMs ?? 10;
  const raw = await withTimeout(rawConnect(opts.port), timeout, 'TCP connect');
  let tlsSocket: tls.TLSSocket | undefined;
  try {
    const plain = new BackendReader(raw);
    if (!(await writeSplit(raw, SSL_REQUEST, opts.sslRequestSplits ?? [], pause))) {
      throw new Error('connection closed while sending the SSLRequest');
    }
    const answer = (await plain.bytes(1, timeout)).toString('latin1');
    if (answer !== 'S') throw new Error(`server answered the SSLRequest with ${JSON.stringify(answer)}`);
    const early = plain.detach();
    if (early.length > 0) throw new Error('server sent bytes after S before the TLS handshake');
    const secure = tls.connect({
      socket: raw,
      ca: opts.ca,
      servername: `${opts.id}.db.example.com`,
      rejectUnauthorized: false,
    });
    tlsSocket = secure;
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        secure.once('secureConnect', () => resolve());
        secure.once('error', reject);
        secure.once('close', () => reject(new Error('closed during the TLS handshake')));
      }),
      timeout,
      'TLS handshake',
    );
    const reader = new BackendReader(secure);
    const user = opts.user ?? 'postgres';
    if (!(await writeSplit(secure, loginStartupMessage(user), opts.startupSplits ?? [], pause))) {
      throw new Error('connection closed while sending the StartupMessage');
    }

    const expectAuth = async (want: number): Promise<Buffer> => {
      const m = await reader.message(timeout);
      if (m.type === 'E') throw new LoginRefused(parseErrorFields(m.body));
      if (m.type !== 'R') throw new Error(`expected Authentication, got ${m.type}`);
      const kind = m.body.readUInt32BE(0);
      if (kind !== want) throw new Error(`expected Authentication ${want}, got ${kind}`);
      return m.body.subarray(4);
    };

    const mechanisms = (await expectAuth(10)).toString('utf8').split('\0');
    if (!mechanisms.includes('SCRAM-SHA-256')) throw new Error(`no SCRAM-SHA-256 in ${mechanisms}`);
    const clientNonce = randomBytes(18).toString('base64');
    const clientFirstBare = `n=*,r=${clientNonce}`;
    const clientFirst = Buffer.from(`n,,${clientFirstBare}`);
    const initial = Buffer.alloc(4);
    initial.writeInt32BE(clientFirst.length, 0);
    secure.write(tagged('p', Buffer.concat([Buffer.from('SCRAM-SHA-256\0'), initial, clientFirst])));

    const serverFirst = (await expectAuth(11)).toString('utf8');
    const attrs = Object.fromEntries(serverFirst.split(',').map((kv) => [kv[0], kv.slice(2)]));
    const nonce = attrs.r ?? '';
    if (!nonce.startsWith(clientNonce)) throw new Error('server nonce does not extend ours');
    const salted = pbkdf2Sync(
      opts.password.normalize('NFKC'),
      Buffer.from(attrs.s ?? '', 'base64'),
      Number(attrs.i),
      32,
      'sha256',
    );
    const clientKey = hmac(salted, 'Client Key');
    const storedKey = createHash('sha256').update(clientKey).digest();
    const finalWithoutProof = `c=biws,r=${nonce}`;
    const authMessage = `${clientFirstBare},${serverFirst},${finalWithoutProof}`;
    const proof = xor(clientKey, hmac(storedKey, authMessage)).toString('base64');
    secure.write(tagged('p', Buffer.from(`${finalWithoutProof},p=${proof}`)));

    const serverFinal = (await expectAuth(12)).toString('utf8');
    const serverKey = hmac(salted, 'Server Key');
    if (serverFinal !== `v=${hmac(serverKey, authMessage).toString('base64')}`) {
      throw new Error('server signature does not match');
    }
    await expectAuth(0);
    let processId = 0;
    let secretKey = 0;
    for (;;) {
      const m = await reader.message(timeout);
      if (m.type === 'E') throw new LoginRefused(parseErrorFields(m.body));
      if (m.type === 'K') {
        processId = m.body.readInt32BE(0);
        secretKey = m.body.readInt32BE(4);
      }
      if (m.type === 'Z') break;
    }
    return { socket: secure, leftover: reader.detach(), processId, secretKey };
  } catch (err) {
    tlsSocket?.destroy();
    raw.destroy();
    throw err;
  }
}

/**
 * Runs one simple Query on a session from `rawLogin` and returns the first column of each row
 * (text), or throws with the ErrorResponse. Leaves the socket's listeners as it found them.
 */
export async function rawQuery(session: RawSession, sql: string, timeoutMs = 10_000): Promise<string[]> {
  const reader = new BackendReader(session.socket);
  try {
    session.socket.write(tagged('Q', Buffer.from(`${sql}\0`)));
    const rows: string[] = [];
    let error: Record<string, string> | undefined;
    for (;;) {
      const m = await reader.message(timeoutMs);
      if (m.type === 'D') {
        const length = m.body.readInt32BE(2);
        rows.push(length < 0 ? '' : m.body.toString('utf8', 6, 6 + length));
      } else if (m.type === 'E') {
        error = parseErrorFields(m.body);
      } else if (m.type === 'Z') {
        if (error) throw new Error(`query failed: ${error.C} ${error.M}`);
        return rows;
      }
    }
  } finally {
    reader.detach();
  }
}

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
