import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { crc32c, DbState, findCrc, requireWalReplay } from './pg-control.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** A pg_control-like file: state at 16, CRC-32C of the bytes before it at `crcAt`. */
async function control(state: number, crcAt = 296): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'pgctl-'));
  dirs.push(dir);
  await mkdir(path.join(dir, 'global'));
  const bytes = Buffer.alloc(8192);
  bytes.fill(7, 0, crcAt);
  bytes.writeInt32LE(state, 16);
  bytes.writeUInt32LE(crc32c(bytes.subarray(0, crcAt)), crcAt);
  await writeFile(path.join(dir, 'global', 'pg_control'), bytes);
  return dir;
}

describe('pg_control', () => {
  it('computes CRC-32C as Postgres does', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
  });

  it('marks a cleanly shut down directory as needing WAL replay, with a valid checksum', async () => {
    const dir = await control(DbState.Shutdowned);
    expect(await requireWalReplay(dir)).toBe(true);
    const bytes = await readFile(path.join(dir, 'global', 'pg_control'));
    expect(bytes.readInt32LE(16)).toBe(DbState.InProduction);
    expect(findCrc(bytes.subarray(0, 1024))).toBe(296);
  });

  it('leaves a directory that was not shut down cleanly alone', async () => {
    const dir = await control(DbState.InProduction);
    expect(await requireWalReplay(dir)).toBe(false);
  });

  it('refuses a file without a valid checksum', async () => {
    const dir = await control(DbState.Shutdowned);
    const file = path.join(dir, 'global', 'pg_control');
    const bytes = await readFile(file);
    bytes[300] = 1;
    bytes[296] = (bytes[296] as number) ^ 0xff;
    await writeFile(file, bytes);
    await expect(requireWalReplay(dir)).rejects.toThrow(/checksum/);
  });
});
