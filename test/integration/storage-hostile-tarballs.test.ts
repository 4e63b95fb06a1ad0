import { cp, lstat, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Catalog } from '../../src/catalog/catalog.js';
import { safeMemberPath } from '../../src/pgdata/extract.js';
import { type PgDataIdentity, readPgDataIdentity, TarballRejectedError } from '../../src/pgdata/tarball.js';
import type { Snapshots } from '../../src/storage/snapshots.js';
import type { FaultyArchive } from '../helpers/s3.js';
import { fileMode, makeMiniPgData, openSnapshotSuite, s3Mode } from '../helpers/snapshot-suite.js';
import { type TarMember, tarball } from '../helpers/tarballs.js';
import { treeDigest } from '../helpers/tree-digest.js';

/**
 * Uploads of hostile or broken tarballs against real parts: Snapshots over the real AWS SDK talking
 * to s3rver through a fault proxy, and over a file:// archive in a temp dir (both archive kinds run
 * the same suite). Each is rejected with its problem and leaves the database, the archive and the
 * file system as they were. Also the tar member name check on its own.
 */

let root: string;
let templateDir: string;
let identity: PgDataIdentity;
/** A small stand-in (see makeMiniPgData): what the "hostile" database holds locally. */
let miniA: string;
let digestA: string;

const exists = (p: string) =>
  lstat(p).then(
    () => true,
    () => false,
  );

/** The smallest member list that passes PGDATA validation (it would not open, but it validates). */
async function minimalPgData(pgVersion = '18'): Promise<TarMember[]> {
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
  root = await mkdtemp(path.join(tmpdir(), 'storage-hostile-test-'));
  templateDir = inject('templateDir');
  identity = await readPgDataIdentity(templateDir);
  miniA = path.join(root, 'mini-a');
  await makeMiniPgData(templateDir, miniA);
  digestA = await treeDigest(miniA);
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

describe.each([s3Mode(), fileMode()])('$name archive', (mode) => {
  let archive: FaultyArchive;
  let catalog: Catalog;
  let snapshots: Snapshots;
  let dataRoot: string;
  let workDir: string;
  const dirOf = (id: string) => path.join(dataRoot, id);

  /** No temporary directories or spool files were left behind. */
  async function expectNoLeftovers(): Promise<void> {
    expect((await readdir(dataRoot)).filter((n) => n.startsWith('.'))).toEqual([]);
    expect(await readdir(workDir).catch(() => [])).toEqual([]);
  }

  beforeAll(async () => {
    ({ archive, catalog, snapshots, dataRoot, workDir } = await openSnapshotSuite(mode, {
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
