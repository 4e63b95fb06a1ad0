import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { cp, lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { PGlite } from '@electric-sql/pglite';
import { createScramSha256Data } from 'pg-gateway';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Catalog, VersionRecord } from '../../src/catalog/catalog.js';
import { openEmbeddedCatalog } from '../../src/catalog/embedded.js';
import { safeMemberPath } from '../../src/pgdata/extract.js';
import { type PgDataIdentity, readPgDataIdentity, TarballRejectedError } from '../../src/pgdata/tarball.js';
import { createFromTemplate } from '../../src/pgdata/template.js';
import { ArchiveKeyExistsError, ArchiveNotFoundError, type ArchiveStore } from '../../src/storage/archive.js';
import { openArchive } from '../../src/storage/open-archive.js';
import { Snapshots, versionKey } from '../../src/storage/snapshots.js';
import { FaultyArchive, OBJECT_PATH, startS3, type TestS3 } from '../helpers/s3.js';

/**
 * The storage layer against real parts: real PGlite data directories, the real AWS SDK talking to
 * s3rver through a fault proxy, and a file:// archive in a temp dir with the same faults injected
 * by a decorator. Both archive kinds run the same suite.
 */

const logger = pino({ level: 'silent' });
const KEEP = 3;

let root: string;
let templateDir: string;
let identity: PgDataIdentity;
/** A real PGDATA made once, table t with 3 rows; never opened again. */
let fixtureV1: string;
let digestV1: string;
/**
 * Small stand-ins (about 1.5 MB archived) for tests about bytes rather than PostgreSQL: the files
 * PGDATA validation looks at, copied from the template, plus a different incompressible relation
 * file in each, so archives are big enough to cut in the middle and fast to pack.
 */
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

/**
 * sha256 over every path and file content under `dir`: equal digests mean the same data directory.
 * Cheaper than opening PGlite, and PGlite would change the files it opens.
 */
