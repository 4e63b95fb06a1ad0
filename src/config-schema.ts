import { hostname, totalmem } from 'node:os';
import { z } from 'zod';
import { parseBytes, parseDurationMs } from './units.js';

/**
 * The environment's schema: every variable, its type, default and documentation. Only
 * config.ts applies it to process.env; this file holds no state and reads nothing.
 */

const duration = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((v, ctx) => {
      try {
        return parseDurationMs(v);
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: (e as Error).message });
        return z.NEVER;
      }
    });

const bytes = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((v, ctx) => {
      try {
        return parseBytes(v);
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: (e as Error).message });
        return z.NEVER;
      }
    });

const int = (fallback: number, min = 0) => z.coerce.number().int().min(min).default(fallback);
const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === '' ? undefined : v));

/**
 * RAM, or the cgroup memory limit when one is lower (a container sees the host's RAM in
 * os.totalmem(); Node reports no limit as a huge number).
 */
function memoryAvailable(): number {
  const limit = process.constrainedMemory?.() ?? 0;
  return limit > 0 && limit < totalmem() ? limit : totalmem();
}

export const EnvSchema = z.object({
  /** TCP port for Postgres clients; 0 picks a free port. */
  PORT: int(5432),
  /** Address the Postgres listener binds; default 127.0.0.1, or 0.0.0.0 with NODE_ENV=production. */
  HOST: optionalString,
  /** Databases are routed from SNI names `<id>.<WILDCARD_DOMAIN>`. */
  WILDCARD_DOMAIN: z
    .string()
    .default('db.example.com')
    .transform((v) => v.toLowerCase().replace(/^\*\./, '')),
  /** require: TLS only; prefer: TLS or plaintext; disable: plaintext only (unsafe, local experiments). */
  TLS_MODE: z.enum(['require', 'prefer', 'disable']).default('require'),
  /** Directory for generated dev certificates (ca.pem, cert.pem, key.pem). */
  TLS_DIR: z.string().default('tls'),
  /** PEM certificate path (TLS_SOURCE=files) or the PEM itself (TLS_SOURCE=env). */
  TLS_CERT: optionalString,
  /** PEM private key path (TLS_SOURCE=files) or the PEM itself (TLS_SOURCE=env). */
  TLS_KEY: optionalString,
  /**
   * Where the certificate and key come from: files (TLS_CERT/TLS_KEY paths, or TLS_DIR), env
   * (TLS_CERT/TLS_KEY hold the PEM text: secrets), archive (`_tls/cert.pem` and `_tls/key.pem`
   * in ARCHIVE_URL, so nodes without a volume share them).
   */
  TLS_SOURCE: z.enum(['files', 'env', 'archive']).default('files'),
  /** How often the certificate is read again and, when it changed, served to new handshakes; 0 = never. */
  TLS_RELOAD_INTERVAL: duration('1m'),
  /** Root directory holding one PGDATA directory per database. */
  DATA_DIR: z.string().default('dbs'),
  /** Pre-initialised PGDATA copied to create databases; default `DATA_DIR/_template`. */
  TEMPLATE_DIR: optionalString,
  /** postgres:// URL of an external catalog; unset = embedded PGlite catalog in `DATA_DIR/_catalog`. */
  CATALOG_URL: optionalString,
  /** Durable copies of databases: unset (local only), file:///dir, or s3://bucket/prefix. */
  ARCHIVE_URL: optionalString,
  /**
   * An open database written to is snapshotted to the archive this often; 0 = only on close.
   * Unset: 60s with DURABILITY=local; 0 when WAL is shipped (bases then follow BASE_BACKUP_WAL).
   */
  SNAPSHOT_INTERVAL: optionalString.transform((v, ctx) => {
    if (v === undefined) return undefined;
    try {
      return parseDurationMs(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  }),
  /** A base backup (snapshot) of an open database is taken after this much WAL since the last; 0 = off. */
  BASE_BACKUP_WAL: bytes('64MB'),
  /** Unshipped WAL the node keeps while the archive is unreachable; past it, writes are refused. 0 = no bound. */
  MAX_WAL_BACKLOG: bytes('1GB'),
  /** local | async | sync; default async with an archive, local without. */
  DURABILITY: z.enum(['local', 'async', 'sync', '']).optional(),
  /** WAL of an open database is shipped at least this often while it moves (async). */
  WAL_SHIP_INTERVAL: duration('1s'),
  /** Snapshot versions kept per database in the archive. */
  KEEP_VERSIONS: int(10, 1),
  /** Embedded catalog with an archive: its writer lease lapses when not renewed this long. */
  CATALOG_LEASE_TTL: duration('15s'),
  /** true: take the archive's embedded catalog over at once, without waiting for the old lease. */
  CATALOG_TAKEOVER: z.enum(['true', 'false', '']).optional(),
  /** With an archive: a closed database's local copy idle this long is dropped (fetched again on open). */
  LOCAL_EVICT_AFTER: duration('24h'),
  /** With an archive: local copies of closed databases are dropped, LRU first, past this; 0 = no cap. */
  LOCAL_DISK_MAX: bytes('0'),
  /** Largest uploaded tarball (uncompressed) accepted by upload. */
  MAX_UPLOAD_BYTES: bytes('100MB'),
  /** S3 endpoint for MinIO/Tigris/s3rver (path-style is then used); unset = AWS. */
  AWS_ENDPOINT_URL_S3: optionalString,
  AWS_ENDPOINT_URL: optionalString,
  AWS_REGION: optionalString,
  AWS_DEFAULT_REGION: optionalString,
  AWS_ACCESS_KEY_ID: optionalString,
  AWS_SECRET_ACCESS_KEY: optionalString,
  AWS_SESSION_TOKEN: optionalString,
  /** HTTPS port for serverless drivers (SQL over HTTP at /sql, WebSocket); 0 picks a free port. */
  HTTP_PORT: int(8443),
  /** Address the HTTPS front door binds. */
  HTTP_HOST: z.string().default('0.0.0.0'),
  /** require: HTTPS and wss with the Postgres listener's certificate; disable: plain HTTP, loopback HTTP_HOST only. */
  HTTP_TLS: z.enum(['require', 'disable']).default('require'),
  /** Largest SQL-over-HTTP response; a larger one is answered with 507. */
  MAX_HTTP_RESPONSE: bytes('10MB'),
  /** Time to receive a whole HTTP request (HTTP/1.1 and each HTTP/2 stream); then 408. */
  HTTP_REQUEST_TIMEOUT: duration('60s'),
  /** Local admin HTTP API port (db commands, /healthz, /metrics); 0 picks a free port. */
  ADMIN_PORT: int(5480),
  /** Address the admin HTTP API binds; keep it on loopback unless ADMIN_TOKEN is set. */
  ADMIN_HOST: z.string().default('127.0.0.1'),
  /** Bearer token required by the admin HTTP API over TCP (the Unix socket relies on file mode). */
  ADMIN_TOKEN: optionalString,
  /** Databases with their own series in /metrics: the N busiest (most units of work); 0 = none. */
  METRICS_TOP_DBS: int(20),
  /** Seconds (or 500ms/2m) a connection may take to authenticate. */
  LOGIN_TIMEOUT: duration('60s'),
  /** Failed logins from one address, or against one database, before further attempts are delayed. */
  AUTH_FAIL_THRESHOLD: int(5, 1),
  /** Failed logins are forgotten once this long passes without another. */
  AUTH_FAIL_WINDOW: duration('5m'),
  /** Delay of the first throttled login attempt; it doubles with each further failure. */
  AUTH_BASE_DELAY: duration('250ms'),
  /** Longest delay of one throttled login attempt; 0 turns login throttling off. */
  AUTH_MAX_DELAY: duration('10s'),
  /** Shortest password accepted when one is set; generated passwords are at least this long. */
  MIN_PASSWORD_LENGTH: z.coerce.number().int().min(1).max(1024).default(12),
  /** Largest client message accepted after authentication. */
  MAX_MESSAGE_SIZE: bytes('1GiB'),
  /** Client connections per node (TCP, WebSocket, forwarded), from accept; more get 53300. */
  MAX_CONNECTIONS: int(10_000, 1),
  /** Clients (active + queued) allowed per database; more get 53300. */
  MAX_CLIENTS_PER_DB: int(100, 1),
  /** How long a client may wait for its database before failing with 57014. */
  QUERY_WAIT_TIMEOUT: duration('120s'),
  /** transaction: clients share a database's session between transactions; session: one client holds it until it disconnects. */
  POOL_MODE: z.enum(['transaction', 'session']).default('transaction'),
  /** Named prepared statements kept per client (least recently used closed beyond). */
  MAX_PREPARED_STATEMENTS: int(200, 1),
  /** A statement running longer is interrupted (57014) by restarting its database's engine; 0 disables. */
  STATEMENT_TIMEOUT: duration('0'),
  /** A client idle inside a transaction for this long is terminated (25P03); 0 disables. */
  IDLE_IN_TRANSACTION_TIMEOUT: duration('60s'),
  /** A database without clients for this long is closed (its memory freed). */
  IDLE_TIMEOUT: duration('5m'),
  /** Ready-made copies of the template kept in DATA_DIR/_spare so creating a database is instant. */
  SPARE_DATABASES: int(2),
  /** Databases open at once; beyond it the least recently used idle one is closed. */
  MAX_OPEN_DATABASES: int(100, 1),
  /** Database workers kept prepared (PGlite loaded, Postgres not yet started) so an open is fast. */
  WARM_ENGINES: int(2),
  /** Postgres shared_buffers of each open database: resident memory per open database. */
  SHARED_BUFFERS: bytes('2MiB').refine((v) => v >= 128 * 1024, 'must be at least 128KiB'),
  /** Largest WASM heap one database may grow to (engine/heap-limit.ts); 0 = PGlite's own 2 GiB. */
  /** Bytes of tables, indexes and temporary files one database may hold (engine/size-quota.ts); 0 = no limit. */
  MAX_DATABASE_SIZE: bytes('0'),
  MAX_DATABASE_MEMORY: bytes('1GiB').refine(
    (v) => v <= 2 ** 31,
    'must be at most 2GiB (the WASM heap limit)',
  ),
  /** Extensions databases may create: `all`, `none`, or names (and `all`) separated by commas. */
  EXTENSIONS: z
    .string()
    .default('all')
    .transform((v, ctx) => {
      const names = [...new Set(v.split(',').map((n) => n.trim()))].filter((n) => n !== '' && n !== 'none');
      const bad = names.filter((n) => !/^[a-z0-9_-]+$/.test(n));
      if (bad.length > 0) ctx.addIssue({ code: 'custom', message: `not extension names: ${bad.join(', ')}` });
      return names;
    }),
  /** on: commits reach the disk before they are acknowledged (engine/durable-fs.ts); off: the kernel's page cache only. */
  FSYNC: z.enum(['on', 'off']).default('on'),
  /** Process memory (RSS) above which idle databases are closed before another opens; 0 = no limit. */
  MAX_MEMORY: bytes(String(Math.floor(memoryAvailable() * 0.8))),
  /** How long shutdown waits for running transactions before closing connections. */
  DRAIN_TIMEOUT: duration('30s'),
  /** Identifies this node in logs and locks; in cluster mode its unique name in the catalog. */
  NODE_ID: z.string().default(hostname()),
  /** `host:port` at which peers reach this node's internal listener; set = cluster mode. */
  CLUSTER_ADDRESS: optionalString,
  /** Port of the internal listener peers forward sessions to (cluster mode). */
  CLUSTER_PORT: int(5433),
  /** Shared secret peers authenticate each other with (HMAC-SHA256; at least 16 characters). */
  CLUSTER_SECRET: optionalString,
  /** A node whose heartbeat is older than this is dead: its databases may be claimed by others. */
  LEASE_TTL: duration('10s'),
  /**
   * Test and development runs only (refused with NODE_ENV=production): a loopback http:// URL of a
   * fault-injection harness whose actions the admin API and the dashboard offer (/v1/faults).
   */
  FAULT_CONTROL_URL: optionalString,
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Pretty logs for humans; default on when stdout is a terminal. */
  LOG_PRETTY: z.enum(['true', 'false', '']).optional(),
  NODE_ENV: z.string().default('development'),
});

export type Env = z.infer<typeof EnvSchema>;
