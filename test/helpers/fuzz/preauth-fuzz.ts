import type net from 'node:net';
import tls from 'node:tls';
import type { GatewayProcess } from '../gateway-process.js';
import { rawConnect, SSL_REQUEST, startupMessage, untagged } from '../raw.js';
import { loginStartupMessage, parseErrorFields, rawLogin, withTimeout, writeSplit } from '../raw-auth.js';
import { type Findings, sleep } from './bookkeeping.js';
import { cstr, i32, tagged } from './frontend-messages.js';
import {
  captureClientHello,
  describeAction,
  type PreauthAction,
  preauthActionAt,
} from './preauth-actions.js';
import { errorProblem, rawTextProblem } from './server-answers.js';

/**
 * Pre-authentication fuzz: performs the generated actions and checks that every connection is
 * closed by LOGIN_TIMEOUT without opening a database or leaking an internal error.
 */

export interface PreauthOptions {
  gateway: GatewayProcess;
  /** An existing database whose name the fuzz uses (SNI); it must never be opened. */
  id: string;
  password: string;
  loginTimeoutMs: number;
  /** Allowed beyond LOGIN_TIMEOUT before a connection counts as not closed. Default 5 s. */
  marginMs?: number;
  findings: Findings;
}

/** A connection the server must close; resolves with when it closed (ms from connect) and what it sent. */
class Watched {
  readonly started = Date.now();
  closedAt: number | undefined;
  readonly received: Buffer[] = [];
  receivedBytes = 0;
  private waiter: (() => void) | undefined;

  constructor(readonly socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('error', () => undefined);
    socket.on('close', this.onClose);
  }

  readonly onData = (chunk: Buffer) => {
    this.receivedBytes += chunk.length;
    if (this.receivedBytes < 1_000_000) this.received.push(chunk);
    this.wake();
  };

  readonly onClose = () => {
    this.closedAt ??= Date.now();
    this.wake();
  };

  /** Also watch a TLS socket layered on this one (its plaintext is what the server said). */
  watchTls(secure: tls.TLSSocket) {
    this.socket.off('data', this.onData);
    secure.on('data', this.onData);
    secure.on('error', () => undefined);
    secure.on('close', this.onClose);
  }

