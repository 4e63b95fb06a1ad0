import type { Database } from '../databases/registry.js';
import type { GatewayError } from '../errors.js';
import type { Logger } from '../log.js';
import { CONNECTION_TIMEOUTS, durationMs } from './setting-values.js';

/** What a client session is given: its database, its connection, and the limits it enforces. */

export interface ClientPort {
  /** Sends to the client; a promise when the client is behind, settling once it caught up (or left). */
  write(data: Uint8Array): Promise<void> | undefined;
  /** Sends a FATAL error (if given) and closes the client connection. */
  end(err?: GatewayError): void;
  /** The input queue drained: reading from the client may resume. */
  drained(): void;
}

export interface SessionOptions {
  database: Database;
  poolMode: 'session' | 'transaction';
  /** GUCs from the startup packet and `options -c`, applied to this client's session. */
  settings: Readonly<Record<string, string>>;
  port: ClientPort;
  logger: Logger;
  sessionId: string;
  /**
   * The process id this client was given in BackendKeyData: notifications its statements send
   * carry it, as in Postgres (PGlite's own is one constant for every client). Unset: left as is.
   */
  processId?: number | undefined;
  /** Upper bound on COPY FROM STDIN data buffered for one statement. */
  maxCopyBytes: number;
  maxPreparedStatements: number;
  idleInTransactionTimeoutMs: number;
  /** A statement running longer is interrupted (57014); 0 disables. */
  statementTimeoutMs: number;
}

/** The server-wide limits every client session gets, whichever front door it came through. */
export interface PoolLimits {
  maxMessageSize: number;
  maxPreparedStatements: number;
  idleInTransactionTimeoutMs: number;
  statementTimeoutMs: number;
}

/** The SessionOptions fields that come from the server-wide limits. */
export function limitsOf(
  limits: PoolLimits,
): Pick<
  SessionOptions,
  'maxCopyBytes' | 'maxPreparedStatements' | 'idleInTransactionTimeoutMs' | 'statementTimeoutMs'
> {
  return {
    maxCopyBytes: limits.maxMessageSize,
    maxPreparedStatements: limits.maxPreparedStatements,
    idleInTransactionTimeoutMs: limits.idleInTransactionTimeoutMs,
    statementTimeoutMs: limits.statementTimeoutMs,
  };
}

/** Startup packet keys that are protocol-level rather than GUCs. */
const NOT_SETTINGS = new Set(['user', 'database', 'options', 'replication']);

/**
 * Settings a startup packet may carry that no client keeps: Postgres overwrites the transaction_*
 * ones from their default_* settings when the first transaction starts, and `seed` only seeds
 * random() once. Neither can be RESET, so on a shared session they would stop the next client's
 * switch; they are left out (see README, Pool modes). log_connections and log_disconnections
 * only choose what the server logs about a backend's start and end; Postgres takes them only at
 * connection start, so a SET on the shared session would fail the client's login.
 */
const NOT_KEPT =
  /^(transaction_isolation|transaction_read_only|transaction_deferrable|seed|log_connections|log_disconnections)$/i;

export function startupSettings(params: Record<string, string>, fromOptions: Record<string, string>) {
  const settings: Record<string, string> = {};
  for (const [k, v] of Object.entries(params)) if (!NOT_SETTINGS.has(k)) settings[k] = v;
  Object.assign(settings, fromOptions);
  for (const k of Object.keys(settings))
    if (NOT_KEPT.test(k) || CONNECTION_TIMEOUTS.has(k.toLowerCase())) delete settings[k];
  return settings;
}

/**
 * The idle-in-transaction limit for a client: its own idle_in_transaction_session_timeout from
 * the startup packet or options (ms unless a unit is given; 0 = none), when shorter than the
 * gateway's IDLE_IN_TRANSACTION_TIMEOUT (`gatewayMs`, 0 = none).
 */
export function clientIdleInTransactionMs(
  params: Record<string, string>,
  fromOptions: Record<string, string>,
  gatewayMs: number,
): number {
  const all = { ...params, ...fromOptions };
  const name = Object.keys(all).find((k) => k.toLowerCase() === 'idle_in_transaction_session_timeout');
  const ms = name === undefined ? undefined : durationMs(all[name] as string);
  if (ms === undefined || ms <= 0) return gatewayMs;
  return gatewayMs > 0 ? Math.min(gatewayMs, ms) : ms;
}

/**
 * A startup setting that would change the session identity of a database whose identity is fixed
 * (read-only, or made from a template with the writer role), refused at connect as SET SESSION
 * AUTHORIZATION is refused later: it would run the client as the superuser.
 */
export function changesFixedIdentity(
  settings: Readonly<Record<string, string>>,
  database: { readonly readOnly: boolean; readonly engine: { readonly baselineSql: string } },
): boolean {
  if (!database.readOnly && !database.engine.baselineSql) return false;
  return Object.keys(settings).some((name) => name.toLowerCase() === 'session_authorization');
}
