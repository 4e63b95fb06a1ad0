import { closeSync, fdatasyncSync, fsyncSync, openSync } from 'node:fs';
import path from 'node:path';
import type { PgliteModule } from './deferred-fs.js';

/**
 * PGlite never calls fsync: its WASM file system (Emscripten's NODEFS) drops it, so a commit has
 * reached the kernel but not the disk. This layer, installed in the database's worker, does what
 * Postgres' own fsync discipline would, from outside PGlite:
 *
 * - WAL: files under pg_wal written since the last flush are fdatasync'ed (and pg_wal itself
 *   fsync'ed when a segment was created) by `flushWal()`, which the worker calls before it posts
 *   any reply, so a client hears of its commit only once the commit's WAL is on disk.
 * - Data files: written pages are fdatasync'ed before pg_control is written (a checkpoint must not
 *   point past pages that are not durable) and before a WAL segment is removed or recycled (the
 *   WAL is what would replay those pages), and before a written file is closed.
 *
 * It also reports how far the WAL was written (`onWalWrite`), which WAL shipping reads.
 */

/** Counters shared with the gateway (Int32Array over a SharedArrayBuffer). */
export const DurabilityCounter = { WalSyncs: 0, DataSyncs: 0 } as const;
export const DURABILITY_COUNTERS = 2;

/**
 * A worker's WAL slots (BigInt64s over a SharedArrayBuffer of WAL_SLOTS_BYTES): how far its WAL
 * was written, how many writes were made and begun, and the gate an interrupt closes (engine.ts).
 */
export const WalSlot = { End: 0, Writes: 1, WritesBegun: 2, Gate: 3 } as const;
export const WAL_SLOTS_BYTES = 32;

interface NodefsStream {
  nfd?: number;
  node: unknown;
  shared: { refcount: number };
}
interface Nodefs {
  realPath(node: unknown): string;
  stream_ops: {
    write(stream: NodefsStream, buffer: unknown, offset: number, length: number, position: number): number;
    close(stream: NodefsStream): void;
  };
  node_ops: {
    unlink(parent: unknown, name: string): void;
    rename(node: unknown, newDir: unknown, newName: string): void;
    mknod(parent: unknown, name: string, mode: number, dev: number): unknown;
  };
}

type Kind = 'wal' | 'control' | 'data';

export interface DurableFsOptions {
  /** FSYNC=on: make writes durable as described above. Off: only report WAL writes. */
  fsync: boolean;
  /** Counters to bump (DurabilityCounter), shared with the gateway. */
  counters?: Int32Array;
  /** The WAL was written up to this LSN. */
  onWalWrite?: (lsn: bigint) => void;
  /** Called before each WAL write; it may block the write (see the worker's WAL gate). */
  beforeWalWrite?: () => void;
}

export class DurableFs {
  private readonly walDirty = new Map<number, string>();
  private readonly dataDirty = new Map<number, string>();
  private readonly dirsDirty = new Set<string>();
  private walDirDirty = false;
  private readonly kinds = new WeakMap<object, { kind: Kind; file: string }>();
  private nodefs: Nodefs | undefined;

  constructor(private readonly opts: DurableFsOptions) {}

  /** Wraps the module's NODEFS operations; call before the data directory is mounted. */
  install(mod: PgliteModule): void {
    const nodefs = (mod as unknown as { NODEFS: Nodefs }).NODEFS;
    this.nodefs = nodefs;
    const { stream_ops: streams, node_ops: nodes } = nodefs;
    const write = streams.write;
    const close = streams.close;
    const unlink = nodes.unlink;
    const rename = nodes.rename;
    const mknod = nodes.mknod;
    streams.write = (stream, buffer, offset, length, position) => {
      const { kind, file } = this.classify(stream);
      if (kind === 'wal') this.opts.beforeWalWrite?.();
      if (kind === 'control' && this.opts.fsync) this.syncData();
      const written = write.call(streams, stream, buffer, offset, length, position);
      const fd = stream.nfd;
      if (fd !== undefined && written > 0) {
        if (kind === 'wal') {
          this.walDirty.set(fd, file);
          const lsn = walLsn(path.basename(file), position + written, this.segmentBytes);
          if (lsn !== undefined) this.opts.onWalWrite?.(lsn);
        } else {
          this.dataDirty.set(fd, file);
        }
      }
      return written;
    };
    streams.close = (stream) => {
      const fd = stream.nfd;
      if (fd !== undefined && stream.shared.refcount === 1 && this.opts.fsync) {
        // The last reference: sync what it wrote while the descriptor is still open.
        if (this.walDirty.delete(fd)) this.sync(fd, 'wal');
        if (this.dataDirty.delete(fd)) this.sync(fd, 'data');
      } else if (fd !== undefined && stream.shared.refcount === 1) {
        this.walDirty.delete(fd);
        this.dataDirty.delete(fd);
      }
      close.call(streams, stream);
    };
    nodes.unlink = (parent, name) => {
      if (this.opts.fsync && this.isWalDir(parent)) this.syncData();
      unlink.call(nodes, parent, name);
    };
    nodes.rename = (node, newDir, newName) => {
      if (this.opts.fsync && this.isWalDir(newDir)) this.syncData();
      rename.call(nodes, node, newDir, newName);
      // New WAL segments are written as xlogtemp.* and renamed: learn the new name.
      this.kinds.delete(node as object);
      if (this.isWalDir(newDir)) this.walDirDirty = true;
      else this.dirsDirty.add(this.realPath(newDir));
    };
    nodes.mknod = (parent, name, mode, dev) => {
      const created = mknod.call(nodes, parent, name, mode, dev);
      if (this.isWalDir(parent)) this.walDirDirty = true;
      else this.dirsDirty.add(this.realPath(parent));
      return created;
    };
  }

