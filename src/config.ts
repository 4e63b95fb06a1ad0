import { hostname, totalmem } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { parseBytes, parseDurationMs } from './units.js';

/** S3 settings; every field falls back to the AWS SDK's own environment and config-file lookup. */
export interface S3Settings {
  /** `AWS_ENDPOINT_URL_S3` (or `AWS_ENDPOINT_URL`): MinIO, Tigris, s3rver. Unset = AWS. */
  endpoint?: string | undefined;
  /** `AWS_REGION`; default `us-east-1` (Tigris wants `auto`, which it also accepts as us-east-1). */
  region?: string | undefined;
  /** `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`); unset = SDK default chain. */
  accessKeyId?: string | undefined;
  secretAccessKey?: string | undefined;
  sessionToken?: string | undefined;
  /** Path-style URLs (`endpoint/bucket/key`). Default: true when `endpoint` is set (MinIO needs it). */
  forcePathStyle?: boolean | undefined;
  /** Whole-operation retries on 5xx and network errors, on top of the SDK's own. Default 3. */
  retries?: number | undefined;
  /** First retry delay; doubles each time, with jitter, capped at 5 s. Default 200 ms. */
  retryBaseMs?: number | undefined;
  /** SDK attempts per request (its own retry). Default 3. */
  maxAttempts?: number | undefined;
  /** Multipart part size for uploads. Default 8 MiB (S3's minimum is 5 MiB). */
  partSize?: number | undefined;
  /** Parts uploaded in parallel. Default 4. */
  queueSize?: number | undefined;
  /** Socket idle timeout per request. Default 60 s. */
  requestTimeoutMs?: number | undefined;
}

/**
 * The only place that reads process.env. Defaults describe the embedded single node:
 * local `./dbs`, embedded catalog, dev certificates generated into `./tls`.
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

const EnvSchema = z.object({
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
  /** PEM certificate path; when unset, `TLS_DIR/cert.pem` (generated in dev if missing). */
  TLS_CERT: optionalString,
  /** PEM private key path; when unset, `TLS_DIR/key.pem` (generated in dev if missing). */
  TLS_KEY: optionalString,
  /** Root directory holding one PGDATA directory per database. */
  DATA_DIR: z.string().default('dbs'),
  /** Pre-initialised PGDATA copied to create databases; default `DATA_DIR/_template`. */
  TEMPLATE_DIR: optionalString,
  /** postgres:// URL of an external catalog; unset = embedded PGlite catalog in `DATA_DIR/_catalog`. */
  CATALOG_URL: optionalString,
  /** Durable copies of databases: unset (local only), file:///dir, or s3://bucket/prefix. */
  ARCHIVE_URL: optionalString,
  /** An open database written to is snapshotted to the archive this often; 0 = only on close. */
  SNAPSHOT_INTERVAL: duration('60s'),
  /** local | async | sync; default async with an archive, local without. */
  DURABILITY: z.enum(['local', 'async', 'sync', '']).optional(),
  /** WAL of an open database is shipped at least this often while it moves (async). */
  WAL_SHIP_INTERVAL: duration('1s'),
  /** Snapshot versions kept per database in the archive. */
  KEEP_VERSIONS: int(10, 1),
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
  /** Local admin HTTP API port (db commands, /healthz, /metrics); 0 picks a free port. */
  ADMIN_PORT: int(5480),
  /** Address the admin HTTP API binds; keep it on loopback unless ADMIN_TOKEN is set. */
  ADMIN_HOST: z.string().default('127.0.0.1'),
  /** Bearer token required by the admin HTTP API over TCP (the Unix socket relies on file mode). */
  ADMIN_TOKEN: optionalString,
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
  /** Identifies this node in logs and locks. */
  NODE_ID: z.string().default(hostname()),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Pretty logs for humans; default on when stdout is a terminal. */
  LOG_PRETTY: z.enum(['true', 'false', '']).optional(),
  NODE_ENV: z.string().default('development'),
});

