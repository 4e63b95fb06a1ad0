import path from 'node:path';
import { type Env, EnvSchema } from './config-schema.js';

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
    /** TLS_SOURCE: files (certPath/keyPath), env (certPem/keyPem) or archive (`_tls/` in ARCHIVE_URL). */
    source: 'files' | 'env' | 'archive';
    certPath: string;
    keyPath: string;
    /** TLS_SOURCE=env: the PEM text of TLS_CERT and TLS_KEY. */
    certPem: string | undefined;
    keyPem: string | undefined;
    /** Generate a dev CA + cert when the files are missing (never in production). */
    generateIfMissing: boolean;
    /** TLS_RELOAD_INTERVAL in ms; 0 = read once at start. */
    reloadIntervalMs: number;
  }>;
  dataDir: string;
  templateDir: string;
  catalogUrl: string | undefined;
  archive: Readonly<{
    url: string | undefined;
    s3: Readonly<S3Settings>;
    snapshotIntervalMs: number;
    /** BASE_BACKUP_WAL in bytes (0 = bases by time only). */
    baseBackupWalBytes: number;
    /** MAX_WAL_BACKLOG in bytes (0 = unbounded). */
    maxWalBacklogBytes: number;
    keepVersions: number;
    maxUploadBytes: number;
    /** local: no WAL shipping; async: every WAL_SHIP_INTERVAL; sync: before each commit is acknowledged. */
    durability: 'local' | 'async' | 'sync';
    walShipIntervalMs: number;
    /** Embedded catalog: writer lease TTL (CATALOG_LEASE_TTL) and immediate takeover (CATALOG_TAKEOVER). */
    catalogLeaseTtlMs: number;
    catalogTakeover: boolean;
    /** Local copies as a cache: idle time (LOCAL_EVICT_AFTER) and disk cap (LOCAL_DISK_MAX, 0 = none). */
    localEvictAfterMs: number;
    localDiskMaxBytes: number;
  }>;
  admin: Readonly<{ port: number; host: string; token: string | undefined; socketPath: string }>;
  /** The HTTPS front door (HTTP_*, MAX_HTTP_RESPONSE). */
  http: Readonly<{
    port: number;
    host: string;
    tls: 'require' | 'disable';
    maxResponseBytes: number;
    requestTimeoutMs: number;
  }>;
  loginTimeoutMs: number;
  /** Login throttling (AUTH_*): see `gateway/auth-throttle.ts`. */
  auth: Readonly<{ failThreshold: number; failWindowMs: number; baseDelayMs: number; maxDelayMs: number }>;
  minPasswordLength: number;
  /** METRICS_TOP_DBS: how many of the busiest databases get per-database metric series. */
  metricsTopDatabases: number;
  maxMessageSize: number;
  maxConnections: number;
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
  /** MAX_DATABASE_MEMORY: the WASM heap one database may grow to; 0 = PGlite's 2 GiB. */
  maxDatabaseMemoryBytes: number;
  /** MAX_DATABASE_SIZE: bytes of base/ (tables, indexes, temp files) per database; 0 = no limit. */
  maxDatabaseSizeBytes: number;
  /** EXTENSIONS: names of the extensions databases may create; `all` stands for every default one. */
  extensions: readonly string[];
  /** FSYNC=on: WAL flushed before a commit is acknowledged, data files before checkpoints move on. */
  fsync: boolean;
  spareDatabases: number;
  maxMemoryBytes: number;
  nodeId: string;
  /** Cluster mode (CLUSTER_*, LEASE_TTL); undefined when CLUSTER_ADDRESS is unset. */
  cluster: ClusterSettings | undefined;
  /** FAULT_CONTROL_URL: a fault harness on loopback (never in production); undefined when unset. */
  faultControlUrl: string | undefined;
  log: Readonly<{ level: string; pretty: boolean }>;
  production: boolean;
}>;

export type ClusterSettings = Readonly<{
  /** `host:port` peers dial (CLUSTER_ADDRESS). */
  address: string;
  /** Internal listener port (CLUSTER_PORT, default 5433); it binds HOST. */
  port: number;
  secret: string;
  /** LEASE_TTL, default 10 s. */
  leaseTtlMs: number;
}>;

