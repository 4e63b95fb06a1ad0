import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { Registry } from 'prom-client';
import { type Catalog, openCatalog } from './catalog/index.js';
import { connectionDefaults } from './cli/connection-info.js';
import type { Config } from './config.js';
import { Archiving } from './databases/archiving.js';
import { acquireDataDirLock } from './databases/dir-lock.js';
import { postgresSettings } from './databases/engine.js';
import { EngineHost } from './databases/engine-host.js';
import { DatabaseManager } from './databases/manager.js';
import { DatabaseRegistry } from './databases/registry.js';
import { TemplateSpares } from './databases/spares.js';
import { ensureTemplate } from './databases/template.js';
import { ScramLookup } from './gateway/auth.js';
import { AuthThrottle } from './gateway/auth-throttle.js';
import { CancelKeys } from './gateway/cancel.js';
import { GatewayListener } from './gateway/listener.js';
import { databasePath } from './gateway/routing.js';
import { loadSecureContext } from './gateway/tls.js';
import { createAdminApp } from './http/app.js';
import { startAdmin } from './http/server.js';
import type { Logger } from './log.js';
import { openArchive } from './storage/archive.js';
import { Snapshots } from './storage/snapshots.js';
import { readPgDataIdentity } from './storage/tarball.js';

/** A running node: the Postgres listener plus what it needs. Used by `serve` and by tests. */
export interface RunningServer {
  port: number;
  adminPort: number;
  catalog: Catalog;
  registry: DatabaseRegistry;
  manager: DatabaseManager;
  listener: GatewayListener;
  /** Graceful: stop accepting, drain, close every database, release the data directory. */
  close(): Promise<void>;
  /** Makes a running (or coming) `close()` end its clients now instead of draining; databases still close. */
  endDrain(): void;
}

export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
  await mkdir(config.dataDir, { recursive: true });
  const lock = await acquireDataDirLock(config.dataDir, config.nodeId);
  const cleanups: (() => Promise<void>)[] = [() => lock.release()];
  const cleanup = async () => {
    for (const fn of cleanups.reverse())
      await fn().catch((err) => logger.error({ err }, 'shutdown step failed'));
  };
  try {
    const secureContext = await loadSecureContext(config, logger);
    await ensureTemplate(config.templateDir);
    const catalog = await openCatalog({
      url: config.catalogUrl,
      dir: path.join(config.dataDir, '_catalog'),
      templateDir: config.templateDir,
      onError: (err) => logger.error({ err }, 'catalog connection error'),
    });
    cleanups.push(() => catalog.close());
    const archiving = await openArchiving(config, catalog, logger);
    if (archiving) cleanups.push(() => archiving.close());
    const engines = new EngineHost({
      warm: config.warmEngines,
      settings: postgresSettings(config.sharedBuffersBytes),
      logger,
    });
    engines.start();
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
    });
    cleanups.push(() => registry.closeAll());
    archiving?.archiving.start(registry);
    if (archiving) cleanups.push(() => archiving.archiving.stop());
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
      ...(archiving ? { snapshots: archiving.snapshots } : {}),
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
        scram: new ScramLookup(catalog),
        throttle: authThrottle,
        registry,
        cancelKeys: new CancelKeys(),
        logger,
      },
      logger,
    );
    const port = await listener.listen(config.port, config.host);
    cleanups.push(() => listener.close(config.drainTimeoutMs));
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
    const endDrain = () => listener.endDrain();
    return { port, adminPort: admin.port, catalog, registry, manager, listener, close: cleanup, endDrain };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

/** The archive (ARCHIVE_URL) and write-back of databases to it; undefined when local only. */
async function openArchiving(config: Config, catalog: Catalog, logger: Logger) {
  const archive = await openArchive(config.archive.url, { s3: config.archive.s3 });
  if (!archive) return undefined;
  const snapshots = new Snapshots({
    archive,
    catalog,
    workDir: path.join(config.dataDir, '.storage'),
    logger: logger.child({ mod: 'storage' }),
    keepVersions: config.archive.keepVersions,
    expect: await readPgDataIdentity(config.templateDir),
  });
  await snapshots.cleanup(config.dataDir);
  const archiving = new Archiving({
    snapshots,
    dataDirOf: (id) => databasePath(config.dataDir, id),
    intervalMs: config.archive.snapshotIntervalMs,
    logger,
  });
  logger.info({ archive: archive.describe() }, 'archive enabled');
  return { snapshots, archiving, close: () => archive.close() };
}
