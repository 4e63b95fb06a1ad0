import { createReadStream } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pino } from 'pino';
import type { Catalog } from '../catalog/catalog.js';
import { openCatalog } from '../catalog/index.js';
import type { Config } from '../config.js';
import { acquireDataDirLock } from '../databases/dir-lock.js';
import { DatabaseManager } from '../databases/manager.js';
import { ensureTemplate } from '../databases/template.js';
import { databaseJson } from '../http/app.js';
import { clonedJson, uploadedJson, versionJson } from '../http/versions.js';
import { openArchive } from '../storage/archive.js';
import { Snapshots } from '../storage/snapshots.js';
import { readPgDataIdentity } from '../storage/tarball.js';
import type { DbOps } from './admin-client.js';
import { connectionInfo, offlineConnectionDefaults } from './connection-info.js';

/** The archive's versions (ARCHIVE_URL), as the server opens them; undefined without an archive. */
async function openSnapshots(config: Config, catalog: Catalog) {
  const archive = await openArchive(config.archive.url, { s3: config.archive.s3 });
  if (!archive) return undefined;
  const snapshots = new Snapshots({
    archive,
    catalog,
    workDir: path.join(config.dataDir, '.storage'),
    // Retries and failures on stderr; stdout is the command's output.
    logger: pino({ level: 'warn' }, pino.destination(2)),
    keepVersions: config.archive.keepVersions,
    expect: await readPgDataIdentity(config.templateDir),
  });
  return { snapshots, close: () => archive.close() };
}

/**
 * The `db` commands when no server runs: this process takes the data-directory lock (so a server
 * starting meanwhile fails instead of opening the catalog twice), opens the catalog, and works
 * through a `DatabaseManager` without a registry. `close()` closes the catalog and unlocks.
 * Throws `DataDirLockedError` when a server got the lock first.
 */
export async function openLocalOps(config: Config): Promise<DbOps> {
  await mkdir(config.dataDir, { recursive: true });
  const lock = await acquireDataDirLock(config.dataDir, config.nodeId);
  try {
    await ensureTemplate(config.templateDir);
    const catalog = await openCatalog({
      url: config.catalogUrl,
      dir: path.join(config.dataDir, '_catalog'),
      templateDir: config.templateDir,
    });
    const archived = await openSnapshots(config, catalog).catch(async (err: unknown) => {
      await catalog.close();
      throw err;
    });
    const manager = new DatabaseManager({
      catalog,
      dataDir: config.dataDir,
      templateDir: config.templateDir,
      minPasswordLength: config.minPasswordLength,
      ...(archived ? { snapshots: archived.snapshots } : {}),
    });
    const { defaults: where, note } = offlineConnectionDefaults(config);
    const info = (id: string, username: string, password: string | undefined) =>
      connectionInfo({ ...where, id, username, password });
    return {
      ...(note ? { connectionNote: note } : {}),
      create: async (id, opts) => {
        const created = await manager.create(id, opts);
        const { database, username, password } = created;
        return {
          id: database.id,
          readOnly: database.readOnly,
          username,
          password,
          ...info(id, username, password),
        };
      },
      list: async () => (await manager.list()).map(databaseJson),
      delete: (id) => manager.delete(id),
      update: async (id, patch) => databaseJson(await manager.update(id, patch)),
      passwd: async (id, opts) => {
        const { username, password } = await manager.passwd(id, opts);
        return { username, password, ...info(id, username, password) };
      },
      versions: async (id) => (await manager.versions(id)).map(versionJson),
      restore: async (id, version) => ({
        id,
        restoredFrom: version,
        version: versionJson(await manager.restore(id, version)),
      }),
      clone: async (source, id, opts) => clonedJson(await manager.clone(source, id, opts), source, info),
      upload: async (id, file, opts, onProgress) => {
        const total = (await stat(file)).size;
        let sent = 0;
        // Counted as the upload consumes it (a 'data' listener would start the flow too early).
        const counter = new Transform({
          transform(chunk: Buffer, _encoding, callback) {
            sent += chunk.length;
            onProgress?.(sent, total);
            callback(null, chunk);
          },
        });
        const body = createReadStream(file)
          .on('error', (err) => counter.destroy(err))
          .pipe(counter);
        const uploaded = await manager.upload(id, body, {
          create: opts.create ?? false,
          maxBytes: config.archive.maxUploadBytes,
          ...(opts.username !== undefined ? { username: opts.username } : {}),
        });
        return uploadedJson(uploaded, info);
      },
      close: async () => {
        try {
          await archived?.close();
          await catalog.close();
        } finally {
          await lock.release();
        }
      },
    };
  } catch (err) {
    await lock.release();
    throw err;
  }
}
