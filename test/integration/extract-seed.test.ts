import { cp, mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stageTarball } from '../../src/pgdata/extract.js';
import { packDataDir } from '../../src/pgdata/tarball.js';
import { treeDigest } from '../helpers/tree-digest.js';

describe('extraction over a seed directory (a spare copy of the template)', () => {
  let root: string;
  let source: string;

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'extract-seed-'));
    // The "database": the template with a changed file, a new relation file and a removed one.
    source = path.join(root, 'source');
    await cp(inject('templateDir'), source, { recursive: true });
    await writeFile(path.join(source, 'base', 'added-relation'), 'new data');
    await writeFile(path.join(source, 'postgresql.auto.conf'), '# changed\n');
    const [dropped] = (await readdir(path.join(source, 'global'))).filter((n) => /^\d+$/.test(n));
    await rm(path.join(source, 'global', dropped as string));
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const stage = (target: string, seed?: (dir: string) => Promise<boolean>) =>
    stageTarball(packDataDir(source), target, { maxBytes: 1e9, fsync: false, ...(seed ? { seed } : {}) });

  it('gives exactly what an extraction into an empty directory gives', async () => {
    const plain = await stage(path.join(root, 'plain'));
    // A seed with leftovers the tarball does not have: a stray file, a stray directory, stale content.
    const spare = path.join(root, 'spare');
    await cp(inject('templateDir'), spare, { recursive: true });
    await mkdir(path.join(spare, 'base', 'stray-dir'));
    await writeFile(path.join(spare, 'base', 'stray-dir', 'f'), 'x');
    await writeFile(path.join(spare, 'base', 'stray-file'), 'x');
    let seeded = 0;
    const over = await stage(path.join(root, 'seeded'), async (dir) => {
      seeded++;
      await rename(spare, dir);
      return true;
    });
    expect(seeded).toBe(1);
    expect(await treeDigest(over.dir)).toBe(await treeDigest(plain.dir));
    expect(over.sha256).toBe(plain.sha256);
  });

  it('falls back to an empty directory when no seed is ready, or the seed fails', async () => {
    const plain = await stage(path.join(root, 'plain2'));
    const none = await stage(path.join(root, 'none'), async () => false);
    const broken = await stage(path.join(root, 'broken'), async () => {
      throw new Error('no spare');
    });
    expect(await treeDigest(none.dir)).toBe(await treeDigest(plain.dir));
    expect(await treeDigest(broken.dir)).toBe(await treeDigest(plain.dir));
  });
});