  /** Makes the WAL written so far durable; call before any reply leaves the worker. */
  flushWal(): void {
    if (!this.opts.fsync) {
      this.walDirty.clear();
      return;
    }
    for (const fd of this.walDirty.keys()) this.sync(fd, 'wal');
    this.walDirty.clear();
    if (this.walDirDirty) {
      const dir = [...this.knownWalDirs()][0];
      if (dir) this.syncDir(dir);
      this.walDirDirty = false;
    }
  }

  /** Makes every written data file (and created directory entry) durable. */
  syncData(): void {
    for (const fd of this.dataDirty.keys()) this.sync(fd, 'data');
    this.dataDirty.clear();
    for (const dir of this.dirsDirty) this.syncDir(dir);
    this.dirsDirty.clear();
  }

  /** Everything: at a clean close. */
  syncAll(): void {
    if (!this.opts.fsync) return;
    this.flushWal();
    this.syncData();
  }

  private readonly walDirs = new Set<string>();
  private segmentBytes = 0;

  /** The open database's wal_segment_size; 0 (unknown) stops WAL positions being reported. */
  setSegmentSize(bytes: number): void {
    this.segmentBytes = bytes;
  }

  private knownWalDirs(): Set<string> {
    return this.walDirs;
  }

  private classify(stream: NodefsStream): { kind: Kind; file: string } {
    const known = this.kinds.get(stream.node as object);
    if (known) return known;
    const file = this.realPath(stream.node);
    const dir = path.dirname(file);
    const kind: Kind =
      path.basename(dir) === 'pg_wal' ? 'wal' : path.basename(file) === 'pg_control' ? 'control' : 'data';
    if (kind === 'wal') this.walDirs.add(dir);
    const entry = { kind, file };
    this.kinds.set(stream.node as object, entry);
    return entry;
  }

  private isWalDir(dirNode: unknown): boolean {
    return path.basename(this.realPath(dirNode)) === 'pg_wal';
  }

  private realPath(node: unknown): string {
    return this.nodefs?.realPath(node) ?? '';
  }

  private sync(fd: number, kind: 'wal' | 'data'): void {
    try {
      fdatasyncSync(fd);
    } catch {
      // A descriptor closed under us: its data went through close(), which synced it.
      return;
    }
    const counters = this.opts.counters;
    if (counters)
      Atomics.add(counters, kind === 'wal' ? DurabilityCounter.WalSyncs : DurabilityCounter.DataSyncs, 1);
  }

  private syncDir(dir: string): void {
    let fd: number | undefined;
    try {
      fd = openSync(dir, 'r');
      fsyncSync(fd);
    } catch {
      // A directory that went away (a dropped database's) has nothing left to make durable.
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }
}

/**
 * The LSN of byte `offset` of WAL segment file `name` (24 hex digits: timeline, log, segment),
 * for segments of `segmentSize` bytes; undefined for other files (.history, .partial) or an
 * unknown size.
 */
export function walLsn(name: string, offset: number, segmentSize: number): bigint | undefined {
  if (!/^[0-9A-F]{24}$/.test(name) || segmentSize <= 0) return undefined;
  const log = BigInt(Number.parseInt(name.slice(8, 16), 16));
  const seg = BigInt(Number.parseInt(name.slice(16, 24), 16));
  const perLog = 0x1_0000_0000n / BigInt(segmentSize);
  return (log * perLog + seg) * BigInt(segmentSize) + BigInt(offset);
}