/** Every environment variable the gateway reads (the README's configuration table lists exactly these). */
export const ENV_VARIABLES: readonly string[] = Object.keys(EnvSchema.shape);

export type Config = Readonly<{
  port: number;
  /** Whether PORT was set (not the default): the CLI without a server trusts only a set PORT. */
  portSet: boolean;
  host: string;
  wildcardDomain: string;
  tls: Readonly<{
    mode: 'require' | 'prefer' | 'disable';
    dir: string;
    certPath: string;
    keyPath: string;
    /** Generate a dev CA + cert when the files are missing (never in production). */
    generateIfMissing: boolean;
  }>;
  dataDir: string;
  templateDir: string;
  catalogUrl: string | undefined;
  archive: Readonly<{
    url: string | undefined;
    s3: Readonly<S3Settings>;
    snapshotIntervalMs: number;
    keepVersions: number;
    maxUploadBytes: number;
    /** local: no WAL shipping; async: every WAL_SHIP_INTERVAL; sync: before each commit is acknowledged. */
    durability: 'local' | 'async' | 'sync';
    walShipIntervalMs: number;
  }>;
  admin: Readonly<{ port: number; host: string; token: string | undefined; socketPath: string }>;
  /** The HTTPS front door (HTTP_*, MAX_HTTP_RESPONSE). */
  http: Readonly<{ port: number; host: string; tls: 'require' | 'disable'; maxResponseBytes: number }>;
  loginTimeoutMs: number;
  /** Login throttling (AUTH_*): see `gateway/auth-throttle.ts`. */
  auth: Readonly<{ failThreshold: number; failWindowMs: number; baseDelayMs: number; maxDelayMs: number }>;
  minPasswordLength: number;
  maxMessageSize: number;
  maxClientsPerDb: number;
  queryWaitTimeoutMs: number;
  poolMode: 'transaction' | 'session';
  maxPreparedStatements: number;
  idleInTransactionTimeoutMs: number;
  statementTimeoutMs: number;
  drainTimeoutMs: number;
  idleTimeoutMs: number;
  maxOpenDatabases: number;
  warmEngines: number;
  sharedBuffersBytes: number;
  /** EXTENSIONS: names of the extensions databases may create; `all` stands for every default one. */
  extensions: readonly string[];
  /** FSYNC=on: WAL flushed before a commit is acknowledged, data files before checkpoints move on. */
  fsync: boolean;
  spareDatabases: number;
  maxMemoryBytes: number;
  nodeId: string;
  log: Readonly<{ level: string; pretty: boolean }>;
  production: boolean;
}>;

export class ConfigError extends Error {}

