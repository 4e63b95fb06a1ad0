import { cp, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { createScramSha256Data } from 'pg-gateway';
import { pino } from 'pino';
import { Header, Parser } from 'tar';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openEmbeddedCatalog } from '../../src/catalog/embedded.js';
import { stageTarball } from '../../src/pgdata/extract.js';
import {
  DELTA_MEMBER,
  packDataDir,
  readPgDataIdentity,
  TarballRejectedError,
} from '../../src/pgdata/tarball.js';
import {
  type DeltaManifest,
  deltaPacking,
  manifestMember,
  parseManifest,
  TemplateFiles,
  type TemplateSource,
} from '../../src/pgdata/template-delta.js';
import type { ArchiveStore } from '../../src/storage/archive.js';
import { openArchive } from '../../src/storage/open-archive.js';
import { templateKey } from '../../src/storage/snapshot-store.js';
import { Snapshots } from '../../src/storage/snapshots.js';
import { startS3, type TestS3 } from '../helpers/s3.js';
import { treeDigest as digestOf } from '../helpers/tree-digest.js';

/** The template's version stamp is not part of a PGDATA's contents. */
const treeDigest = (dir: string) => digestOf(dir, (rel) => rel === '.pglite-version');

/**
 * Delta bases (template-delta.ts): a base leaves out the files its writer's template holds, and a
 * fetch fills them in from the local template, or from the writer's, stored in the archive, when
 * the local one has another version of a file. Every way of filling in must give the source back
 * byte for byte, and a hostile manifest is refused with nothing left behind.
 */

/** The members of a gzip tarball, in order: [path, type]. */
async function members(tarball: Readable): Promise<[string, string][]> {
  const out: [string, string][] = [];
  const parser = new Parser();
  parser.on('entry', (entry) => {
    out.push([entry.path, entry.type]);
    entry.resume();
  });
  await pipeline(tarball, createGunzip(), parser);
  return out;
}

/** Overwrites a few bytes in the middle of a file, keeping its size. */
async function scribble(file: string, text: string): Promise<void> {
  const bytes = await readFile(file);
  bytes.write(text, Math.floor(bytes.length / 2));
  await writeFile(file, bytes);
}

/** Relation files under base/<oid>, sorted: the files a test picks to change. */
async function relationFiles(dir: string): Promise<string[]> {
  const [db] = (await readdir(path.join(dir, 'base'))).sort();
  const files = (await readdir(path.join(dir, 'base', db as string))).filter((n) => /^\d+$/.test(n)).sort();
  return files.map((f) => `base/${db}/${f}`);
}

const leftovers = async (dir: string) => (await readdir(dir)).filter((n) => n.startsWith('.'));

