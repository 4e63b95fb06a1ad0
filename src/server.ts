import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { Registry } from 'prom-client';
import { connectionDefaults } from './admin/connection-info.js';
import { DatabaseManager } from './admin/service.js';
import { type Catalog, openCatalog } from './catalog/index.js';
import type { Config } from './config.js';
import { Archiving } from './databases/archiving.js';
import { DatabaseRegistry } from './databases/registry.js';
import { WalShipping } from './databases/wal-shipping.js';
import { postgresSettings } from './engine/engine.js';
import { EngineHost } from './engine/engine-host.js';
import { ScramLookup } from './gateway/auth.js';
import { AuthThrottle } from './gateway/auth-throttle.js';
import { CancelKeys } from './gateway/cancel.js';
import { GatewayListener } from './gateway/listener.js';
import { loadSecureContext } from './gateway/tls.js';
import { createAdminApp } from './http/app.js';
import { startFrontDoor } from './http/front-door.js';
import { startAdmin } from './http/server.js';
import { databasePath } from './ids.js';
import type { Logger } from './log.js';
import { acquireDataDirLock } from './pgdata/dir-lock.js';
import { TemplateSpares } from './pgdata/spares.js';
import { readPgDataIdentity } from './pgdata/tarball.js';
import { ensureTemplate } from './pgdata/template.js';
import { openArchive } from './storage/open-archive.js';
import { Snapshots } from './storage/snapshots.js';
import { WalObjects } from './storage/wal-objects.js';

/** A running node: the Postgres listener plus what it needs. Used by `serve` and by tests. */
export interface RunningServer {
  port: number;
  adminPort: number;
  /** The HTTPS front door (SQL over HTTP, WebSocket). */
  httpPort: number;
  catalog: Catalog;
  registry: DatabaseRegistry;
  manager: DatabaseManager;
  listener: GatewayListener;
  /** The database workers: their fsync counts (FSYNC), warm pool. */
  engines: EngineHost;
  /** Graceful: stop accepting, drain, close every database, release the data directory. */
  close(): Promise<void>;
  /** Makes a running (or coming) `close()` end its clients now instead of draining; databases still close. */
  endDrain(): void;
}

/**
 * What every way of running a node over a data directory needs, the server and the CLI's local
 * mode alike: the data-directory lock, the template, the catalog and the archive's versions.
 * `close()` releases them in reverse order.
 */
export interface NodeBase {
  catalog: Catalog;
  /** The archive's versions; undefined without ARCHIVE_URL. */
  snapshots: Snapshots | undefined;
  /** Shipped WAL in the archive; undefined without ARCHIVE_URL. */
  wal: WalObjects | undefined;
  describeArchive: string | undefined;
  close(): Promise<void>;
}

export async function openNodeBase(
  config: Config,
  logger: Logger,
  opts: { storageLogger?: Logger } = {},
): Promise<NodeBase> {
  await mkdir(config.dataDir, { recursive: true });
  const lock = await acquireDataDirLock(config.dataDir, config.nodeId);
  const cleanups: (() => Promise<void>)[] = [() => lock.release()];
  const close = async () => {
    for (const fn of cleanups.reverse())
      await fn().catch((err) => logger.error({ err }, 'shutdown step failed'));
  };
  try {
    await ensureTemplate(config.templateDir);
    const catalog = await openCatalog({
      url: config.catalogUrl,
      dir: path.join(config.dataDir, '_catalog'),
      templateDir: config.templateDir,
      onError: (err) => logger.error({ err }, 'catalog connection error'),
    });
    cleanups.push(() => catalog.close());
    const archive = await openArchive(config.archive.url, { s3: config.archive.s3 });
    if (archive) cleanups.push(() => archive.close());
    const wal = archive
      ? new WalObjects({ archive, catalog, logger: opts.storageLogger ?? logger.child({ mod: 'wal' }) })
      : undefined;
    const snapshots = archive
      ? new Snapshots({
          archive,
          catalog,
          workDir: path.join(config.dataDir, '.storage'),
          logger: opts.storageLogger ?? logger.child({ mod: 'storage' }),
          keepVersions: config.archive.keepVersions,
          expect: await readPgDataIdentity(config.templateDir),
          wal,
        })
      : undefined;
    return { catalog, snapshots, wal, describeArchive: archive?.describe(), close };
  } catch (err) {
    await close();
    throw err;
  }
}