export class ConfigError extends Error {}

/** Cluster mode needs a shared catalog and archive, a named node and a secret: refuse otherwise. */
function clusterSettings(e: Env, present: Record<string, unknown>): ClusterSettings | undefined {
  if (!e.CLUSTER_ADDRESS) return undefined;
  const problems: string[] = [];
  if (!e.CATALOG_URL)
    problems.push('CATALOG_URL: cluster mode (CLUSTER_ADDRESS) needs the shared PostgreSQL catalog');
  if (!e.ARCHIVE_URL) problems.push('ARCHIVE_URL: cluster mode (CLUSTER_ADDRESS) needs the shared archive');
  if (e.DURABILITY === 'local')
    problems.push('DURABILITY: local keeps commits on one node; cluster mode needs async or sync');
  if (present.NODE_ID === undefined) problems.push('NODE_ID: cluster mode needs a unique NODE_ID per node');
  if (!e.CLUSTER_SECRET || e.CLUSTER_SECRET.length < 16)
    problems.push('CLUSTER_SECRET: cluster mode needs a shared secret of at least 16 characters');
  if (!/^[^\s:]+:\d{1,5}$/.test(e.CLUSTER_ADDRESS))
    problems.push(`CLUSTER_ADDRESS: expected host:port, got ${e.CLUSTER_ADDRESS}`);
  if (e.LEASE_TTL < 500) problems.push('LEASE_TTL: must be at least 500ms');
  if (problems.length > 0) throw new ConfigError(`invalid configuration:\n  ${problems.join('\n  ')}`);
  return Object.freeze({
    address: e.CLUSTER_ADDRESS,
    port: e.CLUSTER_PORT,
    secret: e.CLUSTER_SECRET as string,
    leaseTtlMs: e.LEASE_TTL,
  });
}

/** TLS_* : where the certificate comes from, checked for what each source needs. */
function tlsSettings(e: Env, production: boolean): Config['tls'] {
  const refuse = (why: string): never => {
    throw new ConfigError(`invalid configuration:\n  ${why}`);
  };
  const files = e.TLS_SOURCE === 'files';
  if (e.TLS_SOURCE === 'env' && e.TLS_MODE !== 'disable') {
    if (!e.TLS_CERT?.includes('-----BEGIN') || !e.TLS_KEY?.includes('-----BEGIN'))
      refuse('TLS_SOURCE=env: TLS_CERT and TLS_KEY must hold the PEM text of the certificate and key');
  }
  if (e.TLS_SOURCE === 'archive' && !e.ARCHIVE_URL)
    refuse('TLS_SOURCE=archive: reads _tls/cert.pem and _tls/key.pem from ARCHIVE_URL, which is unset');
  if (e.TLS_SOURCE === 'archive' && (e.TLS_CERT || e.TLS_KEY))
    refuse('TLS_SOURCE=archive: TLS_CERT and TLS_KEY are not used; unset them');
  return Object.freeze({
    mode: e.TLS_MODE,
    source: e.TLS_SOURCE,
    dir: path.resolve(e.TLS_DIR),
    certPath: path.resolve((files && e.TLS_CERT) || path.join(e.TLS_DIR, 'cert.pem')),
    keyPath: path.resolve((files && e.TLS_KEY) || path.join(e.TLS_DIR, 'key.pem')),
    certPem: e.TLS_SOURCE === 'env' ? e.TLS_CERT : undefined,
    keyPem: e.TLS_SOURCE === 'env' ? e.TLS_KEY : undefined,
    generateIfMissing: files && !production && !e.TLS_CERT && !e.TLS_KEY,
    reloadIntervalMs: e.TLS_RELOAD_INTERVAL,
  });
}