async function treeDigest(dir: string): Promise<string> {
  const hash = createHash('sha256');
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  const files = entries
    .map((e) => ({ e, rel: path.relative(dir, path.join(e.parentPath, e.name)) }))
    .sort((a, b) => (a.rel < b.rel ? -1 : 1));
  for (const { e, rel } of files) {
    hash.update(`${rel}\0${e.isDirectory() ? 'd' : 'f'}\0`);
    if (e.isFile()) hash.update(await readFile(path.join(dir, rel)));
  }
  return hash.digest('hex');
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

// --- hand-made tar members, for tarballs the tar package would refuse to write -----------------

function tarHeader(name: string, type: string, size: number, linkname = ''): Buffer {
  const header = Buffer.alloc(512);
  const octal = (n: number, width: number) => `${n.toString(8).padStart(width - 1, '0')}\0`;
  header.write(name, 0, 100, 'utf8');
  header.write(octal(type === '5' ? 0o755 : 0o644, 8), 100);
  header.write(octal(0, 8), 108);
  header.write(octal(0, 8), 116);
  header.write(octal(size, 12), 124);
  header.write(octal(Math.floor(Date.now() / 1000), 12), 136);
  header.fill(' ', 148, 156);
  header.write(type, 156);
  header.write(linkname, 157, 100, 'utf8');
  header.write('ustar\0', 257);
  header.write('00', 263);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return header;
}

type Member = { name: string; type?: string; body?: Buffer; linkname?: string };

function tarball(members: Member[]): Buffer {
  const parts: Buffer[] = [];
  for (const m of members) {
    const body = m.body ?? Buffer.alloc(0);
    parts.push(tarHeader(m.name, m.type ?? '0', body.length, m.linkname));
    parts.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** The smallest member list that passes PGDATA validation (it would not open, but it validates). */
async function minimalPgData(pgVersion = '18'): Promise<Member[]> {
  return [
    { name: '/PG_VERSION', body: Buffer.from(`${pgVersion}\n`) },
    { name: '/global', type: '5' },
    { name: '/global/pg_control', body: await readFile(path.join(templateDir, 'global', 'pg_control')) },
    {
      name: '/global/pg_filenode.map',
      body: await readFile(path.join(templateDir, 'global', 'pg_filenode.map')),
    },
    { name: '/base', type: '5' },
    { name: '/pg_wal', type: '5' },
  ];
}

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'storage-test-'));
  templateDir = inject('templateDir');
  identity = await readPgDataIdentity(templateDir);
  fixtureV1 = path.join(root, 'fixture-v1');
  await createFromTemplate(templateDir, fixtureV1);
  await addRows(fixtureV1, 3);
  digestV1 = await treeDigest(fixtureV1);
  miniA = path.join(root, 'mini-a');
  miniB = path.join(root, 'mini-b');
  for (const dir of [miniA, miniB]) {
    for (const sub of ['global', 'base/1', 'pg_wal']) await mkdir(path.join(dir, sub), { recursive: true });
    for (const file of ['PG_VERSION', 'global/pg_control', 'global/pg_filenode.map']) {
      await cp(path.join(templateDir, file), path.join(dir, file));
    }
    await writeFile(path.join(dir, 'base/1/16384'), randomBytes(1536 * 1024));
  }
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

describe('tar member names', () => {
  it('re-roots absolute names and refuses .. components', () => {
    expect(safeMemberPath('/PG_VERSION')).toBe('PG_VERSION');
    expect(safeMemberPath('./base/1/112')).toBe('base/1/112');
    expect(safeMemberPath('//etc/passwd')).toBe('etc/passwd');
    expect(() => safeMemberPath('../x')).toThrow(TarballRejectedError);
    expect(() => safeMemberPath('base/../../x')).toThrow(TarballRejectedError);
    expect(() => safeMemberPath('/..')).toThrow(TarballRejectedError);
    expect(() => safeMemberPath('a\\..\\b')).toThrow(TarballRejectedError);
  });
});

describe('archive stores', () => {
  let s3: TestS3;
  beforeAll(async () => {
    s3 = await startS3();
  });
  afterAll(async () => {
    await s3?.close();
  });

  it('openArchive chooses by scheme and refuses what it does not know', async () => {
    expect(await openArchive(undefined)).toBeUndefined();
    expect(await openArchive('')).toBeUndefined();
    const file = await openArchive(pathToFileURL(path.join(root, 'x')).href);
    expect(file?.describe()).toBe(`file://${path.join(root, 'x')}`);
    const bucket = await openArchive('s3://my-bucket/some/prefix/', {
      s3: { endpoint: 'http://127.0.0.1:9' },
    });
    expect(bucket?.describe()).toBe('s3://my-bucket/some/prefix at http://127.0.0.1:9');
    await bucket?.close();
    await expect(openArchive('gs://bucket')).rejects.toThrow(/not supported/);
    await expect(openArchive('not a url')).rejects.toThrow(/not a URL/);
    await expect(openArchive('s3://key:secret@bucket/x')).rejects.toThrow(/AWS_ACCESS_KEY_ID/);
  });

  it('s3: multipart upload survives a connection dropped mid-part, and objects are never overwritten', async () => {
    const archive = (await openArchive(`s3://${s3.bucket}/mp`, {
      s3: {
        endpoint: s3.endpoint,
        ...s3.credentials,
        partSize: 5 * 1024 * 1024,
        maxAttempts: 1,
        retries: 2,
        retryBaseMs: 10,
      },
    })) as ArchiveStore;
    try {
      const data = randomBytes(12 * 1024 * 1024);
      // With SDK retries off, only the archive's own whole-operation retry can recover.
      s3.proxy.dropUpload(1024 * 1024, { path: /partNumber=2/ });
      await archive.put(
        'db/v1.tar.gz',
        () => Readable.from([data.subarray(0, 6e6), data.subarray(6e6)]),
        data.length,
      );
      expect(s3.proxy.injected.dropUpload).toBe(1);
      expect(s3.proxy.requests.some((r) => r.startsWith('POST') && r.includes('uploads'))).toBe(true);
      expect(await archive.head('db/v1.tar.gz')).toEqual({ key: 'db/v1.tar.gz', size: data.length });
      const chunks: Buffer[] = [];
      for await (const chunk of await archive.get('db/v1.tar.gz')) chunks.push(chunk as Buffer);
      expect(Buffer.concat(chunks).equals(data)).toBe(true);

      await expect(
        archive.put('db/v1.tar.gz', () => Readable.from([Buffer.from('x')])),
      ).rejects.toBeInstanceOf(ArchiveKeyExistsError);
      expect((await archive.head('db/v1.tar.gz'))?.size).toBe(data.length);
      await archive.put('db/v2.tar.gz', Readable.from([Buffer.from('two')]));
      expect(await archive.list('db/')).toEqual([
        { key: 'db/v1.tar.gz', size: data.length },
        { key: 'db/v2.tar.gz', size: 3 },
      ]);
      await archive.delete('db/v1.tar.gz');
      await archive.delete('db/v1.tar.gz');
      expect(await archive.head('db/v1.tar.gz')).toBeUndefined();
      await expect(archive.get('db/v1.tar.gz')).rejects.toBeInstanceOf(ArchiveNotFoundError);
      await expect(archive.put('../escape', Readable.from([]))).rejects.toThrow(/invalid archive key/);
    } finally {
      await archive.close();
    }
  });

  it('file: puts are atomic and never overwrite, listing skips temporary files', async () => {
    const dir = path.join(root, 'file-store');
    const archive = (await openArchive(pathToFileURL(dir).href)) as ArchiveStore;
    await archive.put('db/v1.tar.gz', Readable.from([Buffer.from('one')]), 3);
    await expect(archive.put('db/v1.tar.gz', Readable.from([Buffer.from('other')]))).rejects.toBeInstanceOf(
      ArchiveKeyExistsError,
    );
    // A body that breaks leaves no object and no temporary file.
    const broken = new Readable({
      read() {
        this.destroy(new Error('connection reset'));
      },
    });
    await expect(archive.put('db/v2.tar.gz', broken)).rejects.toThrow(/connection reset/);
    await expect(archive.put('db/v3.tar.gz', Readable.from([Buffer.from('abc')]), 5)).rejects.toThrow(
      /expected 5/,
    );
    expect(await readdir(path.join(dir, 'db'))).toEqual(['v1.tar.gz']);
    await writeFile(path.join(dir, 'db', '.v9.tar.gz.tmp-000000000000'), 'partial');
    expect(await archive.list('db/')).toEqual([{ key: 'db/v1.tar.gz', size: 3 }]);
    expect(await archive.list('')).toEqual([{ key: 'db/v1.tar.gz', size: 3 }]);
    expect(await archive.list('other/')).toEqual([]);
    await expect(archive.get('db/none.tar.gz')).rejects.toBeInstanceOf(ArchiveNotFoundError);
  });
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

interface Faults {
  /** The next `n` requests/operations fail with 503. */
  fail(n: number): void;
  dropUpload(afterBytes: number, times?: number): void;
  truncateUpload(toBytes: number, times?: number): void;
  truncateDownload(afterBytes: number, times?: number): void;
  clear(): void;
  /** Faults injected so far. */
  injected(): number;
}

interface Mode {
  name: 's3' | 'file';
  open(): Promise<{ archive: FaultyArchive; faults: Faults }>;
  close(): Promise<void>;
}

function s3Mode(): Mode {
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

function fileMode(): Mode {
  return {
    name: 'file',
    async open() {
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
    const base = path.join(root, mode.name);
    dataRoot = path.join(base, 'data');
    workDir = path.join(base, 'work');
    await mkdir(dataRoot, { recursive: true });
    ({ archive, faults } = await mode.open());
    catalog = await openEmbeddedCatalog({ dir: path.join(base, '_catalog'), templateDir });
    for (const id of ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'empty', 'hostile']) {
      await catalog.createDatabase({ id, username: 'u', scram: await createScramSha256Data('pw') });
    }
    snapshots = new Snapshots({
      archive,
      catalog,
      workDir,
      logger,
      keepVersions: KEEP,
      expect: identity,
      attempts: 3,
      retryBaseMs: 10,
      gzipLevel: 1,
      // fsync per extracted file is the production default and costs about a second per fetch on
      // a busy disk; one mode keeps it so both paths run.
      fsync: mode.name === 's3',
    });
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

  describe('hostile tarballs', () => {
    let outside: string;
    let local: string;

    beforeAll(async () => {
      outside = path.join(root, mode.name, 'outside');
      await mkdir(outside, { recursive: true });
      local = dirOf('hostile');
      await cp(miniA, local, { recursive: true });
    });

    const cases: [string, () => Promise<Buffer>, string][] = [
      [
        'a ../ member',
        async () => tarball([...(await minimalPgData()), { name: '../escaped', body: Buffer.from('x') }]),
        'unsafe-path',
      ],
      [
        'a ../ member deep inside',
        async () =>
          tarball([...(await minimalPgData()), { name: 'base/../../escaped', body: Buffer.from('x') }]),
        'unsafe-path',
      ],
      [
        'an absolute name outside the data directory',
        async () =>
          tarball([
            ...(await minimalPgData()),
            { name: path.join(outside, 'escaped'), body: Buffer.from('x') },
          ]),
        'unsafe-path',
      ],
      [
        'a symlink pointing outside',
        async () =>
          tarball([...(await minimalPgData()), { name: 'base/link', type: '2', linkname: outside }]),
        'link',
      ],
      [
        'a hard link',
        async () =>
          tarball([...(await minimalPgData()), { name: 'base/hard', type: '1', linkname: '/etc/passwd' }]),
        'link',
      ],
      [
        'a fifo',
        async () => tarball([...(await minimalPgData()), { name: 'base/fifo', type: '6' }]),
        'special-file',
      ],
      [
        'a character device',
        async () => tarball([...(await minimalPgData()), { name: 'base/dev', type: '3' }]),
        'special-file',
      ],
      [
        'a tarball that is not a PGDATA',
        async () =>
          tarball([
            { name: 'PG_VERSION', body: Buffer.from('18\n') },
            { name: 'base', type: '5' },
          ]),
        'not-pgdata',
      ],
      [
        'a tarball of something else entirely',
        async () => tarball([{ name: 'README.md', body: Buffer.from('hello') }]),
        'unsafe-path',
      ],
      [
        'a PGDATA of another PostgreSQL major',
        async () => tarball(await minimalPgData('17')),
        'incompatible',
      ],
      [
        'a file where a directory was',
        async () =>
          tarball([
            ...(await minimalPgData()),
            { name: 'base/1', type: '5' },
            { name: 'base/1', body: Buffer.from('x') },
          ]),
        'corrupt',
      ],
      [
        'the same file twice (the two copies would be written at once)',
        async () =>
          tarball([
            ...(await minimalPgData()),
            { name: 'base/1/1259', body: Buffer.alloc(8192, 1) },
            { name: 'base/1/1259', body: Buffer.alloc(8192, 2) },
          ]),
        'corrupt',
      ],
      ['garbage', async () => Buffer.from('this is not a tarball at all'.repeat(100)), 'corrupt'],
      ['truncated gzip', async () => gzipSync(tarball(await minimalPgData())).subarray(0, 200), 'corrupt'],
      ['gzip inside gzip', async () => gzipSync(gzipSync(tarball(await minimalPgData()))), 'corrupt'],
    ];

    it.each(cases)('rejects %s and touches nothing', async (_label, build, problem) => {
      const versions = await snapshots.list('hostile');
      const body = await build();
      const err = await snapshots
        .upload('hostile', Readable.from([body]), { maxBytes: 10e6, destDir: local, replace: true })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TarballRejectedError);
      expect((err as TarballRejectedError).problem).toBe(problem);
      expect(await snapshots.list('hostile')).toEqual(versions);
      expect(await treeDigest(local)).toBe(digestA);
      expect(await readdir(outside)).toEqual([]);
      expect((await readdir(dataRoot)).filter((n) => n.includes('escaped'))).toEqual([]);
      expect(await exists(path.join(root, mode.name, 'escaped'))).toBe(false);
      await expectNoLeftovers();
    });

    it('accepts the same minimal PGDATA without the hostile member (control case)', async () => {
      const body = tarball(await minimalPgData());
      const record = await snapshots.upload('hostile', Readable.from([gzipSync(body)]), { maxBytes: 10e6 });
      expect((await snapshots.list('hostile'))[0]).toEqual(record);
      expect(await treeDigest(local)).toBe(digestA);
    });
  });
});
