import type { Socket } from 'node:net';
import { BackendError, type PostgresConnection, verifyScramSha256Password } from 'pg-gateway';
import { fromDuplexStream } from 'pg-gateway/node';
import { errors, GatewayError, toClientError } from '../errors.js';
import type { Logger } from '../log.js';
import { backendMessages } from '../wire/backend-scan.js';
import { MessageFramer } from '../wire/framer.js';
import { Backend, errorResponse, Frontend, PASSWORD_MESSAGE } from '../wire/protocol.js';
import type { ScramLookup } from './auth.js';
import { type AuthThrottle, waitUnlessClosed } from './auth-throttle.js';
import { verifyCleartextPassword } from './password-check.js';
import { type Route, routeConnection } from './routing.js';
import { ScramCheck } from './scram-check.js';
import { ClosedError } from './startup.js';

/**
 * The login phase of a connection: the startup packet routed to a database, then SCRAM-SHA-256
 * (or, over an already encrypted WebSocket, a cleartext password checked against the same
 * verifier) through pg-gateway, with the login throttle in front of every answer.
 */

/** Largest message accepted before authentication completes (Postgres uses the same bound). */
export const MAX_PREAUTH_MESSAGE = 64 * 1024;

/** How a connection arrived, when not over the Postgres TCP listener. */
export interface ConnectionOptions {
  /** Routes like an SNI name when the TLS layer is not ours (the WebSocket's Host or address). */
  serverName?: string | undefined;
  /**
   * `cleartext`: AuthenticationCleartextPassword, checked against the SCRAM verifier. Only over a
   * channel that is already encrypted (wss), for clients that pipeline their password.
   */
  password?: 'scram' | 'cleartext';
  /** Called once the client's password is accepted (before its database is opened). */
  onLogin?: () => void;
}

/** What authentication needs from the connection's dependencies. */
export interface AuthDeps {
  wildcardDomain: string;
  scram: ScramLookup;
  /** Delays password answers after repeated failures per address and per database. */
  throttle: AuthThrottle;
}

const toBackendError = (err: GatewayError) =>
  BackendError.create({ severity: err.severity, code: err.code, message: err.message, hint: err.hint });

/** pg-gateway reads messages through DataViews on `.buffer` ignoring byteOffset: give it its own. */
const ownBuffer = (message: Uint8Array) => new Uint8Array(message);

/** Calls `found` with the data of an AuthenticationSASLContinue among pg-gateway's messages. */
function serverFirstOf(chunk: Uint8Array, found: (data: string) => void): void {
  const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  for (const m of backendMessages(bytes)) {
    if (m.code !== Backend.Authentication || m.end > bytes.length || m.end - m.start < 9) continue;
    if (bytes.readInt32BE(m.start + 5) === SASL_CONTINUE) found(bytes.toString('utf8', m.start + 9, m.end));
  }
}

/** AuthenticationSASLContinue: the server-first-message follows. */
const SASL_CONTINUE = 11;