/** A fault harness is for test runs: http:// on a loopback address, never in production. */
function faultControlUrl(value: string | undefined, production: boolean): string | undefined {
  if (value === undefined) return undefined;
  const refuse = (why: string): never => {
    throw new ConfigError(`invalid configuration:\n  FAULT_CONTROL_URL: ${why}`);
  };
  if (production)
    refuse('fault injection is for test and development runs; unset it with NODE_ENV=production');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return refuse(`not a URL: ${value}`);
  }
  if (url.protocol !== 'http:' || !isLoopbackHost(url.hostname.replace(/^\[(.*)\]$/, '$1')))
    refuse(`expected an http:// URL on a loopback address (127.0.0.1, ::1, localhost), got ${value}`);
  if (url.username || url.password || url.search || url.hash)
    refuse('expected a plain http://host:port[/path] URL, without credentials, query or fragment');
  return url.href.replace(/\/+$/, '');
}

/** PGlite's heap at start (128 MiB) holds Postgres with small shared_buffers; more is added to it. */
const DATABASE_MEMORY_FLOOR = 128 * 1024 * 1024;

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
  if (e.MAX_DATABASE_MEMORY > 0 && e.MAX_DATABASE_MEMORY < e.SHARED_BUFFERS + DATABASE_MEMORY_FLOOR) {
    throw new ConfigError(
      'invalid configuration:\n  MAX_DATABASE_MEMORY: must be 0 or at least SHARED_BUFFERS + 128MiB (what a database needs to open)',
    );
  }
  const dataDir = path.resolve(e.DATA_DIR);
  const production = e.NODE_ENV === 'production';
  const config: Config = {
    port: e.PORT,
    portSet: present.PORT !== undefined,
    host: e.HOST ?? (production ? '0.0.0.0' : '127.0.0.1'),
    wildcardDomain: e.WILDCARD_DOMAIN,
    tls: tlsSettings(e, production),
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
      snapshotIntervalMs:
        e.SNAPSHOT_INTERVAL ??
        ((e.DURABILITY || (e.ARCHIVE_URL ? 'async' : 'local')) === 'local' ? 60_000 : 0),
      baseBackupWalBytes: e.BASE_BACKUP_WAL,
      maxWalBacklogBytes: e.MAX_WAL_BACKLOG,
      keepVersions: e.KEEP_VERSIONS,
      maxUploadBytes: e.MAX_UPLOAD_BYTES,
      durability: e.DURABILITY || (e.ARCHIVE_URL ? 'async' : 'local'),
      walShipIntervalMs: Math.max(e.WAL_SHIP_INTERVAL, 10),
      catalogLeaseTtlMs: Math.max(e.CATALOG_LEASE_TTL, 300),
      catalogTakeover: e.CATALOG_TAKEOVER === 'true',
      localEvictAfterMs: e.LOCAL_EVICT_AFTER,
      localDiskMaxBytes: e.LOCAL_DISK_MAX,
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
      requestTimeoutMs: e.HTTP_REQUEST_TIMEOUT,
    }),
    loginTimeoutMs: e.LOGIN_TIMEOUT,
    auth: Object.freeze({
      failThreshold: e.AUTH_FAIL_THRESHOLD,
      failWindowMs: e.AUTH_FAIL_WINDOW,
      baseDelayMs: e.AUTH_BASE_DELAY,
      maxDelayMs: e.AUTH_MAX_DELAY,
    }),
    minPasswordLength: e.MIN_PASSWORD_LENGTH,
    metricsTopDatabases: e.METRICS_TOP_DBS,
    maxMessageSize: e.MAX_MESSAGE_SIZE,
    maxConnections: e.MAX_CONNECTIONS,
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
    maxDatabaseMemoryBytes: e.MAX_DATABASE_MEMORY,
    maxDatabaseSizeBytes: e.MAX_DATABASE_SIZE,
    extensions: e.EXTENSIONS,
    fsync: e.FSYNC === 'on',
    spareDatabases: e.SPARE_DATABASES,
    maxMemoryBytes: e.MAX_MEMORY,
    nodeId: e.NODE_ID,
    cluster: clusterSettings(e, present),
    faultControlUrl: faultControlUrl(e.FAULT_CONTROL_URL, production),
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
