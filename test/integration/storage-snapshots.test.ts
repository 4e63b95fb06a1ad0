import { createReadStream } from 'node:fs';
import { cp, lstat, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { createScramSha256Data } from 'pg-gateway';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Catalog, VersionRecord } from '../../src/catalog/catalog.js';
import { openEmbeddedCatalog } from '../../src/catalog/embedded.js';
import { type PgDataIdentity, readPgDataIdentity, TarballRejectedError } from '../../src/pgdata/tarball.js';
import { createFromTemplate } from '../../src/pgdata/template.js';
import type { ArchiveStore } from '../../src/storage/archive.js';
import { openArchive } from '../../src/storage/open-archive.js';
import { Snapshots, versionKey } from '../../src/storage/snapshots.js';
import type { FaultyArchive } from '../helpers/s3.js';
import {
  type Faults,
  fileMode,
  KEEP,
  makeMiniPgData,
  openSnapshotSuite,
  s3Mode,
} from '../helpers/snapshot-suite.js';
import { treeDigest } from '../helpers/tree-digest.js';

/**
 * Snapshots against real parts: real PGlite data directories, the real AWS SDK talking to s3rver
 * through a fault proxy, and a file:// archive in a temp dir with the same faults injected by a
 * decorator. Both archive kinds run the same suite: snapshot, fetch, retries under faults,
 * retention, restore, clone and upload. Hostile tarballs are in storage-hostile-tarballs.test.ts,
 * the archive stores on their own in storage-archive-stores.test.ts.
 */

const logger = pino({ level: 'silent' });

let root: string;
let templateDir: string;
let identity: PgDataIdentity;
/** A real PGDATA made once, table t with 3 rows; never opened again. */
let fixtureV1: string;
let digestV1: string;
/** Small stand-ins (see makeMiniPgData), each with a different relation file. */
let miniA: string;
let miniB: string;
let digestA: string;
let digestB: string;
/** PGlite dumpDataDir() output of a database whose table t holds 5 rows. */
let dumpGz: string;
let dumpTar: string;

async function addRows(dir: string, rows: number): Promise<void> {
  const pg = new PGlite({ dataDir: dir });
  await pg.exec('create table if not exists t (n int)');
  await pg.query('insert into t select generate_series(1, $1::int)', [rows]);
  await pg.close();
}

async function countRows(dir: string): Promise<number> {
  const pg = new PGlite({ dataDir: dir });
  try {
    const { rows } = await pg.query<{ n: number }>('select count(*)::int as n from t');
    return rows[0]?.n ?? -1;
  } finally {
    await pg.close();
  }
}

const exists = (p: string) =>
  lstat(p).then(
    () => true,
    () => false,
  );

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'storage-snapshots-test-'));
  templateDir = inject('templateDir');
  identity = await readPgDataIdentity(templateDir);
  fixtureV1 = path.join(root, 'fixture-v1');
  await createFromTemplate(templateDir, fixtureV1);
  await addRows(fixtureV1, 3);
  digestV1 = await treeDigest(fixtureV1);
  miniA = path.join(root, 'mini-a');
  miniB = path.join(root, 'mini-b');
  for (const dir of [miniA, miniB]) await makeMiniPgData(templateDir, dir);
  digestA = await treeDigest(miniA);
  digestB = await treeDigest(miniB);
  // A real dumpDataDir() of a database with 5 rows, in both formats.
  const dir = path.join(root, 'dump-source');
  await cp(fixtureV1, dir, { recursive: true });
  const pg = new PGlite({ dataDir: dir });
  // Query first: dumpDataDir() on an instance that is not ready yet never settles (PGlite 0.5.16).
  await pg.query('insert into t values (4), (5)');
  dumpGz = path.join(root, 'dump.tar.gz');
  dumpTar = path.join(root, 'dump.tar');
  await writeFile(dumpGz, Buffer.from(await (await pg.dumpDataDir()).arrayBuffer()));
  await writeFile(dumpTar, Buffer.from(await (await pg.dumpDataDir('none')).arrayBuffer()));
  await pg.close();
});

afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('snapshot of an open database', () => {
  it('copies it while frozen (after CHECKPOINT), packs after the release, and the copy opens with its rows', async () => {
    const base = path.join(root, 'live');
    const catalog = await openEmbeddedCatalog({ dir: path.join(base, '_catalog'), templateDir });
    const archive = (await openArchive(pathToFileURL(path.join(base, 'archive')).href)) as ArchiveStore;
    const snapshots = new Snapshots({
      archive,
      catalog,
      workDir: path.join(base, 'work'),
      logger,
      expect: identity,
    });
    const dir = path.join(base, 'data', 'live');
    await cp(fixtureV1, dir, { recursive: true });
    const pg = new PGlite({ dataDir: dir });
    try {
      await catalog.createDatabase({ id: 'live', username: 'u', scram: await createScramSha256Data('pw') });
      await pg.query('insert into t values (10), (11)');
      const events: string[] = [];
      await snapshots.snapshot('live', dir, {
        freeze: async () => {
          events.push('freeze');
          await pg.query('checkpoint');
          return () => {
            events.push('release');
          };
        },
      });
      expect(events).toEqual(['freeze', 'release']);
      // The open database keeps working after the snapshot.
      await pg.query('insert into t values (12)');
      const copy = path.join(base, 'data', 'copy');
      await snapshots.fetch('live', copy);
      expect(await countRows(copy)).toBe(5);
      expect(await exists(path.join(copy, 'postmaster.pid'))).toBe(false);
      expect(await readdir(path.join(base, 'work'))).toEqual([]);
    } finally {
      await pg.close();
      await catalog.close();
    }
  });
});

