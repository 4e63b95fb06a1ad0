import { createHash } from 'node:crypto';
import { open, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Catalog, VersionRecord, WalRecord } from '../catalog/catalog.js';
import type { Logger } from '../log.js';
import { type FileFlush, flushNow } from '../pgdata/file-flush.js';
import { requireWalReplay } from '../pgdata/pg-control.js';
import { ArchiveKeyExistsError, type ArchiveStore } from './archive.js';

/**
 * A database's WAL in the archive, as immutable pieces `<id>/wal/<start>-<end>-<seq>` (hex) of
 * the bytes PGlite wrote into `pg_wal`, each recorded in the catalog with its sha256. A database
 * comes back from its newest base backup (a snapshot) plus every piece after it: the pieces are
 * written into the segment files and Postgres' crash recovery replays them on open.
 *
 * PGlite writes WAL a page at a time and rewrites the last, partly filled page as it fills, so a
 * piece starts at the beginning of the page that held the last byte of the one before: it repeats
 * that page, with what was added since, and supersedes it when applied in order.
 */

/** Postgres' WAL page size (XLOG_BLCKSZ). */
export const WAL_PAGE = 8192n;
/** Largest piece shipped at once; more WAL is shipped as several pieces. */
const MAX_PIECE = 16n * 1024n * 1024n;

export interface WalObjectsOptions {
  archive: ArchiveStore;
  catalog: Pick<Catalog, 'addWal' | 'listWal' | 'deleteWalBefore' | 'walRange'>;
  logger: Logger;
}

export class WalCorruptError extends Error {}

export class WalObjects {
  constructor(private readonly opts: WalObjectsOptions) {}

  /**
   * Ships the WAL of `dataDir` from `from` (rounded down to its page) to `to`, in pieces of at
   * most 16 MiB; returns the records, each stored and recorded before the next is read.
   */
  async ship(id: string, dataDir: string, from: bigint, to: bigint): Promise<WalRecord[]> {
    const wal = await walLayout(dataDir);
    const records: WalRecord[] = [];
    // The page holding `from`'s last byte may have been rewritten with more records since: ship it again.
    let start = from > 0n ? ((from - 1n) / WAL_PAGE) * WAL_PAGE : 0n;
    while (start < to) {
      const end = to - start > MAX_PIECE ? start + MAX_PIECE : to;
      const bytes = await readWal(wal, start, end);
      const sha256 = createHash('sha256').update(bytes).digest('hex');
      const seq = nextSeq();
      const key = walKey(id, start, end, seq);
      const writtenAt = new Date();
      await this.opts.archive
        .put(key, () => Readable.from([bytes]), bytes.length)
        .catch((err: unknown) => {
          // A retried piece whose first upload got through: the same bytes, or a conflict below.
          if (!(err instanceof ArchiveKeyExistsError)) throw err;
        });
      const record = {
        databaseId: id,
        startLsn: start,
        endLsn: end,
        key,
        sha256,
        sizeBytes: bytes.length,
        writtenAt,
        seq,
      };
      await this.opts.catalog.addWal(record);
      records.push(record);
      start = end;
    }
    return records;
  }

  /** How many pieces continue `base` (shipped after it was frozen): what a fetch replays. */
  async piecesAfter(id: string, base: Pick<VersionRecord, 'walSince' | 'walLsn'>): Promise<number> {
    return (await this.continuing(id, base)).length;
  }

  private async continuing(
    id: string,
    base: Pick<VersionRecord, 'walSince' | 'walLsn'>,
    until?: Date,
  ): Promise<WalRecord[]> {
    return (await this.opts.catalog.listWal(id, base.walLsn ?? 0n)).filter(
      (r) => r.writtenAt > base.walSince && (!until || r.writtenAt <= until),
    );
  }

  /**
   * Writes the pieces of `id`'s WAL that continue `base` (shipped after it was frozen, and by
   * `until` when given) into `dataDir`'s segment files, in order. Each piece's checksum is
   * verified before a byte of it is written; the replay stops at a gap. Returns the pieces
   * applied and where the WAL now ends.
   */
  async replayInto(
    id: string,
    dataDir: string,
    base: Pick<VersionRecord, 'walSince' | 'walLsn'>,
    until?: Date,
    flush: FileFlush = flushNow,
  ): Promise<{ pieces: number; end: bigint | undefined }> {
    const records = await this.continuing(id, base, until);
    if (records.length === 0) return { pieces: 0, end: base.walLsn };
    const wal = await walLayout(dataDir);
    let end: bigint | undefined;
    let pieces = 0;
    // Downloads run ahead of the (ordered) writes, a few pieces at a time: a restore of a lot of
    // WAL is bound by round trips to the archive otherwise. At most PREFETCH pieces are held.
    const fetches = new Map<number, Promise<Buffer>>();
    const fetchAhead = (i: number) => {
      const record = records[i];
      if (!record || fetches.has(i)) return;
      const download = this.download(record);
      download.catch(() => undefined); // awaited in order below; one left behind by a gap is dropped
      fetches.set(i, download);
    };
    for (let i = 0; i < PREFETCH; i++) fetchAhead(i);
    for (const [i, record] of records.entries()) {
      if (end !== undefined && record.startLsn > end) {
        this.opts.logger.warn(
          { db: id, at: end.toString(16), next: record.startLsn.toString(16) },
          'WAL gap; replay stops',
        );
        break;
      }
      const bytes = await (fetches.get(i) ?? this.download(record));
      fetches.delete(i);
      fetchAhead(i + PREFETCH);
      await writeWal(wal, record.startLsn, bytes, flush);
      if (end === undefined || record.endLsn > end) end = record.endLsn;
      pieces++;
    }
    // A base that was shut down cleanly would start without reading the WAL written after it.
    if (pieces > 0) await requireWalReplay(dataDir);
    return { pieces, end };
  }

