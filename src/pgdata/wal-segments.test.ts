import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { unwrittenWalSegments } from './wal-segments.js';

const SEGMENT = 1024 * 1024;

/** A segment file whose first page header says it starts at `pageaddr` (0: never written). */
function segment(pageaddr: bigint, magic = 0xd118): Buffer {
  const bytes = Buffer.alloc(SEGMENT);
  if (pageaddr > 0n) {
    bytes.writeUInt16LE(magic, 0);
    bytes.writeBigUInt64LE(pageaddr, 8);
  }
  return bytes;
}

describe('unwrittenWalSegments', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('names the segments whose first page is not their own: recycled or zero-filled', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'wal-segments-'));
    const wal = path.join(dir, 'pg_wal');
    await mkdir(wal);
    // Segment 7 holds WAL (the current one), 8 is a recycled copy of segment 3, 9 is zeros,
    // 0x101 (log 0, segment 257) holds WAL at its own address.
    await writeFile(path.join(wal, '000000010000000000000007'), segment(7n * BigInt(SEGMENT)));
    await writeFile(path.join(wal, '000000010000000000000008'), segment(3n * BigInt(SEGMENT)));
    await writeFile(path.join(wal, '000000010000000000000009'), segment(0n));
    await writeFile(path.join(wal, '000000010000000000000101'), segment(0x101n * BigInt(SEGMENT)));
    // A segment of log 1 (segment numbers run on across logs: 4096 segments of 1 MB per log).
    await writeFile(path.join(wal, '000000010000000100000002'), segment((4096n + 2n) * BigInt(SEGMENT)));
    // Not segments: left alone.
    await writeFile(path.join(wal, '00000002.history'), 'x');
    await mkdir(path.join(wal, 'archive_status'));
    expect((await unwrittenWalSegments(dir)).sort()).toEqual([
      'pg_wal/000000010000000000000008',
      'pg_wal/000000010000000000000009',
    ]);
  });

  it('leaves everything when no segment holds WAL', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'wal-segments-'));
    await mkdir(path.join(dir, 'pg_wal'));
    await writeFile(path.join(dir, 'pg_wal', '000000010000000000000008'), segment(0n));
    expect(await unwrittenWalSegments(dir)).toEqual([]);
  });
});
