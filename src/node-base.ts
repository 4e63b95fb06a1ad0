import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { type Catalog, openCatalog } from './catalog/index.js';
import type { Config } from './config.js';
import type { NodeActivity } from './databases/activity.js';
import { Archiving } from './databases/archiving.js';
import { WalShipping } from './databases/wal-shipping.js';
import { databasePath } from './ids.js';
import type { Logger } from './log.js';
import { acquireDataDirLock } from './pgdata/dir-lock.js';
import { readPgDataIdentity } from './pgdata/tarball.js';
import { ensureTemplate } from './pgdata/template.js';
import { TemplateFiles } from './pgdata/template-delta.js';
import { openArchivedCatalog } from './storage/catalog-archive.js';
import { openArchive } from './storage/open-archive.js';
import { Snapshots } from './storage/snapshots.js';
import { WalObjects } from './storage/wal-objects.js';

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
  opts: {
    storageLogger?: Logger;
    /** Cluster mode: the catalog the archive writers record through (fenced by generation). */
    archiveCatalog?: ((catalog: Catalog) => Catalog) | undefined;
    /** The embedded catalog's archive lease went to another node (see ArchivedCatalogOptions.onLost). */
    onCatalogLost?: (() => void) | undefined;
  } = {},
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
    // The archive first: the embedded catalog is archived to it (and must close before it).
    const archive = await openArchive(config.archive.url, { s3: config.archive.s3 });
    if (archive) cleanups.push(() => archive.close());
    const catalog =
      archive && !config.catalogUrl
        ? await openArchivedCatalog({
            archive,
            dataDir: config.dataDir,
            templateDir: config.templateDir,
            workDir: path.join(config.dataDir, '.storage'),
            nodeId: config.nodeId,
            leaseTtlMs: config.archive.catalogLeaseTtlMs,
            takeover: config.archive.catalogTakeover,
            sync: config.archive.durability === 'sync',
            shipIntervalMs: config.archive.walShipIntervalMs,
            expect: await readPgDataIdentity(config.templateDir),
            logger: logger.child({ mod: 'catalog' }),
            onLost: opts.onCatalogLost,
          })
        : await openCatalog({
            url: config.catalogUrl,
            dir: path.join(config.dataDir, '_catalog'),
            templateDir: config.templateDir,
            onError: (err) => logger.error({ err }, 'catalog connection error'),
          });
    cleanups.push(() => catalog.close());
    const recorder = opts.archiveCatalog?.(catalog) ?? catalog;
    const wal = archive
      ? new WalObjects({
          archive,
          catalog: recorder,
          logger: opts.storageLogger ?? logger.child({ mod: 'wal' }),
        })
      : undefined;
    const template = archive ? new TemplateFiles(config.templateDir) : undefined;
    // Hashed now rather than by the first fetch, which a failover's first open waits for.
    template?.contents().catch((err: unknown) => logger.warn({ err }, 'could not hash the template'));
    const snapshots = archive
      ? new Snapshots({
          archive,
          catalog: recorder,
          workDir: path.join(config.dataDir, '.storage'),
          logger: opts.storageLogger ?? logger.child({ mod: 'storage' }),
          keepVersions: config.archive.keepVersions,
          expect: await readPgDataIdentity(config.templateDir),
          template,
          fsync: config.fsync,
          wal,
        })
      : undefined;
    return { catalog, snapshots, wal, describeArchive: archive?.describe(), close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Write-back of databases to the archive (ARCHIVE_URL); undefined when local only. */
export async function openArchiving(config: Config, base: NodeBase, logger: Logger, activity: NodeActivity) {
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
    activity,
    baseBackupWalBytes: config.archive.baseBackupWalBytes,
    fsync: config.fsync,
    // Declared below; called only once the node runs.
    beforeCheckpoint: (db) => shipping?.beforeCheckpoint(db) ?? Promise.resolve(),
  });
  const durability = config.archive.durability;
  const shipping =
    base.wal && durability !== 'local'
      ? new WalShipping({
          wal: base.wal,
          mode: durability,
          intervalMs: config.archive.walShipIntervalMs,
          waitTimeoutMs: config.queryWaitTimeoutMs,
          maxBacklogBytes: config.archive.maxWalBacklogBytes,
          dataDirOf,
          logger,
          activity,
        })
      : undefined;
  logger.info({ archive: base.describeArchive, durability }, 'archive enabled');
  return { snapshots, archiving, shipping };
}
