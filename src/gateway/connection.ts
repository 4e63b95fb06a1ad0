import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { SecureContext } from 'node:tls';
import { BackendError, type PostgresConnection, verifyScramSha256Password } from 'pg-gateway';
import { fromDuplexStream } from 'pg-gateway/node';
import type { Catalog } from '../catalog/catalog.js';
import type { DatabaseRegistry, Lease } from '../databases/registry.js';
import { errors, GatewayError, toClientError } from '../errors.js';
import type { Logger } from '../log.js';
import { ClientSession } from '../pooler/session.js';
import { startupSettings } from '../pooler/session-options.js';
import { MessageFramer } from '../wire/framer.js';
import { frontendProblem, isFrontendType } from '../wire/frontend-check.js';
import {
  backendKeyData,
  errorResponse,
  negotiateProtocolVersion,
  parameterStatus,
  readyForQuery,
} from '../wire/protocol.js';
import type { ScramLookup } from './auth.js';
import { type AuthThrottle, waitUnlessClosed } from './auth-throttle.js';
import type { CancelKeys } from './cancel.js';
import { verifyCleartextPassword } from './password-check.js';
import { type Route, routeConnection } from './routing.js';
import { ClosedError, negotiateStartup, StartupFailure } from './startup.js';

/** Largest message accepted before authentication completes (Postgres uses the same bound). */
export const MAX_PREAUTH_MESSAGE = 64 * 1024;
/** Client input queued while waiting for the database before we stop reading the socket. */
const MAX_QUEUED_INPUT = 8 * 1024 * 1024;
/** Output the client has not read yet past which it is disconnected instead of buffered. */
const MAX_UNREAD_OUTPUT = 64 * 1024 * 1024;

export interface ConnectionDeps {
  tlsMode: 'require' | 'prefer' | 'disable';
  secureContext: () => SecureContext | undefined;
  wildcardDomain: string;
  loginTimeoutMs: number;
  maxMessageSize: number;
  /** Server default; a database's catalog entry may override it. */
  poolMode: 'transaction' | 'session';
  maxPreparedStatements: number;
  idleInTransactionTimeoutMs: number;
  statementTimeoutMs: number;
  catalog: Pick<Catalog, 'getDatabase'>;
  scram: ScramLookup;
  /** Delays password answers after repeated failures per address and per database. */
  throttle: AuthThrottle;
  registry: DatabaseRegistry;
  cancelKeys: CancelKeys;
  logger: Logger;
}

/** A live client, as the listener sees it for draining. */
export interface ClientHandle {
  /** Ends the client now if idle, otherwise as soon as its transaction finishes. */
  drain(): void;
  /** Ends the client at once. */
  kill(): void;
  readonly closed: Promise<void>;
}

/** How a connection arrived, when not over the Postgres TCP listener. */
export interface ConnectionOptions {
  /** Routes like an SNI name when the TLS layer is not ours (the WebSocket's Host or address). */
  serverName?: string | undefined;
  /**
   * `cleartext`: AuthenticationCleartextPassword, checked against the SCRAM verifier. Only over a
   * channel that is already encrypted (wss), for clients that pipeline their password.
   */
  password?: 'scram' | 'cleartext';
}

const toBackendError = (err: GatewayError) =>
  BackendError.create({ severity: err.severity, code: err.code, message: err.message, hint: err.hint });

/**
 * Drives one accepted socket: startup negotiation and TLS (ours), SCRAM (pg-gateway), then the
 * client session relaying messages to its database.
 */
