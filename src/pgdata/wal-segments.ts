import { constants } from 'node:fs';
import { open, readdir } from 'node:fs/promises';
import path from 'node:path';

/**
 * WAL segments that hold no WAL. A checkpoint renames segments it no longer needs to future
 * names for reuse, so after a bulk load pg_wal holds a dozen 1 MB segments of stale bytes
 * (`pgbench -i -s 1`: 15 segments, 15 MB of a 30 MB base). Postgres writes a segment from its
 * start, so a segment whose first page header does not carry the segment's own address was
 * never written under its current name: reading WAL stops before it, and Postgres makes a new
 * segment when it gets there. A base can leave such segments out.
 */

const SEGMENT_NAME = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;
/** xlp_magic (uint16) at 0, xlp_pageaddr (uint64, little-endian as WASM writes it) at 8. */
const HEADER_BYTES = 16;

/** Relative paths (`pg_wal/<name>`) of the segments under `dataDir` that hold no WAL. */
export async function unwrittenWalSegments(dataDir: string): Promise<string[]> {
  const dir = path.join(dataDir, 'pg_wal');
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => SEGMENT_NAME.test(n));
  const out: string[] = [];
  let kept = 0;
  for (const name of names) {
    const handle = await open(path.join(dir, name), constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      const { size } = await handle.stat();
      if (size < HEADER_BYTES || size & (size - 1)) {
        kept++; // not a segment Postgres made: left as it is
        continue;
      }
      const header = Buffer.alloc(HEADER_BYTES);
      const { bytesRead } = await handle.read(header, 0, HEADER_BYTES, 0);
      if (bytesRead < HEADER_BYTES) {
        kept++;
        continue;
      }
      const match = SEGMENT_NAME.exec(name) as RegExpExecArray;
      const perLog = 0x1_0000_0000n / BigInt(size);
      const segno = BigInt(`0x${match[2]}`) * perLog + BigInt(`0x${match[3]}`);
      const written = header.readUInt16LE(0) !== 0 && header.readBigUInt64LE(8) === segno * BigInt(size);
      if (written) kept++;
      else out.push(`pg_wal/${name}`);
    } finally {
      await handle.close();
    }
  }
  // No segment with WAL at all is no PGDATA Postgres left behind: leave it as it is.
  return kept > 0 ? out : [];
}
