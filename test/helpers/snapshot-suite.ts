import { randomBytes } from 'node:crypto';
import { cp, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createScramSha256Data } from 'pg-gateway';
import { pino } from 'pino';
import type { Catalog } from '../../src/catalog/catalog.js';
import { openEmbeddedCatalog } from '../../src/catalog/embedded.js';
import type { PgDataIdentity } from '../../src/pgdata/tarball.js';
import type { ArchiveStore } from '../../src/storage/archive.js';
import { openArchive } from '../../src/storage/open-archive.js';
import { Snapshots } from '../../src/storage/snapshots.js';
import { FaultyArchive, OBJECT_PATH, startS3, type TestS3 } from './s3.js';

/**
 * What the storage suites share: the two kinds of archive (s3rver behind the fault proxy, and a
 * file:// directory with the same faults injected by a decorator), a Snapshots over one of them
 * with its catalog, and small PGDATA stand-ins to snapshot.
 */

/** Versions Snapshots keeps per database in these suites. */
export const KEEP = 3;

export interface Faults {
  /** The next `n` requests/operations fail with 503. */
  fail(n: number): void;
  dropUpload(afterBytes: number, times?: number): void;
  truncateUpload(toBytes: number, times?: number): void;
  truncateDownload(afterBytes: number, times?: number): void;
  clear(): void;
  /** Faults injected so far. */
  injected(): number;
}

export interface Mode {
  name: 's3' | 'file';
  /** Opens the archive; a file:// one lives under `root`. */
  open(root: string): Promise<{ archive: FaultyArchive; faults: Faults }>;
  close(): Promise<void>;
}

export function s3Mode(): Mode {
  let s3: TestS3 | undefined;
  return {
    name: 's3',
    async open() {
      s3 = await startS3();
      const { proxy } = s3;
      const store = await openArchive(`s3://${s3.bucket}/pglite/dbs`, {
        s3: { endpoint: s3.endpoint, ...s3.credentials, retries: 2, retryBaseMs: 10, maxAttempts: 2 },
      });
      const archive = new FaultyArchive(store as ArchiveStore);
      const faults: Faults = {
        fail: (n) => proxy.fail(n),
        dropUpload: (afterBytes, times) =>
          proxy.dropUpload(afterBytes, { times: times ?? 1, path: OBJECT_PATH }),
        truncateUpload: (toBytes, times) =>
          proxy.truncateUpload(toBytes, { times: times ?? 1, path: OBJECT_PATH }),
        truncateDownload: (afterBytes, times) => proxy.truncateDownload(afterBytes, { times: times ?? 1 }),
        clear: () => proxy.clear(),
        injected: () =>
          proxy.injected.status +
          proxy.injected.dropUpload +
          proxy.injected.truncateUpload +
          proxy.injected.truncateDownload,
      };
      return { archive, faults };
    },
    close: async () => s3?.close(),
  };
}

export function fileMode(): Mode {
  return {
    name: 'file',
    async open(root) {
      const dir = path.join(root, 'file-archive');
      const store = await openArchive(pathToFileURL(dir).href);
      const archive = new FaultyArchive(store as ArchiveStore);
      const faults: Faults = {
        fail: (n) => archive.fail(n),
        dropUpload: (afterBytes, times) => archive.dropUpload(afterBytes, times),
        truncateUpload: (toBytes, times) => archive.truncateUpload(toBytes, times),
        truncateDownload: (afterBytes, times) => archive.truncateDownload(afterBytes, times),
        clear: () => archive.clear(),
        injected: () => archive.injected,
      };
      return { archive, faults };
    },
    close: async () => undefined,
  };
}

export interface SnapshotSuite {
  archive: FaultyArchive;
  faults: Faults;
  catalog: Catalog;
  snapshots: Snapshots;
  /** Where the databases' local copies go. */
  dataRoot: string;
  workDir: string;
}

/**
 * Opens `mode`'s archive, an embedded catalog with the databases the suites use, and a Snapshots
 * over both, everything under `root`/`mode.name` (the file:// archive under `root`). The caller
 * closes the catalog, the archive and the mode.
 */
export async function openSnapshotSuite(
  mode: Mode,
  opts: { root: string; templateDir: string; identity: PgDataIdentity },
): Promise<SnapshotSuite> {
  const base = path.join(opts.root, mode.name);
  const dataRoot = path.join(base, 'data');
  const workDir = path.join(base, 'work');
  await mkdir(dataRoot, { recursive: true });
  const { archive, faults } = await mode.open(opts.root);
  const catalog = await openEmbeddedCatalog({
    dir: path.join(base, '_catalog'),
    templateDir: opts.templateDir,
  });
  try {
    for (const id of ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'empty', 'hostile']) {
      await catalog.createDatabase({ id, username: 'u', scram: await createScramSha256Data('pw') });
    }
  } catch (err) {
    await catalog.close();
    await archive.close();
    throw err;
  }
  const snapshots = new Snapshots({
    archive,
    catalog,
    workDir,
    logger: pino({ level: 'silent' }),
    keepVersions: KEEP,
    expect: opts.identity,
    attempts: 3,
    retryBaseMs: 10,
    gzipLevel: 1,
    // fsync per extracted file is the production default and costs about a second per fetch on
    // a busy disk; one mode keeps it so both paths run.
    fsync: mode.name === 's3',
  });
  return { archive, faults, catalog, snapshots, dataRoot, workDir };
}

/**
 * A small stand-in (about 1.5 MB archived) for tests about bytes rather than PostgreSQL: the files
 * PGDATA validation looks at, copied from the template, plus an incompressible relation file
 * different in each, so archives are big enough to cut in the middle and fast to pack.
 */
export async function makeMiniPgData(templateDir: string, dir: string): Promise<void> {
  for (const sub of ['global', 'base/1', 'pg_wal']) await mkdir(path.join(dir, sub), { recursive: true });
  for (const file of ['PG_VERSION', 'global/pg_control', 'global/pg_filenode.map']) {
    await cp(path.join(templateDir, file), path.join(dir, file));
  }
  await writeFile(path.join(dir, 'base/1/16384'), randomBytes(1536 * 1024));
}