export function handleConnection(
  raw: Socket,
  deps: ConnectionDeps,
  opts: ConnectionOptions = {},
): ClientHandle {
  const sessionId = randomBytes(6).toString('hex');
  let log = deps.logger.child({ sessionId, client: `${raw.remoteAddress}:${raw.remotePort}` });
  let socket: Socket = raw;
  let session: ClientSession | undefined;
  let lease: Lease | undefined;
  let draining = false;
  let ended = false;

  raw.setNoDelay(true);
  raw.on('error', (err) => log.debug({ err }, 'socket error'));
  const closed = new Promise<void>((resolve) => raw.once('close', () => resolve()));

  const end = (err?: GatewayError) => {
    if (ended) return;
    ended = true;
    if (socket.destroyed || socket.writableEnded) return;
    if (err) {
      log.info({ code: err.code, reason: err.label }, 'closing connection');
      socket.end(errorResponse(err));
    } else {
      socket.end();
    }
    setTimeout(() => socket.destroy(), 1000).unref();
  };
  const fail = (err: unknown) => {
    if (err instanceof ClosedError) {
      log.debug({ reason: err.message }, 'connection ended before login');
      return end();
    }
    if (!(err instanceof GatewayError)) log.error({ err }, 'connection failed');
    end(toClientError(err, sessionId));
  };

  const loginTimer = setTimeout(() => end(errors.loginTimeout()), deps.loginTimeoutMs);
  loginTimer.unref();

  const run = async () => {
    const outcome = await negotiateStartup(raw, deps).catch((err: unknown) => {
      if (err instanceof StartupFailure) socket = err.socket;
      throw err instanceof StartupFailure ? err.error : err;
    });
    if (outcome.kind === 'cancel') {
      deps.cancelKeys.cancel(outcome.processId, outcome.secretKey);
      raw.destroy();
      return;
    }
    socket = outcome.socket;
    socket.on('error', (err) => log.debug({ err }, 'tls socket error'));
    if (outcome.negotiate) socket.write(negotiateProtocolVersion(outcome.negotiate));
    const params = outcome.params;
    const peer = {
      address: raw.remoteAddress ?? '',
      log: () => log,
      bind: (child: Record<string, string>) => {
        log = log.child(child);
      },
    };
    const serverName = outcome.serverName ?? opts.serverName;
    const { route, user, pipelined } = await authenticate(
      socket,
      outcome.message,
      serverName,
      deps,
      peer,
      opts,
    );
    clearTimeout(loginTimer);
    if (ended) return;
    await startSession(route, user, params, pipelined);
  };

  const startSession = async (
    route: Extract<Route, { ok: true }>,
    user: string,
    params: Record<string, string>,
    pipelined: Buffer,
  ) => {
    const record = await deps.catalog.getDatabase(route.id);
    if (!record) throw errors.databaseNotFound(route.id);
    lease = await deps.registry.connect(record);
    if (ended) return lease.release();
    const database = lease.database;
    // One waiter for all the writes made while the client is behind (a listener each would pile up).
    let drained: Promise<void> | undefined;
    const whenDrained = () => {
      drained ??= new Promise<void>((resolve) => {
        const done = () => {
          socket.off('drain', done);
          socket.off('close', done);
          drained = undefined;
          resolve();
        };
        socket.once('drain', done);
        socket.once('close', done);
      });
      return drained;
    };
    const settings = startupSettings(params, route.options.settings);
    const current = new ClientSession({
      database,
      poolMode: record.poolMode ?? deps.poolMode,
      settings,
      logger: log,
      sessionId,
      maxCopyBytes: deps.maxMessageSize,
      maxPreparedStatements: deps.maxPreparedStatements,
      idleInTransactionTimeoutMs: deps.idleInTransactionTimeoutMs,
      statementTimeoutMs: deps.statementTimeoutMs,
      port: {
        write: (data) => {
          if (socket.destroyed) return undefined;
          // Results pile up only when the client stopped reading: cut it off, do not buffer.
          if (socket.writableLength > MAX_UNREAD_OUTPUT) {
            end(errors.clientTooSlow());
            return undefined;
          }
          return socket.write(data) ? undefined : whenDrained();
        },
        end,
        drained: () => {
          if (socket.isPaused()) socket.resume();
        },
      },
    });
    session = current;
    lease.onTerminate(end);
    const key = deps.cancelKeys.register(() => current.cancel());
    void closed.then(() => deps.cancelKeys.unregister(key.processId));

    const reported: Record<string, string> = { ...database.parameters, session_authorization: user };
    for (const name of Object.keys(reported))
      if (settings[name] !== undefined) reported[name] = settings[name];
    const hello = Object.entries(reported).map(([k, v]) => parameterStatus(k, v));
    socket.write(Buffer.concat([...hello, backendKeyData(key.processId, key.secretKey), readyForQuery('I')]));
    log.info({ source: route.source }, 'client connected');

    const framer = new MessageFramer(() => deps.maxMessageSize, isFrontendType);
    const onData = (chunk: Buffer) => {
      try {
        const messages = framer.push(chunk);
        // A message PGlite must never see ends this client only, as Postgres would (08P01).
        const bad = messages.findIndex((m) => frontendProblem(m) !== undefined);
        if (bad >= 0) {
          socket.off('data', onData);
          current.push(messages.slice(0, bad));
          throw errors.protocolViolation(frontendProblem(messages[bad] as Buffer) as string);
        }
        current.push(messages);
        if (current.queuedBytes > MAX_QUEUED_INPUT) socket.pause();
      } catch (err) {
        fail(err);
      }
    };
    socket.on('data', onData);
    // What the client sent after its password without waiting (pipelined connect).
    if (pipelined.length > 0) onData(pipelined);
    socket.resume();
    if (draining) current.drainThen(end);
  };

  void closed.then(async () => {
    clearTimeout(loginTimer);
    ended = true;
    await session?.close();
    lease?.release();
    log.debug('connection closed');
  });
  run().catch(fail);

  return {
    closed,
    drain: () => {
      draining = true;
      if (session) session.drainThen(end);
      else end(errors.shuttingDown());
    },
    kill: () => end(errors.shuttingDown()),
  };
}