describe.each([s3Mode(), fileMode()])('$name archive', (mode) => {
  let archive: FaultyArchive;
  let faults: Faults;
  let catalog: Catalog;
  let snapshots: Snapshots;
  let dataRoot: string;
  let workDir: string;
  const dirOf = (id: string) => path.join(dataRoot, id);

  /** Every recorded version has its object, with the recorded size, and there is no other object. */
  async function expectArchiveMatchesCatalog(id: string): Promise<VersionRecord[]> {
    const versions = await catalog.listVersions(id);
    const objects = await archive.inner.list(`${id}/`);
    expect(objects.map((o) => o.key).sort()).toEqual(versions.map((v) => versionKey(id, v.version)).sort());
    for (const v of versions) {
      expect(objects.find((o) => o.key === versionKey(id, v.version))?.size).toBe(v.sizeBytes);
    }
    return versions;
  }

  /** No temporary directories or spool files were left behind. */
  async function expectNoLeftovers(): Promise<void> {
    expect((await readdir(dataRoot)).filter((n) => n.startsWith('.'))).toEqual([]);
    expect(await readdir(workDir).catch(() => [])).toEqual([]);
  }

  beforeAll(async () => {
    ({ archive, faults, catalog, snapshots, dataRoot, workDir } = await openSnapshotSuite(mode, {
      root,
      templateDir,
      identity,
    }));
  });

  afterAll(async () => {
    await catalog?.close();
    await archive?.close();
    await mode.close();
  });

  it('snapshots a database, fetches it back after the local copy is gone, and it serves the rows', async () => {
    await cp(fixtureV1, dirOf('alpha'), { recursive: true });
    expect(await snapshots.ensureLocal('alpha', dirOf('alpha'))).toBe('present');
    const record = await snapshots.snapshot('alpha', dirOf('alpha'));
    expect(record).toMatchObject({ databaseId: 'alpha', sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(await snapshots.list('alpha')).toEqual([record]);
    await expectArchiveMatchesCatalog('alpha');

    await rm(dirOf('alpha'), { recursive: true });
    expect(await snapshots.ensureLocal('alpha', dirOf('alpha'))).toBe('fetched');
    expect(await treeDigest(dirOf('alpha'))).toBe(digestV1);
    expect(await countRows(dirOf('alpha'))).toBe(3);
    expect(await snapshots.ensureLocal('empty', dirOf('empty'))).toBe('absent');
    await expectNoLeftovers();
  });

  it('concurrent first connections trigger one download', async () => {
    const first = await snapshots.snapshot('beta', miniA);
    // Unchanged data is not stored again when asked; the default stores every snapshot.
    expect(await snapshots.snapshot('beta', miniA, { skipIfUnchanged: true })).toEqual(first);
    expect(await snapshots.list('beta')).toEqual([first]);
    const gets = archive.calls.get;
    const results = await Promise.all(
      Array.from({ length: 5 }, () => snapshots.ensureLocal('beta', dirOf('beta'))),
    );
    expect(results).toEqual(Array(5).fill('fetched'));
    expect(archive.calls.get - gets).toBe(1);
    expect(await treeDigest(dirOf('beta'))).toBe(digestA);
  });

  it('retries 5xx answers', async () => {
    const before = faults.injected();
    faults.fail(2);
    const record = await snapshots.snapshot('beta', miniB);
    expect(faults.injected() - before).toBe(2);
    expect((await snapshots.latest('beta'))?.version).toBe(record.version);
    await expectArchiveMatchesCatalog('beta');
  });

  it('retries an upload whose connection drops mid-body, and records only the complete one', async () => {
    const before = faults.injected();
    faults.dropUpload(256 * 1024);
    const record = await snapshots.snapshot('beta', miniB);
    expect(faults.injected() - before).toBe(1);
    expect((await snapshots.latest('beta'))?.version).toBe(record.version);
    await expectArchiveMatchesCatalog('beta');
  });

  it('catches an upload that was stored truncated but reported success', async () => {
    const before = faults.injected();
    faults.truncateUpload(500_000);
    const record = await snapshots.snapshot('beta', miniB);
    expect(faults.injected() - before).toBe(1);
    expect(record.sizeBytes).toBeGreaterThan(1_000_000);
    await expectArchiveMatchesCatalog('beta');
  });

  it('persistent upload failures leave the last good version the latest, with no stray objects', async () => {
    const good = await snapshots.latest('beta');
    faults.fail(10_000);
    await expect(snapshots.snapshot('beta', miniA)).rejects.toThrow();
    faults.clear();
    faults.dropUpload(100_000, 100);
    await expect(snapshots.snapshot('beta', miniA)).rejects.toThrow();
    faults.clear();
    faults.truncateUpload(500_000, 100);
    await expect(snapshots.snapshot('beta', miniA)).rejects.toThrow();
    faults.clear();
    expect(await snapshots.latest('beta')).toEqual(good);
    await expectArchiveMatchesCatalog('beta');
    await expectNoLeftovers();
  });

  it('retries a truncated download; one that keeps failing leaves nothing at the destination', async () => {
    // What a fresh node gets is still the last good version.
    await rm(dirOf('beta'), { recursive: true });
    const before = faults.injected();
    faults.truncateDownload(300_000);
    await snapshots.fetch('beta', dirOf('beta'));
    expect(faults.injected() - before).toBe(1);
    expect(await treeDigest(dirOf('beta'))).toBe(digestB);

    await rm(dirOf('beta'), { recursive: true });
    faults.truncateDownload(300_000, 100);
    await expect(snapshots.fetch('beta', dirOf('beta'))).rejects.toThrow();
    faults.clear();
    expect(await exists(dirOf('beta'))).toBe(false);
    await expectNoLeftovers();
  });

  it(`keeps the newest KEEP_VERSIONS (${KEEP}) versions`, async () => {
    // beta has had 4 good snapshots so far; one more makes 5.
    const newest = await snapshots.snapshot('beta', miniA);
    const versions = await expectArchiveMatchesCatalog('beta');
    expect(versions).toHaveLength(KEEP);
    expect(versions[0]?.version).toBe(newest.version);
    const sorted = [...versions].sort((a, b) => (a.version < b.version ? 1 : -1));
    expect(versions).toEqual(sorted);
  });

  it('restores an older version locally and makes it the newest version', async () => {
    // beta's versions, newest first: A, B, B.
    const [a, b] = (await snapshots.list('beta')) as [VersionRecord, VersionRecord];
    await cp(miniA, dirOf('beta'), { recursive: true });
    const restored = await snapshots.restoreInto('beta', b.version, dirOf('beta'));
    expect(await treeDigest(dirOf('beta'))).toBe(digestB);
    expect(restored.sha256).toBe(b.sha256);
    expect((await snapshots.list('beta')).map((v) => v.version)).toEqual([
      restored.version,
      a.version,
      b.version,
    ]);
    // The restore is durable: it is what a node without the local copy gets.
    expect((await snapshots.latest('beta'))?.sha256).toBe(b.sha256);

    await expect(
      snapshots.restoreInto('beta', '20200101T000000000Z-00000000', dirOf('beta')),
    ).rejects.toThrow(/no version/);
    await expect(snapshots.restoreInto('beta', 'latest/../x', dirOf('beta'))).rejects.toThrow(
      /invalid version/,
    );
    expect(await treeDigest(dirOf('beta'))).toBe(digestB);
    await expectArchiveMatchesCatalog('beta');
    await expectNoLeftovers();
  });

  it('clones a version into a new database', async () => {
    const [, a] = (await snapshots.list('beta')) as [VersionRecord, VersionRecord];
    const cloned = await snapshots.cloneTo('beta', a.version, 'gamma', dirOf('gamma'));
    expect(cloned).toMatchObject({ databaseId: 'gamma', sha256: a.sha256 });
    expect(await treeDigest(dirOf('gamma'))).toBe(digestA);
    expect(await snapshots.list('gamma')).toEqual([cloned]);
    await expectArchiveMatchesCatalog('gamma');
    await expect(snapshots.cloneTo('beta', a.version, 'gamma', dirOf('gamma'))).rejects.toThrow(
      /already exists/,
    );
  });

  it('accepts real PGlite dumpDataDir() tarballs, gzip and plain, and serves them after a fetch', async () => {
    const gz = await snapshots.upload('delta', createReadStream(dumpGz), { maxBytes: 100e6 });
    const plain = await snapshots.upload('epsilon', createReadStream(dumpTar), {
      maxBytes: 100e6,
      destDir: dirOf('epsilon'),
    });
    expect(await snapshots.list('delta')).toEqual([gz]);
    expect(await snapshots.list('epsilon')).toEqual([plain]);
    await snapshots.fetch('delta', dirOf('delta'));
    // Both dumps hold the same files; the fetched one matches what the plain upload installed.
    expect(await treeDigest(dirOf('delta'))).toBe(await treeDigest(dirOf('epsilon')));
    expect(await countRows(dirOf('delta'))).toBe(5);

    const tooLarge = await snapshots
      .upload('delta', createReadStream(dumpTar), { maxBytes: 1_000_000 })
      .catch((e: unknown) => e);
    expect(tooLarge).toBeInstanceOf(TarballRejectedError);
    expect((tooLarge as TarballRejectedError).problem).toBe('too-large');
    expect(await snapshots.list('delta')).toEqual([gz]);
    await expectNoLeftovers();
  });
});
