import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FlushLater } from './file-flush.js';

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'file-flush-'));
});
afterEach(() => rm(root, { recursive: true, force: true }));

describe('FlushLater', () => {
  it('flushes what was recorded, where a rename moved it, with each file directory', async () => {
    const staged = path.join(root, '.db.extract-1');
    await mkdir(path.join(staged, 'base', '5'), { recursive: true });
    const flush = new FlushLater();
    for (const name of ['PG_VERSION', 'base/5/1259', 'base/5/1249']) {
      await writeFile(path.join(staged, name), name);
      await flush.file(path.join(staged, name));
    }
    const dest = path.join(root, 'db');
    await rename(staged, dest);
    flush.moved(staged, dest);
    await flush.dir(root);
    // Three files; their directories (db, db/base/5) and the one recorded.
    expect(await flush.flush()).toEqual({ files: 3, dirs: 3 });
  });

  it('passes over what is gone by the time it flushes', async () => {
    const dir = path.join(root, 'db');
    await mkdir(dir);
    const flush = new FlushLater();
    await writeFile(path.join(dir, 'a'), 'a');
    await flush.file(path.join(dir, 'a'));
    await flush.file(path.join(dir, 'never-written'));
    expect(await flush.flush()).toEqual({ files: 1, dirs: 1 });
    await rm(dir, { recursive: true });
    expect(await flush.flush()).toEqual({ files: 0, dirs: 0 });
  });

  it('leaves alone a path whose name merely starts with the moved directory', async () => {
    const flush = new FlushLater();
    await mkdir(path.join(root, 'db-2'));
    await writeFile(path.join(root, 'db-2', 'x'), 'x');
    await flush.file(path.join(root, 'db-2', 'x'));
    flush.moved(path.join(root, 'db'), path.join(root, 'elsewhere'));
    expect(await flush.flush()).toEqual({ files: 1, dirs: 1 });
  });
});