/** pg-gateway reads messages through DataViews on `.buffer` ignoring byteOffset: give it its own. */
const ownBuffer = (message: Uint8Array) => new Uint8Array(message);

/** Runs SCRAM through pg-gateway and resolves once the client is authenticated. */
function authenticate(
  socket: Socket,
  startup: Buffer,
  serverName: string | undefined,
  deps: ConnectionDeps,
  peer: { address: string; log: () => Logger; bind: (fields: Record<string, string>) => void },
  opts: ConnectionOptions,
): Promise<{ route: Extract<Route, { ok: true }>; user: string; pipelined: Buffer }> {
  return new Promise((resolve, reject) => {
    let route: Extract<Route, { ok: true }> | undefined;
    let authenticated = false;
    /** Set when we refused the password ourselves; pg-gateway's own (28000) reply is dropped. */
    let refused = false;
    const framer = new MessageFramer(() => MAX_PREAUTH_MESSAGE);
    // Messages are handed to pg-gateway one read at a time, so those it has not read when the
    // client is authenticated (a pipelined first query) stay here for the session.
    const unread: Buffer[] = [startup];
    let pulling: ((message: Buffer) => void) | undefined;
    const readable = new ReadableStream<Uint8Array>(
      {
        pull: (controller) => {
          const next = unread.shift();
          if (next) return controller.enqueue(ownBuffer(next));
          return new Promise<void>((resolve) => {
            pulling = (message) => {
              pulling = undefined;
              controller.enqueue(ownBuffer(message));
              resolve();
            };
          });
        },
      },
      { highWaterMark: 0 },
    );
    const onData = (chunk: Buffer) => {
      try {
        for (const message of framer.push(chunk)) {
          if (pulling) pulling(message);
          else unread.push(message);
        }
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
        throw toBackendError(toClientError(err, 'auth'));
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
      if (!gone) socket.end(errorResponse(errors.authFailed(username)));
      return false;
    };
    const cleartext = {
      method: 'password' as const,
      getClearTextPassword: () => '',
      validateCredentials: ({ username, password }: { username: string; password: string }) =>
        judge(username, () =>
          guarded(async () =>
            verifyCleartextPassword((await deps.scram.lookup(route?.id ?? '', username)).data, password),
          ),
        ),
    };
    void fromDuplexStream(
      { readable, writable },
      {
        auth:
          opts.password === 'cleartext'
            ? cleartext
            : {
                method: 'scram-sha-256',
                getScramSha256Data: ({ username }) =>
                  guarded(async () => (await deps.scram.lookup(route?.id ?? '', username)).data),
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
            if (route) resolve({ route, user: state.clientParams?.user ?? '', pipelined });
          }),
      },
    ).then((c) => {
      connection = c;
    });
  });
}
