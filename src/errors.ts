/**
 * The one catalogue of errors the gateway itself sends to clients: Postgres errors with their
 * SQLSTATE (GatewayError, `errors`), and the admin service's refusals with their HTTP status
 * (RequestError and its kinds). Only these messages reach a client; anything else becomes
 * `XX000 internal error` (Postgres) or a bare 500 (HTTP), with details in the logs only.
 */

export type Severity = 'ERROR' | 'FATAL';

export class GatewayError extends Error {
  constructor(
    readonly code: string,
    readonly severity: Severity,
    message: string,
    /** Short stable name for logs and metrics. */
    readonly label: string,
    readonly hint?: string,
    readonly detail?: string,
    /** Postgres' routine field (R), where a driver tells errors apart by it (asyncpg). */
    readonly routine?: string,
  ) {
    super(message);
    this.name = 'GatewayError';
  }
}

const fatal = (code: string, label: string, message: string, hint?: string) =>
  new GatewayError(code, 'FATAL', message, label, hint);
const error = (code: string, label: string, message: string, hint?: string) =>
  new GatewayError(code, 'ERROR', message, label, hint);

export const errors = {
  protocolViolation: (message: string) => fatal('08P01', 'protocol_violation', message),
  /**
   * Postgres answers this with an ERROR and skips to the Sync; the gateway ends the connection
   * instead (as for a malformed message): no driver sends such names, and the messages after
   * it are queued already.
   */
  nameEncoding: (message: string) => fatal('22021', 'name_encoding', message),
  /** A SCRAM message that breaks RFC 5802's grammar, in Postgres's words (auth-scram.c). */
  malformedScram: (detail: string) =>
    new GatewayError('08P01', 'FATAL', 'malformed SCRAM message', 'malformed_scram', undefined, detail),
  invalidScramResponse: (detail: string) =>
    new GatewayError('08P01', 'FATAL', 'invalid SCRAM response', 'invalid_scram', undefined, detail),
  startupTooLarge: (max: number) =>
    fatal('08P01', 'startup_too_large', `invalid startup packet length (max ${max} bytes)`),
  messageTooLarge: (max: number) =>
    fatal('08P01', 'message_too_large', `message exceeds the maximum size of ${max} bytes`),
  tlsRequired: () =>
    fatal('28000', 'tls_required', 'SSL connection is required', 'connect with sslmode=require or stronger'),
  unsupportedProtocol: (major: number, minor: number) =>
    fatal('0A000', 'unsupported_protocol', `unsupported frontend protocol ${major}.${minor}`),
  loginTimeout: () => fatal('08P01', 'login_timeout', 'authentication timed out'),
  noDatabaseId: (domain: string) =>
    fatal(
      '08004',
      'no_database_id',
      `no database id: connect to <id>.${domain} (TLS SNI) or pass options=endpoint=<id> or dbname=<id> ` +
        '(a dbname of "postgres" or the user name names no database)',
      `e.g. psql "host=<id>.${domain} user=postgres sslmode=verify-full", or ` +
        'psql "host=127.0.0.1 user=postgres options=endpoint=<id> sslmode=require"',
    ),
  invalidDatabaseId: () =>
    fatal(
      '3D000',
      'invalid_database_id',
      'invalid database id',
      'database ids are 1-63 characters of a-z, 0-9 and "-", starting with a letter or digit',
    ),
  databaseIdMismatch: (sni: string, other: string) =>
    fatal(
      '08004',
      'database_id_mismatch',
      `database id from TLS SNI ("${sni}") does not match the one requested ("${other}")`,
    ),
  /** PGlite has no encoding conversions: anything but UTF8 breaks its replies (see settings.ts). */
  clientEncodingUnsupported: (value: string, severity: Severity = 'FATAL') =>
    new GatewayError(
      '0A000',
      severity,
      `client_encoding "${value.slice(0, 64)}" is not supported: this server speaks UTF8 only`,
      'client_encoding',
      'use client_encoding UTF8 (psql: unset PGCLIENTENCODING; \\encoding UTF8)',
    ),
  /** A read-only or writer database runs its clients under a fixed, restricted identity. */
  identityFixed: (severity: Severity = 'FATAL') =>
    new GatewayError(
      '42501',
      severity,
      'permission denied to change the session identity of a read-only or writer database',
      'readonly_identity',
    ),
  databaseNotFound: (id: string) => fatal('3D000', 'database_not_found', `database "${id}" does not exist`),
  authFailed: (user: string) =>
    fatal('28P01', 'auth_failed', `password authentication failed for user "${user}"`),
  tooManyClients: (id: string) => fatal('53300', 'too_many_clients', `too many clients for database "${id}"`),
  /** MAX_CONNECTIONS reached: Postgres's own words for max_connections. */
  tooManyConnections: () => fatal('53300', 'too_many_connections', 'sorry, too many clients already'),
  tooManyOpenDatabases: () =>
    fatal(
      '53300',
      'too_many_open_databases',
      'too many databases are open on this server; try again shortly',
    ),
  preLoginBytes: () =>
    fatal(
      '53000',
      'prelogin_bytes',
      'too much data sent before login while the server holds other logins; try again',
      'send a large first query after the login completes',
    ),
  queueTimeout: () =>
    fatal('57014', 'queue_timeout', 'canceling connection: timed out waiting for the database'),
  idleInUnitTimeout: () =>
    fatal(
      '25P03',
      'idle_in_unit_timeout',
      'terminating connection due to idle timeout inside an unfinished extended-protocol unit or COPY',
      'send Sync (or finish the COPY) promptly: the database is held for you until then',
    ),
  idleInTransactionTimeout: () =>
    fatal(
      '25P03',
      'idle_in_transaction_timeout',
      'terminating connection due to idle-in-transaction timeout',
    ),
  clientTooSlow: () =>
    fatal('08006', 'client_too_slow', 'terminating connection: the client is not reading its results'),
  databaseRestarted: () =>
    fatal(
      '57P02',
      'database_restarted',
      'terminating connection: the database was restarted while this session was in a transaction',
    ),
  shuttingDown: () => fatal('57P01', 'admin_shutdown', 'terminating connection due to server shutdown'),
  /** The server keeps running; an admin action (delete, flags, restore, upload) ended the database's clients. */
  adminTerminated: () =>
    fatal('57P01', 'admin_terminate', 'terminating connection due to administrator command'),
  /** The catalog (embedded or CATALOG_URL) did not answer a credential lookup: nothing is wrong with the client. */
  catalogUnavailable: () =>
    fatal(
      '57P03',
      'catalog_unavailable',
      'the server cannot check credentials right now (its catalog is unreachable)',
      'try again shortly',
    ),
  /** A forwarded session's owner stopped answering (paused, partitioned, or the database moved on). */
  ownerUnreachable: (id: string) =>
    fatal(
      '08006',
      'owner_unreachable',
      `terminating connection: the node serving database "${id}" stopped answering`,
      'reconnect: the database is served again once another node takes it over',
    ),
  databaseUnavailable: (id: string) =>
    fatal('57P03', 'database_unavailable', `database "${id}" is not available right now`),
  fetchFailed: (id: string) =>
    fatal(
      '57P03',
      'database_fetch_failed',
      `database "${id}" could not be fetched from the archive`,
      'the server logged why; try again shortly',
    ),
  readOnly: () => error('25006', 'read_only', 'cannot execute this in a read-only database'),
  walNotArchived: () =>
    fatal(
      '58030',
      'wal_not_archived',
      'terminating connection: the archive did not store this commit in time (DURABILITY=sync)',
      'the transaction is committed locally and will be archived when the archive is reachable again',
    ),
  localCopyNotDurable: () =>
    fatal(
      '58030',
      'local_copy_not_durable',
      'terminating connection: the database fetched from the archive could not be flushed to local disk; this commit was not acknowledged',
      'the node logged why; writes are refused until the database is closed and fetched again',
    ),
} as const;

/** What a client may see of any error: allow-listed gateway errors, or an opaque internal error. */
export function toClientError(err: unknown, sessionId: string): GatewayError {
  if (err instanceof GatewayError) return err;
  return new GatewayError(
    'XX000',
    'FATAL',
    `internal error (session ${sessionId})`,
    'internal',
    'the server log has details under this session id',
  );
}

/** HTTP statuses of the admin service's refusals. */
export type RequestStatus = 400 | 404 | 409 | 413;

/** A request the admin service refuses; its message is safe to show, with its HTTP status. */
export class RequestError extends Error {
  constructor(
    message: string,
    readonly status: RequestStatus,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Malformed or not allowed: 400. */
export class InvalidRequestError extends RequestError {
  constructor(message: string) {
    super(message, 400);
  }
}

/** No such database or version: 404. */
export class NotFoundError extends RequestError {
  constructor(message: string) {
    super(message, 404);
  }
}

/** The id already exists: 409. */
export class ConflictError extends RequestError {
  constructor(message: string) {
    super(message, 409);
  }
}

/** An upload larger than MAX_UPLOAD_BYTES, or a body over the API's limit: 413. */
export class PayloadTooLargeError extends RequestError {
  constructor(message: string) {
    super(message, 413);
  }
}
