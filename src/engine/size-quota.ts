import { fstatSync, lstatSync, readdirSync } from 'node:fs';
import path from 'node:path';
import type { PgliteModule } from './deferred-fs.js';

/**
 * MAX_DATABASE_SIZE: a bound on what one database's tables, indexes and temporary files take on
 * the node's disk, which every database of the node shares. A tenant filling it would make every
 * other database fail its writes, and Postgres PANICs when it cannot write WAL.
 *
 * Counted: the files under `base/` (relations, their forks, and `base/pgsql_tmp` spill files).
 * Not counted: WAL (recycled, and bounded by MAX_WAL_BACKLOG), the SLRUs and the control file, so
 * a refusal can never land where Postgres would PANIC. Past the limit, a write that would make a
 * counted file longer than SMALL_FILE_BYTES fails with ENOSPC, which Postgres reports as an ERROR `53100 could not
 * extend file ...: No space left on device` for that statement; the database goes on, reads work,
 * and DELETE + VACUUM, TRUNCATE and DROP give space back. Nothing is refused while the database
 * starts (crash recovery must always finish): counting begins once it is open.
 *
 * The size is walked once after the open, then kept up to date from the writes, truncations,
 * renames and unlinks that pass through Emscripten's NODEFS in this worker.
 */

interface Stream {
  nfd?: number;
  node: object;
}
interface Nodefs {
  realPath(node: unknown): string;
  stream_ops: {
    write(stream: Stream, buffer: unknown, offset: number, length: number, position: number): number;
    setattr?(stream: Stream, attr: { size?: number }): void;
  };
  node_ops: {
    unlink(parent: unknown, name: string): void;
    rename(node: unknown, newDir: unknown, newName: string): void;
    setattr(node: unknown, attr: { size?: number }): void;
  };
}

/**
 * Files this short may always grow: a new relation's first pages, an index's metapage, the
 * free-space and visibility maps of a table up to ~256 MB. Without this, a full database could
 * not TRUNCATE (it builds empty indexes) or VACUUM (it sets visibility-map bits) its way back
 * under the limit. Many such files still need catalog rows, whose files are large and refused.
 */
const SMALL_FILE_BYTES = 64 * 1024;

/** Emscripten's errno for ENOSPC (its own numbering, not Linux's). */
const ENOSPC = 51;

export class SizeQuota {
  /** Bytes counted now; undefined while not open (nothing is refused then). */
  private used: number | undefined;
  private root: string | undefined;
  /** Known lengths of counted files, by Emscripten node. */
  private readonly lengths = new WeakMap<object, number>();
  /** Whether a node is a counted file (cached: realPath builds a string). */
  private readonly counted = new WeakMap<object, boolean>();
  private errno: ((code: number) => Error) | undefined;

  constructor(private readonly limitBytes: number) {}

  /** Wraps the module's NODEFS operations (after durable-fs, so this check runs first). */
  install(mod: PgliteModule): void {
    if (this.limitBytes <= 0) return;
    const m = mod as unknown as { NODEFS: Nodefs; FS: { ErrnoError: new (code: number) => Error } };
    const nodefs = m.NODEFS;
    this.errno = (code) => new m.FS.ErrnoError(code);
    const { stream_ops: streams, node_ops: nodes } = nodefs;
    const write = streams.write;
    const streamSetattr = streams.setattr;
    const unlink = nodes.unlink;
    const rename = nodes.rename;
    const nodeSetattr = nodes.setattr;
    streams.write = (stream, buffer, offset, length, position) => {
      if (this.used === undefined || !this.isCounted(nodefs, stream.node)) {
        return write.call(streams, stream, buffer, offset, length, position);
      }
      const before = this.lengthOf(stream);
      const grow = position + length - before;
      this.check(grow, position + length);
      const written = write.call(streams, stream, buffer, offset, length, position);
      if (position + written > before) this.resized(stream.node, before, position + written);
      return written;
    };
    if (streamSetattr) {
      streams.setattr = (stream, attr) => {
        const counting =
          attr.size !== undefined && this.used !== undefined && this.isCounted(nodefs, stream.node);
        const before = counting ? this.lengthOf(stream) : 0;
        // posix_fallocate is an ftruncate here: Postgres extends relations by many pages with it.
        if (counting && attr.size !== undefined) this.check(attr.size - before, attr.size);
        streamSetattr.call(streams, stream, attr);
        if (counting && attr.size !== undefined) this.resized(stream.node, before, attr.size);
      };
    }
    nodes.setattr = (node, attr) => {
      const counting =
        attr.size !== undefined && this.used !== undefined && this.isCounted(nodefs, node as object);
      const before = counting ? fileBytes(nodefs.realPath(node)) : 0;
      nodeSetattr.call(nodes, node, attr);
      if (counting && attr.size !== undefined) this.resized(node as object, before, attr.size);
    };
    nodes.unlink = (parent, name) => {
      const file = this.used === undefined ? undefined : path.join(nodefs.realPath(parent), name);
      const bytes = file && this.inBase(file) ? fileBytes(file) : 0;
      unlink.call(nodes, parent, name);
      if (this.used !== undefined) this.used = Math.max(0, this.used - bytes);
    };
    nodes.rename = (node, newDir, newName) => {
      if (this.used === undefined) return rename.call(nodes, node, newDir, newName);
      // A file moved over another replaces it; one moved into or out of base/ changes the count.
      const from = nodefs.realPath(node);
      const to = path.join(nodefs.realPath(newDir), newName);
      const replaced = this.inBase(to) ? fileBytes(to) : 0;
      const moved = fileBytes(from);
      rename.call(nodes, node, newDir, newName);
      this.counted.delete(node as object);
      this.lengths.delete(node as object);
      this.used = Math.max(
        0,
        this.used - replaced + (this.inBase(to) ? moved : 0) - (this.inBase(from) ? moved : 0),
      );
    };
  }

  /** The database at `root` is open: walk what it holds, and count from here on. */
  opened(root: string): void {
    if (this.limitBytes <= 0) return;
    this.root = path.resolve(root, 'base');
    this.used = treeBytes(this.root);
  }

  closed(): void {
    this.used = undefined;
    this.root = undefined;
  }

  private isCounted(nodefs: Nodefs, node: object): boolean {
    let known = this.counted.get(node);
    if (known === undefined) {
      known = this.inBase(nodefs.realPath(node));
      this.counted.set(node, known);
    }
    return known;
  }

  private inBase(file: string): boolean {
    return this.root !== undefined && path.resolve(file).startsWith(this.root + path.sep);
  }

  private lengthOf(stream: Stream): number {
    let length = this.lengths.get(stream.node);
    if (length === undefined) {
      length = stream.nfd === undefined ? 0 : fstatSync(stream.nfd).size;
      this.lengths.set(stream.node, length);
    }
    return length;
  }

  /** Throws ENOSPC when a counted file may not grow by `grow` bytes to `length`. */
  private check(grow: number, length: number): void {
    if (grow <= 0 || this.used === undefined || length <= SMALL_FILE_BYTES) return;
    if (this.used + grow > this.limitBytes) throw this.errno?.(ENOSPC) ?? new Error('ENOSPC');
  }

  private resized(node: object, before: number, after: number): void {
    this.lengths.set(node, after);
    if (this.used !== undefined) this.used = Math.max(0, this.used + after - before);
  }
}

function fileBytes(file: string): number {
  try {
    return lstatSync(file).size;
  } catch {
    return 0;
  }
}

function treeBytes(dir: string): number {
  let total = 0;
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) total += treeBytes(full);
    else if (entry.isFile()) total += fileBytes(full);
  }
  return total;
}
