import path from 'node:path';
import { Registry } from 'prom-client';
import { connectionDefaults } from './admin/connection-info.js';
import { DatabaseManager } from './admin/service.js';
import { TemplateManager } from './admin/templates.js';
import type { Catalog } from './catalog/index.js';
import { Cluster } from './cluster/cluster.js';
import type { Config } from './config.js';
import { NodeActivity } from './databases/activity.js';
import { LocalCache } from './databases/local-cache.js';
import { DatabaseRegistry } from './databases/registry.js';
import { postgresSettings } from './engine/engine.js';
import { EngineHost } from './engine/engine-host.js';
import { ScramLookup } from './gateway/auth.js';
import { AuthThrottle } from './gateway/auth-throttle.js';
import { CancelKeys } from './gateway/cancel.js';
import { ConnectionSlots } from './gateway/connection-slots.js';
import { GatewayListener } from './gateway/listener.js';
import { Certificates } from './gateway/tls.js';
import { createAdminApp } from './http/app.js';
import { FaultControl } from './http/fault-control.js';
import { startFrontDoor } from './http/front-door.js';
import { startAdmin } from './http/server.js';
import { databasePath } from './ids.js';
import type { Logger } from './log.js';
import { openArchiving, openNodeBase } from './node-base.js';
import { TemplateSpares } from './pgdata/spares.js';

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
  /** Cluster mode (CLUSTER_ADDRESS); undefined on a single node. */
  cluster: Cluster | undefined;
  /** Graceful: stop accepting, drain, close every database, release the data directory. */
  close(): Promise<void>;
  /** Makes a running (or coming) `close()` end its clients now instead of draining; databases still close. */
  endDrain(): void;
}

export interface ServerHooks {
  /**
   * This node lost the right to write to the archive (another node took the embedded catalog's
   * lease). `serve` exits at once: a graceful close would ship WAL and run retention.
   */
  onFenced?: (reason: string) => void;
}

