import { execFile } from 'node:child_process';
import { appendFile, lstat, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { createScramSha256Data } from 'pg-gateway';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Catalog } from '../../src/catalog/catalog.js';
import { openEmbeddedCatalog } from '../../src/catalog/embedded.js';
import { packToFile, readPgDataIdentity, TarballRejectedError } from '../../src/pgdata/tarball.js';
import { createFromTemplate } from '../../src/pgdata/template.js';
import type { ArchiveStore } from '../../src/storage/archive.js';
import { openArchive } from '../../src/storage/open-archive.js';
import { Snapshots } from '../../src/storage/snapshots.js';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * Issue 11, finding 5: a data directory holding something a restore refuses (a tablespace link in
 * pg_tblspc, as CREATE TABLESPACE left before the gateway refused it; a stray top-level file; a
 * FIFO) is never stored as a version. The snapshot fails and says so; the earlier versions stay,
 * retention deletes none of them, and they still restore and clone.
 */

const KEEP = 2;
let root = '';

/** The problem a rejected promise carries (TarballRejectedError), or 'resolved'. */
async function problemOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'resolved';
  } catch (err) {
    expect(err).toBeInstanceOf(TarballRejectedError);
    return (err as TarballRejectedError).problem;
  }
}

const exists = (p: string) =>
  lstat(p).then(
    () => true,
    () => false,
  );

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'snapshot-refusal-'));
});
afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('snapshots refuse what a restore would refuse', () => {
  let catalog: Catalog;
  let archive: ArchiveStore;
  let snapshots: Snapshots;
  const logged: { level: number; db?: string; problem?: string; msg: string }[] = [];
  const dataRoot = () => path.join(root, 'data');
  const workDir = () => path.join(root, 'work');

  beforeAll(async () => {
    const templateDir = inject('templateDir');
    await mkdir(dataRoot(), { recursive: true });
    catalog = await openEmbeddedCatalog({ dir: path.join(root, '_catalog'), templateDir });
    archive = (await openArchive(pathToFileURL(path.join(root, 'archive')).href)) as ArchiveStore;
    const sink = new Writable({
      write(chunk, _encoding, done) {
        for (const line of String(chunk).split('\n').filter(Boolean)) logged.push(JSON.parse(line));
        done();
      },
    });
    snapshots = new Snapshots({
      archive,
      catalog,
      workDir: workDir(),
      logger: pino({ level: 'warn' }, sink),
      keepVersions: KEEP,
      expect: await readPgDataIdentity(templateDir),
      gzipLevel: 1,
      fsync: false,
    });
    for (const id of ['ts', 'junk', 'fifo', 'ts-clone']) {
      await catalog.createDatabase({ id, username: 'u', scram: await createScramSha256Data('pw') });
    }
  });
  afterAll(async () => {
    await catalog?.close();
    await archive?.close();
  });

  it('a tablespace link in pg_tblspc: no version recorded, none deleted, the earlier ones restore', async () => {
    const dir = path.join(dataRoot(), 'ts');
    await createFromTemplate(inject('templateDir'), dir);
    await snapshots.snapshot('ts', dir);
    const good = await snapshots.snapshot('ts', dir);
    const before = await snapshots.list('ts');
    expect(before).toHaveLength(KEEP);
    const objects = (await archive.list('ts/')).map((o) => o.key).sort();

    // What CREATE TABLESPACE ... LOCATION '/tmp/...' left before the gateway refused it.
    const outside = path.join(root, 'outside');
    await mkdir(outside);
    await symlink(outside, path.join(dir, 'pg_tblspc', '16400'));

    // More refusals than KEEP_VERSIONS: retention never runs for them.
    for (let i = 0; i < KEEP + 1; i++) {
      expect(await problemOf(snapshots.snapshot('ts', dir))).toBe('link');
      // The snapshot of an open database (a staged copy) refuses it too.
      const freeze = async () => () => undefined;
      expect(await problemOf(snapshots.snapshot('ts', dir, { freeze }))).toBe('link');
    }
    await expect(snapshots.snapshot('ts', dir)).rejects.toThrow(
      /snapshot of "ts" refused: .*pg_tblspc\/16400/,
    );
    expect(await snapshots.list('ts')).toEqual(before);
    expect((await archive.list('ts/')).map((o) => o.key).sort()).toEqual(objects);
    expect(await readdir(workDir())).toEqual([]);
    const refusal = logged.find((l) => l.db === 'ts' && l.level === 50);
    expect(refusal?.problem).toBe('link');
    expect(refusal?.msg).toMatch(/snapshot refused/);

    // The earlier versions still clone and restore (the link goes with the replaced copy).
    await snapshots.cloneTo('ts', before[1]?.version, 'ts-clone', path.join(dataRoot(), 'ts-clone'));
    expect(await exists(path.join(dataRoot(), 'ts-clone', 'PG_VERSION'))).toBe(true);
    const restored = await snapshots.restoreInto('ts', good.version, dir);
    expect(restored.sha256).toBe(good.sha256);
    expect(await readdir(path.join(dir, 'pg_tblspc'))).toEqual([]);
    expect(await exists(outside)).toBe(true);
    // And snapshots work again once the directory is clean.
    await expect(snapshots.snapshot('ts', dir)).resolves.toMatchObject({ databaseId: 'ts' });
  });

  it('a stray top-level file and a FIFO are refused as extraction would', async () => {
    const junk = path.join(dataRoot(), 'junk');
    await createFromTemplate(inject('templateDir'), junk);
    const first = await snapshots.snapshot('junk', junk);
    // COPY ... TO '/pglite/data/export.csv' writes one.
    await writeFile(path.join(junk, 'export.csv'), '1,2\n');
    expect(await problemOf(snapshots.snapshot('junk', junk))).toBe('unsafe-path');
    expect(await snapshots.list('junk')).toEqual([first]);

    const fifo = path.join(dataRoot(), 'fifo');
    await createFromTemplate(inject('templateDir'), fifo);
    await promisify(execFile)('mkfifo', [path.join(fifo, 'base', 'pipe')]);
    expect(await problemOf(snapshots.snapshot('fifo', fifo))).toBe('special-file');
    expect(await problemOf(snapshots.snapshot('fifo', fifo, { freeze: async () => () => undefined }))).toBe(
      'special-file',
    );
    expect(await snapshots.list('fifo')).toEqual([]);
    expect(await readdir(workDir())).toEqual([]);
  });

  it('packing checks the PGDATA itself: a directory that is none is refused before a byte is written', async () => {
    const notPgData = path.join(root, 'not-pgdata');
    await mkdir(path.join(notPgData, 'base'), { recursive: true });
    await appendFile(path.join(notPgData, 'PG_VERSION'), '18\n');
    const spool = path.join(root, 'not-pgdata.tar.gz');
    expect(await problemOf(packToFile(notPgData, spool))).toBe('not-pgdata');
  });
});