  /** Removes the pieces shipped before `time` (the oldest kept base's): no restore needs them. */
  async purgeBefore(id: string, time: Date): Promise<void> {
    for (const key of await this.opts.catalog.deleteWalBefore(id, time)) {
      await this.opts.archive.delete(key).catch((err: unknown) => {
        this.opts.logger.warn({ err, key }, 'could not delete a WAL piece; it is no longer recorded');
      });
    }
  }

  /** When the newest shipped piece was read: the latest point a restore can reach. */
  async latestPoint(id: string): Promise<Date | undefined> {
    return (await this.opts.catalog.walRange(id))?.last;
  }

  private async download(record: WalRecord): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const chunk of await this.opts.archive.get(record.key)) chunks.push(chunk as Buffer);
    const bytes = Buffer.concat(chunks);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    if (bytes.length !== record.sizeBytes || sha256 !== record.sha256) {
      throw new WalCorruptError(`WAL piece ${record.key} does not match its checksum; it is never replayed`);
    }
    return bytes;
  }
}

/** WAL pieces downloaded ahead of the one being written during a replay. */
const PREFETCH = 4;

/** Piece keys and ship order: the same page range is shipped again as it fills. */
export function walKey(id: string, start: bigint, end: bigint, seq: bigint): string {
  const hex = (n: bigint) => n.toString(16).padStart(16, '0');
  return `${id}/wal/${hex(start)}-${hex(end)}-${seq.toString(16)}`;
}

let lastSeq = 0n;
/** Increasing across this process and, through the clock, across restarts (microseconds). */
export function nextSeq(): bigint {
  const now = BigInt(Date.now()) * 1000n;
  lastSeq = now > lastSeq ? now : lastSeq + 1n;
  return lastSeq;
}

export interface WalLayout {
  dir: string;
  timeline: string;
  segmentSize: bigint;
}

/** The pg_wal of a data directory: its timeline and segment size, read from its segment files. */
export async function walLayout(dataDir: string): Promise<WalLayout> {
  const dir = path.join(dataDir, 'pg_wal');
  const names = (await readdir(dir)).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
  const last = names.at(-1);
  if (!last) throw new Error(`no WAL segment in ${dir}`);
  const size = (await stat(path.join(dir, last))).size;
  return { dir, timeline: last.slice(0, 8), segmentSize: BigInt(size) };
}

function segmentFile(wal: WalLayout, segno: bigint): string {
  const perLog = 0x1_0000_0000n / wal.segmentSize;
  const hex = (n: bigint) => n.toString(16).toUpperCase().padStart(8, '0');
  return path.join(wal.dir, `${wal.timeline}${hex(segno / perLog)}${hex(segno % perLog)}`);
}

export async function readWal(wal: WalLayout, start: bigint, end: bigint): Promise<Buffer> {
  const out = Buffer.alloc(Number(end - start));
  let at = start;
  while (at < end) {
    const segno = at / wal.segmentSize;
    const offset = at % wal.segmentSize;
    const n = Number((segno + 1n) * wal.segmentSize < end ? wal.segmentSize - offset : end - at);
    const handle = await open(segmentFile(wal, segno), 'r');
    try {
      await handle.read(out, Number(at - start), n, Number(offset));
    } finally {
      await handle.close();
    }
    at += BigInt(n);
  }
  return out;
}

export async function writeWal(
  wal: WalLayout,
  start: bigint,
  bytes: Buffer,
  flush: FileFlush = flushNow,
): Promise<void> {
  let at = start;
  let done = 0;
  while (done < bytes.length) {
    const segno = at / wal.segmentSize;
    const offset = at % wal.segmentSize;
    const n = Math.min(bytes.length - done, Number(wal.segmentSize - offset));
    const file = segmentFile(wal, segno);
    const handle = await open(file, 'a+').then(async (h) => {
      await h.close();
      return open(file, 'r+');
    });
    try {
      // Segments are full-size files: a new one is extended with zeros (the end of the WAL).
      const created = (await handle.stat()).size < Number(wal.segmentSize);
      if (created) await handle.truncate(Number(wal.segmentSize));
      await handle.write(bytes, done, n, Number(offset));
      await flush.file(file, handle);
      if (created) await flush.dir(wal.dir);
    } finally {
      await handle.close();
    }
    done += n;
    at += BigInt(n);
  }
}
