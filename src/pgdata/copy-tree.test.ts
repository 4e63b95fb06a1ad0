import { mkdir, mkdtemp, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { copyTree } from './copy-tree.js';

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'copy-tree-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('copyTree', () => {
  it('copies nested files, modes and symlinks, and skips by name', async () => {
    const src = path.join(root, 'src');
    await mkdir(path.join(src, 'base', '1'), { recursive: true, mode: 0o700 });
    for (let i = 0; i < 50; i++) await writeFile(path.join(src, 'base', '1', `f${i}`), `file ${i}`);
    await writeFile(path.join(src, 'PG_VERSION'), '18\n', { mode: 0o600 });
    await writeFile(path.join(src, '.stamp'), 'skip me');
    await symlink('base/1/f3', path.join(src, 'link'));

    const dest = path.join(root, 'dest');
    await copyTree(src, dest, (name) => name === '.stamp');

    for (let i = 0; i < 50; i++) {
      expect(await readFile(path.join(dest, 'base', '1', `f${i}`), 'utf8')).toBe(`file ${i}`);
    }
    expect((await stat(path.join(dest, 'PG_VERSION'))).mode & 0o777).toBe(0o600);
    expect((await stat(path.join(dest, 'base'))).mode & 0o777).toBe(0o700);
    expect(await readlink(path.join(dest, 'link'))).toBe('base/1/f3');
    await expect(stat(path.join(dest, '.stamp'))).rejects.toThrow();
  });

  it('refuses to copy over an existing directory', async () => {
    const src = path.join(root, 'src');
    await mkdir(src);
    await mkdir(path.join(root, 'dest'));
    await expect(copyTree(src, path.join(root, 'dest'))).rejects.toThrow(/EEXIST/);
  });
});