describe('through the gateway: a database closed with a tablespace link', () => {
  let t: TestServer;

  beforeAll(async () => {
    t = await startTestServer({
      ARCHIVE_URL: pathToFileURL(path.join(root, 'gateway-archive')).href,
      SNAPSHOT_INTERVAL: '0',
      KEEP_VERSIONS: '2',
      SPARE_DATABASES: '0',
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('keeps its versions; the latest restores with its rows', async () => {
    const password = await t.createDatabase('tbs');
    await withClient(t.pgConfig('tbs', password), async (c) => {
      await c.query('create table t (n int)');
      await c.query('insert into t select generate_series(1, 10)');
    });
    await t.server.registry.close('tbs');
    const before = await t.server.catalog.listVersions('tbs');
    expect(before).toHaveLength(2);

    const outside = path.join(root, 'gateway-outside');
    await mkdir(outside);
    await symlink(outside, path.join(t.dataDir, 'tbs', 'pg_tblspc', '16401'));
    // Written and closed, twice (KEEP_VERSIONS): each close-time snapshot is refused.
    for (const n of [11, 12]) {
      await withClient(t.pgConfig('tbs', password), (c) => c.query('insert into t values ($1)', [n]));
      await t.server.registry.close('tbs');
    }
    expect(await t.server.catalog.listVersions('tbs')).toEqual(before);

    const latest = before[0]?.version as string;
    await t.server.manager.restore('tbs', latest);
    await withClient(t.pgConfig('tbs', password), async (c) => {
      expect((await c.query('select count(*)::int as n from t')).rows[0].n).toBe(10);
    });
    expect(await readdir(path.join(t.dataDir, 'tbs', 'pg_tblspc'))).toEqual([]);
  });
});