export async function startServer(
  config: Config,
  logger: Logger,
  hooks: ServerHooks = {},
): Promise<RunningServer> {
  if (config.tls.mode === 'disable')
    logger.warn('TLS_MODE=disable: passwords and data cross the network in plaintext');
  // Read again every TLS_RELOAD_INTERVAL: a renewed certificate needs no restart.
  const certificates =
    config.tls.mode !== 'disable' || config.http.tls !== 'disable'
      ? await Certificates.open(config, logger)
      : undefined;
  // Cluster mode: built first because the archive writers record through its fence.
  let registryRef: DatabaseRegistry | undefined;
  const cluster =
    config.cluster && config.catalogUrl
      ? new Cluster({
          settings: config.cluster,
          nodeId: config.nodeId,
          catalogUrl: config.catalogUrl,
          logger,
          openDatabases: () => registryRef?.openCount ?? 0,
          closeDatabase: (id) => registryRef?.close(id) ?? Promise.resolve(),
          dataDirOf: (id) => databasePath(config.dataDir, id),
        })
      : undefined;
  const onCatalogLost = () => {
    const reason = 'another node took over the embedded catalog (its archive lease)';
    if (hooks.onFenced) hooks.onFenced(reason);
    else logger.error({ reason }, 'this node may no longer write to the archive');
  };
  const base = await openNodeBase(config, logger, { archiveCatalog: cluster?.fence, onCatalogLost }).catch(
    async (err) => {
      await cluster?.stop();
      await certificates?.close();
      throw err;
    },
  );
  const cleanups: (() => Promise<void>)[] = [
    async () => {
      await certificates?.close();
    },
    () => base.close(),
  ];
  // Runs after every database closed and released (cleanups run in reverse).
  if (cluster) cleanups.push(() => cluster.stop());
  const cleanup = async () => {
    for (const fn of cleanups.reverse())
      await fn().catch((err) => logger.error({ err }, 'shutdown step failed'));
  };
  try {
    const catalog = base.catalog;
    // Counted by the registry, the pooler and archiving; read by /metrics and the live stats.
    const activity = new NodeActivity();
    const archiving = await openArchiving(config, base, logger, activity);
    const engines = new EngineHost({
      warm: config.warmEngines,
      settings: [
        ...postgresSettings(config.sharedBuffersBytes),
        // The slot WAL shipping pins unshipped WAL with must not keep WAL once nothing ships it.
        ...(config.archive.durability === 'local' ? ['max_slot_wal_keep_size=0'] : []),
      ],
      maxHeapBytes: config.maxDatabaseMemoryBytes,
      maxDataBytes: config.maxDatabaseSizeBytes,
      fsync: config.fsync,
      extensions: config.extensions,
      logger,
    });
    await engines.start();
    cleanups.push(() => engines.close());
    const spares = new TemplateSpares(
      config.templateDir,
      path.join(config.dataDir, '_spare'),
      config.spareDatabases,
      logger,
      { fsync: config.fsync },
    );
    await spares.start();
    cleanups.push(() => spares.idle());
    const materialize = archiving
      ? (id: string, dir: string) => spares.whilePaused(() => archiving.archiving.materialize(id, dir))
      : undefined;
    const registry = new DatabaseRegistry({
      engines,
      dataDir: config.dataDir,
      maxClientsPerDb: config.maxClientsPerDb,
      queryWaitTimeoutMs: config.queryWaitTimeoutMs,
      idleTimeoutMs: config.idleTimeoutMs,
      maxOpenDatabases: config.maxOpenDatabases,
      maxMemoryBytes: config.maxMemoryBytes,
      logger,
      activity,
      ...(archiving
        ? {
            // Cluster mode: claimed before it opens, released once closed (WAL shipped, snapshot taken).
            materialize: cluster && materialize ? cluster.node.wrapMaterialize(materialize) : materialize,
            afterClose: cluster
              ? async (id: string, dir: string, written: boolean) => {
                  await archiving.archiving.afterClose(id, dir, written);
                  await cluster.node.release(id);
                }
              : archiving.archiving.afterClose,
          }
        : {}),
      ...(archiving?.shipping ? { beforeClose: archiving.shipping.beforeClose } : {}),
      // WAL shipping first (it ships what a migration writes), then the template migration (issue 18),
      // which never fails the open: a database whose migration failed stays usable at its version.
      onOpen: async (db) => {
        db.awaitLocalFlush(archiving?.archiving.pendingFlush(db.id));
        await archiving?.shipping?.onOpen(db);
        await templates.migrateOpen(db).catch((err: unknown) => {
          logger.error({ err, db: db.id }, 'could not check the template version of a database');
        });
      },
    });
    const templates: TemplateManager = new TemplateManager({
      catalog,
      baseDir: config.templateDir,
      templatesDir: path.join(config.dataDir, '_templates'),
      registry,
      engines,
      logger,
      spares: config.spareDatabases,
    });
    cleanups.push(() => templates.idle());
    cleanups.push(() => registry.closeAll());
    registryRef = registry;
    await cluster?.start();
    archiving?.archiving.start(registry);
    if (archiving) cleanups.push(() => archiving.archiving.stop());
    archiving?.shipping?.start(registry);
    if (archiving?.shipping) cleanups.push(() => archiving.shipping?.stop() ?? Promise.resolve());
    if (archiving) {
      // With an archive, local copies are a cache (LOCAL_EVICT_AFTER, LOCAL_DISK_MAX).
      const cache = new LocalCache({
        dataDir: config.dataDir,
        evictAfterMs: config.archive.localEvictAfterMs,
        diskMaxBytes: config.archive.localDiskMaxBytes,
        whileUnused: (id, fn) => registry.whileUnused(id, fn),
        logger: logger.child({ mod: 'local-cache' }),
      });
      archiving.archiving.onClosed = () => cache.nudge();
      cache.start();
      cleanups.push(() => cache.stop());
    }
    // A fetch from the archive writes over a spare: rewriting files is far cheaper than creating them.
    if (base.snapshots) base.snapshots.seed = (dir) => spares.takeReady(dir);
    const manager = new DatabaseManager({
      catalog,
      registry,
      spares,
      ...(archiving ? { snapshots: archiving.snapshots, wal: base.wal } : {}),
      dataDir: config.dataDir,
      templateDir: config.templateDir,
      minPasswordLength: config.minPasswordLength,
      templates,
      ownership: cluster,
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
        secureContext: () => (config.tls.mode === 'disable' ? undefined : certificates?.secureContext()),
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
        cluster,
        slots: new ConnectionSlots(config.maxConnections, logger),
      },
      logger,
    );
    const port = await listener.listen(config.port, config.host);
    cleanups.push(() => listener.close(config.drainTimeoutMs));
    if (cluster) {
      const clusterPort = await cluster.listen(config.host, {
        adoptSession: (socket, hello, pipelined) =>
          listener.adopt(socket, {
            db: hello.db,
            user: hello.user,
            params: hello.params,
            pipelined,
            storedKey: hello.storedKey,
          }),
        cancel: (hello) => void cancelKeys.cancel(hello.processId, hello.secretKey),
      });
      // Cleanups run in reverse: forwarded sessions stop arriving before the listener drains.
      cleanups.push(() => cluster.closeListener());
      logger.info({ clusterPort, address: config.cluster?.address, node: config.nodeId }, 'cluster mode');
    }
    const frontDoor = await startFrontDoor({
      host: config.http.host,
      port: config.http.port,
      tls: config.http.tls === 'disable' ? undefined : certificates?.current(),
      requestTimeoutMs: config.http.requestTimeoutMs,
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
        cluster,
      },
      // WebSocket clients: TLS is the wss layer, so no SSLRequest is expected inside.
      connection: { ...listener.deps, tlsMode: 'disable' },
      logger,
    });
    cleanups.push(() => frontDoor.close(config.drainTimeoutMs));
    if (config.http.tls !== 'disable') certificates?.onChange((pair) => frontDoor.setCertificate(pair));
    if (!config.admin.token && !isLoopback(config.admin.host)) {
      logger.warn({ host: config.admin.host }, 'admin API listens beyond loopback without ADMIN_TOKEN');
    }
    const adminStopping = new AbortController();
    const admin = await startAdmin({
      app: createAdminApp({
        stopping: adminStopping.signal,
        manager,
        templates,
        registry,
        listener,
        authThrottle,
        logger,
        metrics: new Registry(),
        topDatabases: config.metricsTopDatabases,
        nodeId: config.nodeId,
        engines,
        walShipping: archiving?.shipping,
        cluster,
        // Test and development runs with a fault harness only (config.ts refuses it in production).
        faults: config.faultControlUrl ? new FaultControl(config.faultControlUrl) : undefined,
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
    cleanups.push(() => {
      adminStopping.abort();
      return admin.close();
    });
    logger.info(
      {
        port,
        adminPort: admin.port,
        httpPort: frontDoor.port,
        host: config.host,
        dataDir: config.dataDir,
        tls: config.tls.mode,
      },
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
      cluster,
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

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}