export function loadConfig(
  env: Record<string, string | undefined> = process.env,
  isTty = Boolean(process.stdout.isTTY),
): Config {
  // An empty variable (PORT=) means "unset": fall back to the default rather than 0 or "".
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = EnvSchema.safeParse(present);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  if (e.HTTP_TLS === 'disable' && !isLoopbackHost(e.HTTP_HOST)) {
    throw new ConfigError(
      `invalid configuration:\n  HTTP_TLS: disable is allowed only with a loopback HTTP_HOST (got ${e.HTTP_HOST})`,
    );
  }
  if ((e.DURABILITY === 'async' || e.DURABILITY === 'sync') && !e.ARCHIVE_URL) {
    throw new ConfigError(
      `invalid configuration:\n  DURABILITY: ${e.DURABILITY} ships WAL to ARCHIVE_URL, which is unset`,
    );
  }
  const dataDir = path.resolve(e.DATA_DIR);
  const production = e.NODE_ENV === 'production';
  const config: Config = {
    port: e.PORT,
    portSet: present.PORT !== undefined,
    host: e.HOST ?? (production ? '0.0.0.0' : '127.0.0.1'),
    wildcardDomain: e.WILDCARD_DOMAIN,
    tls: Object.freeze({
      mode: e.TLS_MODE,
      dir: path.resolve(e.TLS_DIR),
      certPath: path.resolve(e.TLS_CERT ?? path.join(e.TLS_DIR, 'cert.pem')),
      keyPath: path.resolve(e.TLS_KEY ?? path.join(e.TLS_DIR, 'key.pem')),
      generateIfMissing: !production && !e.TLS_CERT && !e.TLS_KEY,
    }),
    dataDir,
    templateDir: path.resolve(e.TEMPLATE_DIR ?? path.join(dataDir, '_template')),
    catalogUrl: e.CATALOG_URL,
    archive: Object.freeze({
      url: e.ARCHIVE_URL,
      s3: Object.freeze({
        endpoint: e.AWS_ENDPOINT_URL_S3 ?? e.AWS_ENDPOINT_URL,
        region: e.AWS_REGION ?? e.AWS_DEFAULT_REGION ?? 'us-east-1',
        accessKeyId: e.AWS_ACCESS_KEY_ID,
        secretAccessKey: e.AWS_SECRET_ACCESS_KEY,
        sessionToken: e.AWS_SESSION_TOKEN,
      }),
      snapshotIntervalMs: e.SNAPSHOT_INTERVAL,
      keepVersions: e.KEEP_VERSIONS,
      maxUploadBytes: e.MAX_UPLOAD_BYTES,
      durability: e.DURABILITY || (e.ARCHIVE_URL ? 'async' : 'local'),
      walShipIntervalMs: Math.max(e.WAL_SHIP_INTERVAL, 10),
    }),
    admin: Object.freeze({
      port: e.ADMIN_PORT,
      host: e.ADMIN_HOST,
      token: e.ADMIN_TOKEN,
      socketPath: path.join(dataDir, 'admin.sock'),
    }),
    http: Object.freeze({
      port: e.HTTP_PORT,
      host: e.HTTP_HOST,
      tls: e.HTTP_TLS,
      maxResponseBytes: e.MAX_HTTP_RESPONSE,
    }),
    loginTimeoutMs: e.LOGIN_TIMEOUT,
    auth: Object.freeze({
      failThreshold: e.AUTH_FAIL_THRESHOLD,
      failWindowMs: e.AUTH_FAIL_WINDOW,
      baseDelayMs: e.AUTH_BASE_DELAY,
      maxDelayMs: e.AUTH_MAX_DELAY,
    }),
    minPasswordLength: e.MIN_PASSWORD_LENGTH,
    maxMessageSize: e.MAX_MESSAGE_SIZE,
    maxClientsPerDb: e.MAX_CLIENTS_PER_DB,
    queryWaitTimeoutMs: e.QUERY_WAIT_TIMEOUT,
    poolMode: e.POOL_MODE,
    maxPreparedStatements: e.MAX_PREPARED_STATEMENTS,
    idleInTransactionTimeoutMs: e.IDLE_IN_TRANSACTION_TIMEOUT,
    statementTimeoutMs: e.STATEMENT_TIMEOUT,
    drainTimeoutMs: e.DRAIN_TIMEOUT,
    idleTimeoutMs: e.IDLE_TIMEOUT,
    maxOpenDatabases: e.MAX_OPEN_DATABASES,
    warmEngines: e.WARM_ENGINES,
    sharedBuffersBytes: e.SHARED_BUFFERS,
    extensions: e.EXTENSIONS,
    fsync: e.FSYNC === 'on',
    spareDatabases: e.SPARE_DATABASES,
    maxMemoryBytes: e.MAX_MEMORY,
    nodeId: e.NODE_ID,
    log: Object.freeze({
      level: e.LOG_LEVEL,
      pretty:
        e.LOG_PRETTY === undefined || e.LOG_PRETTY === '' ? isTty && !production : e.LOG_PRETTY === 'true',
    }),
    production,
  };
  return Object.freeze(config);
}

/** 127.0.0.0/8, ::1 and localhost: addresses no other machine can reach. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
