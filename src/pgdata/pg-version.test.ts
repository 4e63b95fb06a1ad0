import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hasPgVersion, readPgVersion, readSmallFile } from './pg-version.js';

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'pg-version-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('hasPgVersion / readPgVersion', () => {
  it('finds and reads a PGDATA marker', async () => {
    await writeFile(path.join(root, 'PG_VERSION'), '17\n');
    expect(await hasPgVersion(root)).toBe(true);
    expect(await readPgVersion(root)).toBe('17');
  });

  it('says no for a missing directory, an empty one, or a PG_VERSION that is not a file', async () => {
    expect(await hasPgVersion(path.join(root, 'missing'))).toBe(false);
    expect(await hasPgVersion(root)).toBe(false);
    await expect(readPgVersion(root)).rejects.toThrow(/ENOENT/);

    const dirInstead = path.join(root, 'dir');
    await mkdir(path.join(dirInstead, 'PG_VERSION'), { recursive: true });
    expect(await hasPgVersion(dirInstead)).toBe(false);
    await expect(readPgVersion(dirInstead)).rejects.toThrow(/not a regular file/);

    const linked = path.join(root, 'linked');
    await mkdir(linked);
    await writeFile(path.join(root, 'elsewhere'), '17\n');
    await symlink(path.join(root, 'elsewhere'), path.join(linked, 'PG_VERSION'));
    expect(await hasPgVersion(linked)).toBe(false);
    await expect(readPgVersion(linked)).rejects.toThrow(/not a regular file/);
  });

  it('reads at most the bytes asked for', async () => {
    const file = path.join(root, 'big');
    await writeFile(file, 'x'.repeat(1000));
    expect((await readSmallFile(file, 64)).length).toBe(64);
    expect((await readSmallFile(file, 5000)).length).toBe(1000);
  });
});
