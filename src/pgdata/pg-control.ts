import { open } from 'node:fs/promises';
import path from 'node:path';

/**
 * global/pg_control, as far as WAL replay needs it. A data directory that was shut down cleanly
 * says so in pg_control, and Postgres then starts without reading the WAL after its last
 * checkpoint. When shipped WAL has been written on top of such a base, it must be replayed: the
 * state is set back to "in production", as if the server had crashed, so Postgres' crash
 * recovery replays every valid record after the checkpoint.
 *
 * ControlFileData starts with system_identifier (8 bytes), pg_control_version (4),
 * catalog_version_no (4), then `state` (an int32 at offset 16), and ends with a CRC-32C of all the
 * bytes before it. The CRC's offset differs between versions, so it is found by checking where a
 * CRC of the preceding bytes is stored.
 */

const STATE_OFFSET = 16;
/** enum DBState */
export const DbState = { Shutdowned: 1, ShutdownedInRecovery: 2, InProduction: 6 } as const;

/** Makes Postgres replay the WAL after the last checkpoint on its next start. Returns whether it changed anything. */
export async function requireWalReplay(dataDir: string): Promise<boolean> {
  const file = path.join(dataDir, 'global', 'pg_control');
  const handle = await open(file, 'r+');
  try {
    const bytes = Buffer.alloc(1024);
    const { bytesRead } = await handle.read(bytes, 0, bytes.length, 0);
    const crcAt = findCrc(bytes.subarray(0, bytesRead));
    if (crcAt === undefined) throw new Error(`${file}: no valid checksum found`);
    const state = bytes.readInt32LE(STATE_OFFSET);
    if (state !== DbState.Shutdowned && state !== DbState.ShutdownedInRecovery) return false;
    bytes.writeInt32LE(DbState.InProduction, STATE_OFFSET);
    bytes.writeUInt32LE(crc32c(bytes.subarray(0, crcAt)), crcAt);
    await handle.write(bytes, 0, crcAt + 4, 0);
    await handle.sync();
    return true;
  } finally {
    await handle.close();
  }
}

/** The offset of the CRC field: the first 4-aligned offset holding the CRC-32C of the bytes before it. */
export function findCrc(bytes: Buffer): number | undefined {
  for (let at = 64; at + 4 <= bytes.length; at += 4) {
    if (bytes.readUInt32LE(at) === crc32c(bytes.subarray(0, at))) return at;
  }
  return undefined;
}

const TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32C (Castagnoli), as Postgres computes pg_crc32c. */
export function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of bytes) crc = (TABLE[(crc ^ b) & 0xff] as number) ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