  private wake() {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  get closed() {
    return this.closedAt !== undefined;
  }

  /** Waits for some bytes or the close, at most `ms`. */
  async next(ms: number): Promise<void> {
    if (this.closed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.waiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  async closedWithin(deadline: number): Promise<boolean> {
    while (!this.closed && Date.now() < deadline) await this.next(Math.max(1, deadline - Date.now()));
    return this.closed;
  }
}

const write = (socket: net.Socket, data: Buffer) => {
  if (!socket.destroyed && !socket.writableEnded) socket.write(data);
};

function cancelRequest(): Buffer {
  return untagged(80877102, Buffer.concat([i32(12345), i32(67890)]));
}

/** Starts TLS on a connection that got 'S'; resolves once the handshake is done (or fails). */
async function startTls(
  w: Watched,
  opts: PreauthOptions,
  servername: string,
  deadline: number,
): Promise<tls.TLSSocket | undefined> {
  write(w.socket, SSL_REQUEST);
  while (!w.closed && w.receivedBytes < 1 && Date.now() < deadline) await w.next(500);
  if (w.closed || w.received[0]?.[0] !== 0x53) return undefined;
  const secure = tls.connect({
    socket: w.socket,
    ca: opts.gateway.ca,
    servername,
    rejectUnauthorized: false,
  });
  w.watchTls(secure);
  const ok = await new Promise<boolean>((resolve) => {
    setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
    secure.once('secureConnect', () => resolve(true));
    secure.once('error', () => resolve(false));
    secure.once('close', () => resolve(false));
  });
  return ok ? secure : undefined;
}

/** Performs one pre-authentication action and checks how the server ended it. */
export async function runPreauthAction(
  opts: PreauthOptions,
  action: PreauthAction,
  where: string,
): Promise<void> {
  const { findings } = opts;
  if (action.kind === 'bad-password') return badPassword(opts, action.startupCut, where);
  const raw = await withTimeout(rawConnect(opts.gateway.port), 10_000, 'TCP connect');
  const w = new Watched(raw);
  const deadline = w.started + opts.loginTimeoutMs + (opts.marginMs ?? 5000);
  const sni = `${opts.id}.db.example.com`;
  try {
    switch (action.kind) {
      case 'random':
        await writeSplit(raw, Buffer.from(action.bytes), action.cuts, action.pause);
        break;
      case 'partial': {
        const packet =
          action.packet === 'ssl'
            ? SSL_REQUEST
            : action.packet === 'gss'
              ? untagged(80877104)
              : action.packet === 'cancel'
                ? cancelRequest()
                : startupMessage({ user: 'postgres', database: opts.id });
        const keep = Math.max(1, Math.round(packet.length * action.keepFraction));
        await writeSplit(raw, packet.subarray(0, keep), action.cuts, action.pause);
        break;
      }
      case 'oversized': {
        const head = Buffer.alloc(8);
        head.writeUInt32BE(action.length, 0);
        head.writeUInt32BE(action.code >>> 0, 4);
        write(raw, head);
        break;
      }
      case 'tls-garbage':
        write(raw, SSL_REQUEST);
        await w.next(1000);
        write(raw, Buffer.from(action.bytes));
        break;
      case 'hello-mutant': {
        const hello = Buffer.from(await captureClientHello(sni));
        for (const f of action.flips) {
          const at = f % hello.length;
          hello[at] = (hello[at] ?? 0) ^ 0x5a;
        }
        write(raw, SSL_REQUEST);
        await w.next(1000);
        write(raw, hello.subarray(0, Math.max(1, Math.floor(hello.length * action.cutFraction))));
        break;
      }
      case 'slowloris': {
        // One byte at a time of a StartupMessage (plain) or of an SSLRequest + ClientHello.
        const bytes = action.tls
          ? Buffer.concat([SSL_REQUEST, await captureClientHello(sni)])
          : startupMessage({ user: 'postgres', database: opts.id });
        for (let i = 0; i < bytes.length && !w.closed && Date.now() < deadline; i++) {
          write(raw, bytes.subarray(i, i + 1));
          await sleep(action.intervalMs);
        }
        break;
      }
      case 'idle':
        break;
      case 'tls-stall': {
        const secure = await startTls(w, opts, sni, deadline);
        if (!secure || action.stage === 'handshake-done') break;
        const startup = loginStartupMessage();
        if (action.stage === 'startup-partial') {
          write(secure, startup.subarray(0, 10));
          break;
        }
        write(secure, startup);
        if (action.stage === 'mid-scram') {
          await w.next(1000);
          const first = Buffer.from('n,,n=*,r=abcdefghijklmnop');
          write(secure, tagged('p', Buffer.concat([cstr('SCRAM-SHA-256'), i32(first.length), first])));
        }
        break;
      }
      case 'bad-sni': {
        const secure = await startTls(w, opts, action.servername, deadline);
        if (secure) write(secure, loginStartupMessage());
        break;
      }
    }
    const closed = await w.closedWithin(deadline);
    const elapsed = (w.closedAt ?? Date.now()) - w.started;
    findings.outcome(closed ? `preauth ${action.kind}: closed` : `preauth ${action.kind}: NOT closed`);
    if (!closed) {
      findings.violation(
        `pre-auth ${action.kind}: connection not closed within LOGIN_TIMEOUT + margin`,
        `${where}: still open ${elapsed} ms after connect (LOGIN_TIMEOUT ${opts.loginTimeoutMs} ms): ${describeAction(action)}`,
      );
    }
    const received = Buffer.concat(w.received);
    const problem = rawTextProblem(received);
    if (problem) {
      findings.violation(
        `pre-auth ${action.kind}: ${problem}`,
        `${where}: ${JSON.stringify(received.toString('latin1').slice(0, 300))} — ${describeAction(action)}`,
      );
    }
    for (const fields of plaintextErrors(received)) {
      findings.error(fields);
      const p = errorProblem(fields);
      if (p) {
        findings.violation(
          `pre-auth ${action.kind}: bad ErrorResponse: ${p}`,
          `${where}: ${fields.C} ${JSON.stringify(fields.M)} — ${describeAction(action)}`,
        );
      }
    }
  } finally {
    raw.destroy();
  }
}

/** A real SCRAM exchange with the wrong password: refused with 28P01, and no database opened. */
async function badPassword(opts: PreauthOptions, startupCut: number, where: string): Promise<void> {
  const started = Date.now();
  try {
    const session = await rawLogin({
      port: opts.gateway.port,
      ca: opts.gateway.ca,
      id: opts.id,
      password: `${opts.password}-wrong`,
      startupSplits: [startupCut],
      stepTimeoutMs: opts.loginTimeoutMs + (opts.marginMs ?? 5000),
    });
    session.socket.destroy();
    opts.findings.violation('pre-auth: a wrong password was accepted', where);
  } catch (err) {
    const fields = (err as { fields?: Record<string, string> }).fields;
    opts.findings.outcome(`preauth bad-password: ${fields?.C ?? 'no answer'}`);
    if (!fields) {
      opts.findings.violation(
        'pre-auth: a wrong password got no proper refusal',
        `${where}: ${(err as Error).message} after ${Date.now() - started} ms`,
      );
    } else {
      opts.findings.error(fields);
      // 28P01, or the login timeout when the brute-force throttle delays the answer past it.
      const throttled = fields.C === '08P01' && /timed out/.test(fields.M ?? '');
      if (fields.C !== '28P01' && !throttled) {
        opts.findings.violation(
          `pre-auth: a wrong password was answered ${fields.C}`,
          `${where}: ${fields.M}`,
        );
      }
    }
  }
}

/** ErrorResponses found in what a pre-auth connection received ('E' + sane length). */
function plaintextErrors(data: Buffer): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  for (let i = data.indexOf(0x45); i >= 0 && i + 5 <= data.length; i = data.indexOf(0x45, i + 1)) {
    const length = data.readUInt32BE(i + 1);
    if (length < 8 || length > 4096 || i + 1 + length > data.length) continue;
    const body = data.subarray(i + 5, i + 1 + length);
    if (body[0] !== 0x53 || body[body.length - 1] !== 0) continue; // fields start with 'S'
    out.push(parseErrorFields(Buffer.from(body)));
  }
  return out;
}

export interface PreauthStats {
  actions: number;
  idleConnections: number;
}

/**
 * `clients` concurrent loops of generated pre-auth actions for `durationMs`, plus `idle`
 * connections opened at the start that never send a byte.
 */
export async function runPreauthFuzz(
  opts: PreauthOptions & {
    durationMs: number;
    clients: number;
    seed: number;
    idle: number;
    log?: (line: string) => void;
  },
): Promise<PreauthStats> {
  const stats: PreauthStats = { actions: 0, idleConnections: 0 };
  const deadline = Date.now() + opts.durationMs;
  const idle = Array.from({ length: opts.idle }, async (_, i) => {
    await runPreauthAction(opts, { kind: 'idle' }, `idle connection ${i}`).catch((err: Error) =>
      opts.findings.violation('pre-auth idle connection failed', `idle connection ${i}: ${err.message}`),
    );
    stats.idleConnections++;
  });
  let next = 0;
  const worker = async () => {
    while (Date.now() < deadline) {
      const index = next++;
      const action = preauthActionAt(opts.seed, index);
      try {
        await runPreauthAction(opts, action, `preauth seed ${opts.seed} action ${index}`);
      } catch (err) {
        opts.findings.violation(
          `pre-auth ${action.kind}: client failed`,
          `preauth seed ${opts.seed} action ${index}: ${(err as Error).message} — ${describeAction(action)}`,
        );
      }
      stats.actions++;
      if (stats.actions % 100 === 0) opts.log?.(`preauth fuzz: ${stats.actions} actions`);
    }
  };
  await Promise.all([...idle, ...Array.from({ length: opts.clients }, worker)]);
  return stats;
}
