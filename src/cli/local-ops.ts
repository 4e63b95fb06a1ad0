import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pino } from 'pino';
import { connectionInfo, offlineConnectionDefaults } from '../admin/connection-info.js';
import { DatabaseManager } from '../admin/service.js';
import { TemplateManager } from '../admin/templates.js';
import { clonedJson, databaseJson, templateJson, uploadedJson, versionJson } from '../admin/views.js';
import type { Config } from '../config.js';
import { openNodeBase } from '../node-base.js';
import type { DbOps } from './admin-client.js';

const NEEDS_CLUSTER_SERVER =
  'db move and node drain need the running server of a cluster node (CLUSTER_ADDRESS set) on this DATA_DIR';

/**
 * The `db` commands when no server runs: this process takes the data-directory lock (so a server
 * starting meanwhile fails instead of opening the catalog twice), opens the catalog, and works
 * through a `DatabaseManager` without a registry. `close()` closes the catalog and unlocks.
 * Throws `DataDirLockedError` when a server got the lock first.
 */
export async function openLocalOps(config: Config): Promise<DbOps> {
  // Retries and failures on stderr; stdout is the command's output.
  const logger = pino({ level: 'warn' }, pino.destination(2));
  const base = await openNodeBase(config, logger);
  try {
    const templates = new TemplateManager({
      catalog: base.catalog,
      baseDir: config.templateDir,
      templatesDir: path.join(config.dataDir, '_templates'),
    });
    const manager = new DatabaseManager({
      catalog: base.catalog,
      templates,
      dataDir: config.dataDir,
      templateDir: config.templateDir,
      minPasswordLength: config.minPasswordLength,
      ...(base.snapshots ? { snapshots: base.snapshots, wal: base.wal } : {}),
    });
    const { defaults: where, note } = offlineConnectionDefaults(config);
    const info = (id: string, username: string, password: string | undefined) =>
      connectionInfo({ ...where, id, username, password });
    return {
      ...(note ? { connectionNote: note } : {}),
      createTemplate: async (name, sql) => templateJson(await templates.create(name, sql)),
      listTemplates: async () => (await templates.list()).map(templateJson),
      deleteTemplate: (name) => templates.delete(name),
      updateTemplate: async (name, sql) => templateJson(await templates.update(name, sql)),
      templateTypes: (name) => templates.types(name),
      // Both read or migrate an open database: they need the running server.
      types: (id) => manager.types(id),
      migrate: (id) => manager.migrate(id),
      move: () => Promise.reject(new Error(NEEDS_CLUSTER_SERVER)),
      drain: () => Promise.reject(new Error(NEEDS_CLUSTER_SERVER)),
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
      restorable: async (id) => {
        const range = await manager.restorableRange(id);
        return range ? { earliest: range.earliest.toISOString(), latest: range.latest.toISOString() } : null;
      },
      restore: async (id, version, at) => ({
        id,
        restoredFrom: version ?? `at ${at}`,
        version: versionJson(await manager.restore(id, version, at !== undefined ? new Date(at) : undefined)),
      }),
      clone: async (source, id, { at, ...opts }) =>
        clonedJson(
          await manager.clone(source, id, { ...opts, ...(at !== undefined ? { at: new Date(at) } : {}) }),
          source,
          info,
        ),
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
      close: () => base.close(),
    };
  } catch (err) {
    await base.close();
    throw err;
  }
}