describe('delta bases', () => {
  let root: string;
  let template: string;
  let source: string;
  /** A file the source keeps as the template has it (so a delta leaves it out). */
  let keptFile: string;

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'template-delta-'));
    template = inject('templateDir');
    // The "database": the template with a changed file, a new one, a removed one.
    source = path.join(root, 'source');
    await cp(template, source, { recursive: true });
    const relations = await relationFiles(source);
    await scribble(path.join(source, relations[0] as string), 'changed by the database');
    await writeFile(path.join(source, path.dirname(relations[0] as string), '99999'), 'a new relation');
    await rm(path.join(source, relations[1] as string));
    keptFile = relations[2] as string;
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  /** A copy of the template with `keptFile` in another version: another node's template. */
  async function otherTemplate(name: string): Promise<string> {
    const dir = path.join(root, name);
    await cp(template, dir, { recursive: true });
    await scribble(path.join(dir, keptFile), 'another initdb');
    return dir;
  }

  const pack = (files = new TemplateFiles(template)) => packDataDir(source, { delta: deltaPacking(files) });

  it('packs the manifest first and only the files that differ from the template', async () => {
    const list = await members(pack());
    expect(list[0]).toEqual([DELTA_MEMBER, 'File']);
    const files = list.filter(([, type]) => type === 'File').map(([name]) => name);
    const relations = await relationFiles(source);
    expect(files).toContain(relations[0]);
    expect(files).toContain(path.join(path.dirname(relations[0] as string), '99999'));
    expect(files).not.toContain(keptFile);
    // Only a handful of the ~1,000 files: the changed, the new, and the manifest.
    expect(files.length).toBeLessThan(10);
  });

  it('fills in from the local template, into an empty directory and over a spare, giving the source back', async () => {
    const expected = await treeDigest(source);
    const local: TemplateSource = {
      local: new TemplateFiles(template),
      fetch: () => Promise.reject(new Error('the local template has every file')),
    };
    const plain = await stageTarball(pack(), path.join(root, 'plain'), {
      maxBytes: 1e9,
      fsync: false,
      template: local,
    });
    expect(await treeDigest(plain.dir)).toBe(expected);
    const spare = path.join(root, 'spare');
    await cp(template, spare, { recursive: true });
    const over = await stageTarball(pack(), path.join(root, 'seeded'), {
      maxBytes: 1e9,
      fsync: true,
      template: local,
      seed: async (dir) => {
        await rename(spare, dir);
        return true;
      },
    });
    expect(await treeDigest(over.dir)).toBe(expected);
  });

  it("takes a file the local template has in another version from the writer's template", async () => {
    const expected = await treeDigest(source);
    const local = new TemplateFiles(await otherTemplate('other-local'));
    const writerHash = (await new TemplateFiles(template).contents()).hash;
    const fetched: string[] = [];
    const viaWriter: TemplateSource = {
      local,
      fetch: async (hash) => {
        fetched.push(hash);
        return template;
      },
    };
    const plain = await stageTarball(pack(), path.join(root, 'other-plain'), {
      maxBytes: 1e9,
      template: viaWriter,
    });
    expect(await treeDigest(plain.dir)).toBe(expected);
    const spare = await otherTemplate('other-spare');
    const over = await stageTarball(pack(), path.join(root, 'other-seeded'), {
      maxBytes: 1e9,
      template: viaWriter,
      seed: async (dir) => {
        await rename(spare, dir);
        return true;
      },
    });
    expect(await treeDigest(over.dir)).toBe(expected);
    expect(fetched).toEqual([writerHash, writerHash]);
  });

  it("refuses when the writer's template does not have the recorded file, leaving nothing behind", async () => {
    const local = new TemplateFiles(await otherTemplate('bad-local'));
    const wrongWriter = await otherTemplate('bad-writer');
    const target = path.join(root, 'refused', 'db');
    await mkdir(path.dirname(target));
    const err = await stageTarball(pack(), target, {
      maxBytes: 1e9,
      template: { local, fetch: async () => wrongWriter },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TarballRejectedError);
    expect((err as TarballRejectedError).problem).toBe('corrupt');
    expect(await readdir(path.dirname(target))).toEqual([]);
  });

  describe('hostile manifests', () => {
    const localOnly = (): TemplateSource => ({
      local: new TemplateFiles(template),
      fetch: () => Promise.reject(new Error('no writer template here')),
    });
    const sha = '0'.repeat(64);
    /** A tarball of the source whose leading members are `first`, raw. */
    const withFirst = (first: Buffer) =>
      packDataDir(source, { delta: async () => ({ first, omit: new Set<string>() }) });
    const rawMember = (name: string, body: Buffer) => {
      const header = new Header({
        path: name,
        mode: 0o600,
        size: body.length,
        mtime: new Date(0),
        type: 'File',
      });
      header.encode();
      return Buffer.concat([header.block as Buffer, body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
    };
    const manifest = (files: unknown): Buffer =>
      manifestMember({ format: 1, template: sha, files } as unknown as DeltaManifest);

    it.each([
      ['a path out of the directory', manifest([['../../etc/passwd', sha]]), /escapes/],
      ['a path outside a PGDATA', manifest([['etc/cron.d/job', sha]]), /not part of a PGDATA/],
      ['the manifest naming itself', manifest([[DELTA_MEMBER, sha]]), /no data file/],
      [
        'a file named twice',
        manifest([
          ['PG_VERSION', sha],
          ['./PG_VERSION', sha],
        ]),
        /named twice/,
      ],
      ['a malformed checksum', manifest([['PG_VERSION', 'x']]), /delta manifest refused/],
      ['not JSON', rawMember(DELTA_MEMBER, Buffer.from('{nope')), /not JSON/],
      [
        'a manifest that is not first',
        Buffer.concat([rawMember('PG_VERSION', Buffer.from('18\n')), manifest([])]),
        /first member/,
      ],
      [
        'a file no template has',
        manifest([['base/1/123456789', sha]]),
        /recorded checksum|no writer template/,
      ],
    ])('refuses %s, leaving nothing behind', async (_name, first, message) => {
      const target = path.join(root, 'hostile', 'db');
      await mkdir(path.dirname(target), { recursive: true });
      await expect(
        stageTarball(withFirst(first), target, { maxBytes: 1e9, fsync: false, template: localOnly() }),
      ).rejects.toThrow(message);
      expect(await readdir(path.dirname(target))).toEqual([]);
    });

    it('refuses a delta base when no template is given', async () => {
      const target = path.join(root, 'no-template', 'db');
      await mkdir(path.dirname(target), { recursive: true });
      const err = await stageTarball(pack(), target, { maxBytes: 1e9 }).catch((e: unknown) => e);
      expect((err as TarballRejectedError).problem).toBe('incompatible');
      expect(await leftovers(path.dirname(target))).toEqual([]);
    });

    it('caps the number of files a manifest may name', () => {
      const files = Array.from({ length: 11 }, (_, i) => [`base/1/${i}`, sha]);
      expect(() =>
        parseManifest(Buffer.from(JSON.stringify({ format: 1, template: sha, files })), 10),
      ).toThrow(/more than 10/);
    });
  });

  describe('through the archive (s3rver)', () => {
    let s3: TestS3;
    let archive: ArchiveStore;

    beforeAll(async () => {
      s3 = await startS3();
      archive = (await openArchive(`s3://${s3.bucket}/delta`, {
        s3: { endpoint: s3.directEndpoint, ...s3.credentials },
      })) as ArchiveStore;
    });

    afterAll(async () => {
      await archive?.close();
      await s3?.close();
    });

    it("stores the writer's template before its first base; a node with another template restores the source from it", async () => {
      const base = path.join(root, 'archive');
      const catalog = await openEmbeddedCatalog({ dir: path.join(base, 'catalog'), templateDir: template });
      try {
        await catalog.createDatabase({
          id: 'tenant',
          username: 'u',
          scram: await createScramSha256Data('pw'),
        });
        const identity = await readPgDataIdentity(template);
        const logger = pino({ level: 'silent' });
        const writerFiles = new TemplateFiles(template);
        const writer = new Snapshots({
          archive,
          catalog,
          logger,
          expect: identity,
          workDir: path.join(base, 'writer-work'),
          template: writerFiles,
        });
        const key = templateKey((await writerFiles.contents()).hash);
        expect(await archive.head(key)).toBeUndefined();
        const version = await writer.snapshot('tenant', source);
        expect(await archive.head(key)).toBeDefined();
        // A whole PGDATA is ~3 MB gzipped; the delta holds a few files.
        expect(version.sizeBytes).toBeLessThan(200_000);

        const reader = new Snapshots({
          archive,
          catalog,
          logger,
          expect: identity,
          workDir: path.join(base, 'reader-work'),
          template: new TemplateFiles(await otherTemplate('reader-template')),
        });
        const dest = path.join(base, 'data', 'tenant');
        await reader.fetch('tenant', dest);
        expect(await treeDigest(dest)).toBe(await treeDigest(source));
        expect(await leftovers(path.dirname(dest))).toEqual([]);
        // A second base reuses the stored template.
        await writer.snapshot('tenant', source);
        expect((await archive.list('_templates/')).length).toBe(1);
      } finally {
        await catalog.close();
      }
    });
  });
});
