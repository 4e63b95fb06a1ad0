import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { SecureContext } from 'node:tls';
import type { Catalog } from '../catalog/catalog.js';
import { type ClusterHooks, LocalAfterAll } from '../cluster/cluster.js';
import type { DatabaseRegistry, Lease } from '../databases/registry.js';
import { errors, GatewayError, toClientError } from '../errors.js';
import type { Logger } from '../log.js';
import { ClientSession } from '../pooler/session.js';
import {
  changesFixedIdentity,
  clientIdleInTransactionMs,
  limitsOf,
  startupSettings,
} from '../pooler/session-options.js';
import { isServableEncoding } from '../pooler/setting-values.js';
import { MessageFramer } from '../wire/framer.js';
import { type FrontendProblem, frontendProblem, isFrontendType } from '../wire/frontend-check.js';
import {
  backendKeyData,
  errorResponse,
  negotiateProtocolVersion,
  parameterStatus,
  readyForQuery,
} from '../wire/protocol.js';
import type { ScramLookup } from './auth.js';
import type { AuthThrottle } from './auth-throttle.js';
import { type AuthDeps, authenticate, type ConnectionOptions, MAX_PREAUTH_MESSAGE } from './authenticate.js';
import type { CancelKeys } from './cancel.js';
import type { ConnectionSlots } from './connection-slots.js';
import { parseStartupOptions, type Route } from './routing.js';
import { ClosedError, negotiateStartup, StartupFailure } from './startup.js';

export { type ConnectionOptions, MAX_PREAUTH_MESSAGE };

/** Client input queued while waiting for the database before we stop reading the socket. */
const MAX_QUEUED_INPUT = 8 * 1024 * 1024;
/** Output the client has not read yet past which it is disconnected instead of buffered. */
const MAX_UNREAD_OUTPUT = 64 * 1024 * 1024;

export interface ConnectionDeps extends AuthDeps {
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
  /** Cluster mode: sessions of databases owned elsewhere are forwarded; replies need the lease. */
  cluster?: ClusterHooks | undefined;
  /** MAX_CONNECTIONS, shared by every way clients arrive (TCP, WebSocket, peers). */
  slots?: ConnectionSlots | undefined;
}

/** A session a peer forwarded here: already authenticated at the entry node (cluster mode). */
export interface ForwardedClient {
  db: string;
  user: string;
  params: Record<string, string>;
  pipelined: Buffer;
  /** The verifier the entry node checked the password against, re-checked here once open. */
  storedKey?: string | undefined;
}

/** A live client, as the listener sees it for draining. */
export interface ClientHandle {
  /** Ends the client now if idle, otherwise as soon as its transaction finishes. */
  drain(): void;
  /** Ends the client at once. */
  kill(): void;
  readonly closed: Promise<void>;
}

/**
 * Drives one accepted socket: startup negotiation and TLS (ours), SCRAM (pg-gateway), then the
 * client session relaying messages to its database.
 */