export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
  const secureContext = await loadSecureContext(config, logger);
  const base = await openNodeBase(config, logger);
  const cleanups: (() => Promise<void>)[] = [() => base.close()];
  const cleanup = async () => {
    for (const fn of cleanups.reverse())
      await fn().catch((err) => logger.error({ err }, 'shutdown step failed'));
  };
  try {
    const catalog = base.catalog;
    const archiving = await openArchiving(config, base, logger);
    const engines = new EngineHost({
      warm: config.warmEngines,
      settings: postgresSettings(config.sharedBuffersBytes),
      fsync: config.fsync,
      extensions: config.extensions,
      logger,
    });
    await engines.start();
    cleanups.push(() => engines.close());
    const registry = new DatabaseRegistry({
      engines,
      dataDir: config.dataDir,
      maxClientsPerDb: config.maxClientsPerDb,
      queryWaitTimeoutMs: config.queryWaitTimeoutMs,
      idleTimeoutMs: config.idleTimeoutMs,
      maxOpenDatabases: config.maxOpenDatabases,
      maxMemoryBytes: config.maxMemoryBytes,
      logger,
      ...(archiving
        ? { materialize: archiving.archiving.materialize, afterClose: archiving.archiving.afterClose }
        : {}),
      ...(archiving?.shipping
        ? { onOpen: archiving.shipping.onOpen, beforeClose: archiving.shipping.beforeClose }
        : {}),
    });
    cleanups.push(() => registry.closeAll());
    archiving?.archiving.start(registry);
    if (archiving) cleanups.push(() => archiving.archiving.stop());
    archiving?.shipping?.start(registry);
    if (archiving?.shipping) cleanups.push(() => archiving.shipping?.stop() ?? Promise.resolve());
    const spares = new TemplateSpares(
      config.templateDir,
      path.join(config.dataDir, '_spare'),
      config.spareDatabases,
      logger,
    );
    await spares.start();
    cleanups.push(() => spares.idle());
    const manager = new DatabaseManager({
      catalog,
      registry,
      spares,
      ...(archiving ? { snapshots: archiving.snapshots, wal: base.wal } : {}),
      dataDir: config.dataDir,
      templateDir: config.templateDir,
      minPasswordLength: config.minPasswordLength,
    });
    const authThrottle = new AuthThrottle({
      threshold: config.auth.failThreshold,
      windowMs: config.auth.failWindowMs,
      baseDelayMs: config.auth.baseDelayMs,
      maxDelayMs: config.auth.maxDelayMs,
      queueMs: config.loginTimeoutMs,
    });
    const scram = new ScramLookup(catalog);
    const cancelKeys = new CancelKeys();
    const listener = new GatewayListener(
      {
        tlsMode: config.tls.mode,
        secureContext: () => secureContext,
        wildcardDomain: config.wildcardDomain,
        loginTimeoutMs: config.loginTimeoutMs,
        maxMessageSize: config.maxMessageSize,
        poolMode: config.poolMode,
        maxPreparedStatements: config.maxPreparedStatements,
        idleInTransactionTimeoutMs: config.idleInTransactionTimeoutMs,
        statementTimeoutMs: config.statementTimeoutMs,
        catalog,
        scram,
        throttle: authThrottle,
        registry,
        cancelKeys,
        logger,
      },
      logger,
    );
    const port = await listener.listen(config.port, config.host);
    cleanups.push(() => listener.close(config.drainTimeoutMs));
    const frontDoor = await startFrontDoor({
      host: config.http.host,
      port: config.http.port,
      tls: config.http.tls === 'disable' ? undefined : await readCertificate(config, logger),
      sql: {
        catalog,
        registry,
        poolMode: config.poolMode,
        maxPreparedStatements: config.maxPreparedStatements,
        idleInTransactionTimeoutMs: config.idleInTransactionTimeoutMs,
        statementTimeoutMs: config.statementTimeoutMs,
        maxMessageSize: config.maxMessageSize,
        wildcardDomain: config.wildcardDomain,
        scram,
        throttle: authThrottle,
        maxResponseBytes: config.http.maxResponseBytes,
        maxRequestBytes: MAX_HTTP_REQUEST_BYTES,
        logger,
      },
      // WebSocket clients: TLS is the wss layer, so no SSLRequest is expected inside.
      connection: { ...listener.deps, tlsMode: 'disable' },
      logger,
    });
    cleanups.push(() => frontDoor.close(config.drainTimeoutMs));
    if (!config.admin.token && !isLoopback(config.admin.host)) {
      logger.warn({ host: config.admin.host }, 'admin API listens beyond loopback without ADMIN_TOKEN');
    }
    const admin = await startAdmin({
      app: createAdminApp({
        manager,
        registry,
        listener,
        authThrottle,
        logger,
        metrics: new Registry(),
        token: config.admin.token,
        maxUploadBytes: config.archive.maxUploadBytes,
        connection: connectionDefaults(config, port),
      }),
      host: config.admin.host,
      port: config.admin.port,
      socketPath: config.admin.socketPath,
      logger,
    });
    // Cleanups run in reverse: the admin API stops first.
    cleanups.push(() => admin.close());
    logger.info(
      { port, adminPort: admin.port, host: config.host, dataDir: config.dataDir, tls: config.tls.mode },
      'listening',
    );
    const endDrain = () => {
      listener.endDrain();
      frontDoor.endDrain();
    };
    return {
      port,
      adminPort: admin.port,
      httpPort: frontDoor.port,
      catalog,
      registry,
      manager,
      listener,
      engines,
      close: cleanup,
      endDrain,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** Largest SQL-over-HTTP request body; a larger one is refused (413) before it is parsed. */
const MAX_HTTP_REQUEST_BYTES = 1024 * 1024;

/** The Postgres listener's certificate for HTTPS (generated in development when missing). */
async function readCertificate(config: Config, logger: Logger): Promise<{ cert: Buffer; key: Buffer }> {
  if (config.tls.mode === 'disable')
    await loadSecureContext({ ...config, tls: { ...config.tls, mode: 'require' } }, logger);
  const [cert, key] = await Promise.all([readFile(config.tls.certPath), readFile(config.tls.keyPath)]);
  return { cert, key };
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

/** Write-back of databases to the archive (ARCHIVE_URL); undefined when local only. */
async function openArchiving(config: Config, base: NodeBase, logger: Logger) {
  const snapshots = base.snapshots;
  if (!snapshots) return undefined;
  await snapshots.cleanup(config.dataDir);
  const dataDirOf = (id: string) => databasePath(config.dataDir, id);
  const archiving = new Archiving({
    snapshots,
    dataDirOf,
    intervalMs: config.archive.snapshotIntervalMs,
    logger,
    wal: base.wal,
  });
  const durability = config.archive.durability;
  const shipping =
    base.wal && durability !== 'local'
      ? new WalShipping({
          wal: base.wal,
          mode: durability,
          intervalMs: config.archive.walShipIntervalMs,
          waitTimeoutMs: config.queryWaitTimeoutMs,
          dataDirOf,
          logger,
        })
      : undefined;
  logger.info({ archive: base.describeArchive, durability }, 'archive enabled');
  return { snapshots, archiving, shipping };
}
