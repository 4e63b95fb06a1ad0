import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { openCatalog } from '../catalog/index.js';
import type { Config } from '../config.js';
import { acquireDataDirLock } from '../databases/dir-lock.js';
import { DatabaseManager } from '../databases/manager.js';
import { ensureTemplate } from '../databases/template.js';
import { databaseJson } from '../http/app.js';
import type { DbOps } from './admin-client.js';
import { connectionDefaults, connectionInfo } from './connection-info.js';

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
    const manager = new DatabaseManager({
      catalog,
      dataDir: config.dataDir,
      templateDir: config.templateDir,
    });
    const where = connectionDefaults(config);
    const info = (id: string, username: string, password: string) =>
      connectionInfo({ ...where, id, username, password });
    return {
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
      close: async () => {
        try {
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