/** Runs SCRAM through pg-gateway and resolves once the client is authenticated. */
export function authenticate(
  socket: Socket,
  startup: Buffer,
  serverName: string | undefined,
  deps: AuthDeps,
  peer: { address: string; log: () => Logger; bind: (fields: Record<string, string>) => void },
  opts: ConnectionOptions,
): Promise<{ route: Extract<Route, { ok: true }>; user: string; pipelined: Buffer; storedKey: string }> {
  return new Promise((resolve, reject) => {
    let route: Extract<Route, { ok: true }> | undefined;
    /** The verifier the password was checked against (see ScramLookup.stillCurrent). */
    let storedKey = '';
    const lookup = async (username: string) => {
      const { data } = await deps.scram.lookup(route?.id ?? '', username);
      storedKey = data.storedKey;
      return data;
    };
    let authenticated = false;
    /** Set when we refused the password ourselves; pg-gateway's own (28000) reply is dropped. */
    let refused = false;
    // Only password messages (and Terminate) belong to the login. Framing stops at the first
    // message of another type: a first query the client pipelined (the Neon driver does) stays
    // unread, however large, for the session's framer and its MAX_MESSAGE_SIZE.
    const framer = new MessageFramer(
      () => MAX_PREAUTH_MESSAGE,
      undefined,
      (code) => code !== PASSWORD_MESSAGE,
    );
    // Messages are handed to pg-gateway one read at a time. The socket is paused while one waits
    // unread or the framer holds a pipelined message, so an unauthenticated client cannot make
    // us buffer more than a message and a read's worth, however fast it sends.
    const unread: Buffer[] = [startup];
    let pulling: ((message: Buffer) => void) | undefined;
    const flow = () => {
      if (authenticated || refused) return;
      if (unread.length > 0 || framer.heldType !== undefined) socket.pause();
      else socket.resume();
    };
    /** pg-gateway wants a password message, and the client sent something else instead. */
    const outOfTurn = (code: number) => {
      socket.off('data', onData);
      if (code === Frontend.Terminate) return reject(new ClosedError('terminated during authentication'));
      reject(errors.protocolViolation(`expected password response, got message type ${code}`));
    };
    const readable = new ReadableStream<Uint8Array>(
      {
        pull: (controller) => {
          const next = unread.shift();
          if (next) {
            flow();
            return controller.enqueue(ownBuffer(next));
          }
          const held = framer.heldType;
          if (held !== undefined && !authenticated) return outOfTurn(held);
          return new Promise<void>((resolve) => {
            pulling = (message) => {
              pulling = undefined;
              controller.enqueue(ownBuffer(message));
              resolve();
            };
            flow();
          });
        },
      },
      { highWaterMark: 0 },
    );
    // SCRAM messages are checked before pg-gateway reads them (scram-check.ts).
    const scram = opts.password === 'cleartext' ? undefined : new ScramCheck();
    let passwords = 0;
    const onData = (chunk: Buffer) => {
      try {
        for (const message of framer.push(chunk)) {
          // The exchange's two messages; Postgres reads nothing more before it answers them.
          const body = message.subarray(5);
          const turn = passwords++;
          const bad = scram && turn < 2 && (turn === 0 ? scram.initial(body) : scram.final(body));
          if (bad) {
            socket.off('data', onData);
            refused = true;
            return reject(bad);
          }
          if (pulling) pulling(message);
          else unread.push(message);
        }
        const held = framer.heldType;
        if (pulling && held !== undefined) return outOfTurn(held);
        flow();
      } catch (err) {
        socket.off('data', onData);
        reject(err);
      }
    };
    const onClose = () => reject(new ClosedError('closed during authentication'));
    socket.on('data', onData);
    socket.once('close', onClose);
    const writable = new WritableStream<Uint8Array>({
      write: (chunk) => {
        if (scram) serverFirstOf(chunk, (data) => scram.serverFirst(data));
        if (!authenticated && !refused) socket.write(chunk);
      },
      close: () => {
        if (!authenticated && !refused) socket.end();
      },
      abort: () => {
        if (!authenticated && !refused) socket.destroy();
      },
    });
    let connection: PostgresConnection | undefined;
    const guarded = <T>(fn: () => Promise<T>) =>
      fn().catch((err: unknown) => {
        // The client sees only catalogued errors; the log keeps what really happened.
        if (!(err instanceof GatewayError)) peer.log().error({ err }, 'login failed');
        else if (err.cause) peer.log().warn({ err: err.cause, reason: err.label }, 'login refused');
        throw toBackendError(toClientError(err, 'login'));
      });
    /** The throttle's verdict on a password check; a refusal is answered here (28P01). */
    const judge = async (username: string, verify: () => Promise<boolean>) => {
      const ok = await deps.throttle.guard({
        address: peer.address,
        database: route?.id ?? '',
        log: peer.log(),
        verify,
        wait: (ms) => waitUnlessClosed(ms, socket),
      });
      // A client that left, or ran out of LOGIN_TIMEOUT, while delayed gets nothing more.
      const gone = socket.destroyed || socket.writableEnded;
      if (ok && !gone) return true;
      refused = true;
      // Nothing more is read from this client: drop what it sends, so its close is seen.
      socket.off('data', onData);
      socket.resume();
      if (!gone) socket.end(errorResponse(errors.authFailed(username)));
      return false;
    };
    const cleartext = {
      method: 'password' as const,
      getClearTextPassword: () => '',
      validateCredentials: ({ username, password }: { username: string; password: string }) =>
        judge(username, () => guarded(async () => verifyCleartextPassword(await lookup(username), password))),
    };
    void fromDuplexStream(
      { readable, writable },
      {
        auth:
          opts.password === 'cleartext'
            ? cleartext
            : {
                method: 'scram-sha-256',
                getScramSha256Data: ({ username }) => guarded(() => lookup(username)),
                // Postgres answers a failed password with 28P01, which clients and tests rely on. The
                // throttle's delay comes first, so no answer is revealed before it.
                validateCredentials: ({ authMessage, clientProof, username, scramSha256Data }) =>
                  judge(username, () =>
                    verifyScramSha256Password({
                      authMessage,
                      clientProof,
                      storedKey: scramSha256Data.storedKey,
                    }),
                  ),
              },
        onStartup: (state) =>
          guarded(async () => {
            const params = state.clientParams ?? { user: '' };
            if (params.replication && params.replication !== 'false') {
              throw errors.protocolViolation('replication connections are not supported');
            }
            const result = routeConnection({ serverName, params, wildcardDomain: deps.wildcardDomain });
            if (!result.ok) throw result.error;
            route = result;
            peer.bind({ db: result.id, user: params.user });
          }),
        onAuthenticated: (state) =>
          guarded(async () => {
            // From here on the session owns the socket; pg-gateway must write nothing more.
            authenticated = true;
            socket.off('data', onData);
            socket.pause();
            socket.off('close', onClose);
            await connection?.detach();
            const pipelined = Buffer.concat([...unread, framer.takeBuffered()]);
            if (route) resolve({ route, user: state.clientParams?.user ?? '', pipelined, storedKey });
          }),
      },
    ).then((c) => {
      connection = c;
    });
  });
}