export function handleConnection(
  raw: Socket,
  deps: ConnectionDeps,
  opts: ConnectionOptions = {},
  forwarded?: ForwardedClient,
): ClientHandle {
  const admission = deps.slots?.admit(raw.remoteAddress ?? '') ?? 'serve';
  if (admission === 'drop') {
    raw.destroy();
    return { closed: Promise.resolve(), drain: () => undefined, kill: () => undefined };
  }
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
    if (socket.destroyed) return;
    if (err && !socket.writableEnded) {
      log.info({ code: err.code, reason: err.label }, 'closing connection');
      socket.end(errorResponse(err));
    } else if (!socket.writableEnded) {
      socket.end();
    }
    // Also when ended already (a refused password): a client that never closes its side goes.
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
    if (forwarded) {
      if (admission === 'refuse') throw errors.tooManyConnections();
      const options = parseStartupOptions(forwarded.params.options);
      const route = { ok: true as const, id: forwarded.db, source: 'database' as const, options };
      clearTimeout(loginTimer);
      return startSession(route, forwarded.user, forwarded.params, forwarded.pipelined, forwarded.storedKey);
    }
    const outcome = await negotiateStartup(raw, deps).catch((err: unknown) => {
      if (err instanceof StartupFailure) socket = err.socket;
      throw err instanceof StartupFailure ? err.error : err;
    });
    if (outcome.kind === 'cancel') {
      // Not one of ours: in a cluster the client may be on any node (the key came from its owner).
      if (!deps.cancelKeys.cancel(outcome.processId, outcome.secretKey))
        deps.cluster?.cancelElsewhere(outcome.processId, outcome.secretKey);
      raw.destroy();
      return;
    }
    socket = outcome.socket;
    socket.on('error', (err) => log.debug({ err }, 'tls socket error'));
    // Past MAX_CONNECTIONS: told why once its startup packet is in, as Postgres does.
    if (admission === 'refuse') throw errors.tooManyConnections();
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
    const { route, user, pipelined, storedKey } = await authenticate(
      socket,
      outcome.message,
      serverName,
      deps,
      peer,
      opts,
    );
    clearTimeout(loginTimer);
    opts.onLogin?.();
    if (ended) return;
    await startSession(route, user, params, pipelined, storedKey);
  };

  const startSession = async (
    route: Extract<Route, { ok: true }>,
    user: string,
    params: Record<string, string>,
    pipelined: Buffer,
    /** The verifier the client logged in with (a forwarding node passes it on). */
    storedKey?: string,
  ) => {
    const settings = startupSettings(params, route.options.settings);
    // Setting names are case-insensitive (options=-c CLIENT_ENCODING=... is the same setting).
    for (const [name, value] of Object.entries(settings))
      if (name.toLowerCase() === 'client_encoding' && !isServableEncoding(value))
        throw errors.clientEncodingUnsupported(value);
    const record = await deps.catalog.getDatabase(route.id);
    if (!record) throw errors.databaseNotFound(route.id);
    if (deps.cluster && !forwarded) {
      const target = await deps.cluster.route(route.id);
      if (target.kind === 'forward') {
        const session = { db: route.id, user, params, pipelined, storedKey };
        try {
          return await deps.cluster.forward(socket, target, session, log);
        } catch (err) {
          if (!(err instanceof LocalAfterAll)) throw err;
        }
      }
    }
    // Cluster mode: nothing goes out for a database this node cannot prove it still owns.
    const owned = deps.cluster;
    lease = await deps.registry.connect(record);
    if (ended) return lease.release();
    const database = lease.database;
    // The database may have been deleted and created again since the login: not this client's.
    if (storedKey !== undefined && !(await deps.scram.stillCurrent(route.id, user, storedKey)))
      throw errors.databaseNotFound(route.id);
    if (ended) return;
    if (changesFixedIdentity(settings, database)) throw errors.identityFixed();
    // One waiter for all the writes made while the client is behind (a listener each would pile up).
    let drained: Promise<void> | undefined;
    const stallMs = deps.idleInTransactionTimeoutMs;
    const whenDrained = () => {
      drained ??= new Promise<void>((resolve) => {
        // A client that stops reading while its results stream holds the database's session, as
        // one idle in a transaction does: the same limit ends it (the worker would wait forever).
        const stalled = stallMs > 0 ? setTimeout(() => end(errors.clientTooSlow()), stallMs) : undefined;
        const done = () => {
          clearTimeout(stalled);
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
    // The key first: its process id goes into the notifications this client sends.
    let registered: ClientSession | undefined;
    const key = deps.cancelKeys.register(() => registered?.cancel());
    void closed.then(() => deps.cancelKeys.unregister(key.processId));
    const current = new ClientSession({
      database,
      poolMode: record.poolMode ?? deps.poolMode,
      settings,
      logger: log,
      sessionId,
      processId: key.processId,
      ...limitsOf(deps),
      idleInTransactionTimeoutMs: clientIdleInTransactionMs(
        params,
        route.options.settings,
        deps.idleInTransactionTimeoutMs,
      ),
      port: {
        write: (data) => {
          if (socket.destroyed) return undefined;
          if (owned && !owned.mayAcknowledge(route.id)) {
            end(errors.databaseUnavailable(route.id));
            return undefined;
          }
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
    registered = current;
    lease.onTerminate(end);

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
          const problem = frontendProblem(messages[bad] as Buffer) as FrontendProblem;
          throw problem.sqlstate === '22021'
            ? errors.nameEncoding(problem.message)
            : errors.protocolViolation(problem.message);
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
    deps.slots?.release();
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
