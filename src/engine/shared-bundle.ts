import type { PgliteModule } from './deferred-fs.js';

/**
 * PGlite's FS bundle (~6 MB: timezone data, ICU, encoding conversions, catalogs) becomes ~1000
 * read-only files in every instance's in-memory filesystem, each a view into the bundle's buffer.
 * Every database worker would hold its own 6 MB copy; instead all workers share one
 * SharedArrayBuffer. Two adjustments make that safe:
 *
 * - Emscripten's loader insists the bundle is an `ArrayBuffer` (by constructor name), so the
 *   worker's handle on the shared buffer reports ArrayBuffer as its constructor.
 * - A write into one of those files would otherwise land in the shared bytes, visible to every
 *   other database. Emscripten's in-memory file writes are wrapped to copy such a file first
 *   (copy on write); truncation and growth already replace the file's buffer.
 */

/** The bundle as one buffer every worker can map. */
export function shareBundle(bytes: Uint8Array): SharedArrayBuffer {
  const shared = new SharedArrayBuffer(bytes.byteLength);
  new Uint8Array(shared).set(bytes);
  return shared;
}

/** What PGlite's `fsBundle` option needs (it only calls arrayBuffer()), backed by the shared buffer. */
export function bundleSource(shared: SharedArrayBuffer): Blob {
  Object.defineProperty(shared, 'constructor', { value: ArrayBuffer, configurable: true });
  const source = { arrayBuffer: async () => shared as unknown as ArrayBuffer };
  return source as unknown as Blob;
}

interface MemfsNode {
  contents?: Uint8Array;
  usedBytes?: number;
}
type StreamWrite = (stream: { node: MemfsNode }, ...rest: unknown[]) => number;
interface Memfs {
  ops_table?: { file?: { stream?: { write?: StreamWrite } } };
}

/** Makes writes to bundle files copy them first. Call once the bundle is unpacked. */
export function copyBundleFilesOnWrite(mod: PgliteModule): void {
  const fileStream = (mod.MEMFS as unknown as Memfs).ops_table?.file?.stream;
  const write = fileStream?.write;
  if (!fileStream || !write)
    throw new Error('unexpected Emscripten MEMFS layout; cannot share the FS bundle');
  fileStream.write = function (this: unknown, stream, ...rest) {
    const node = stream.node;
    if (node.contents && node.contents.buffer instanceof SharedArrayBuffer) {
      node.contents = node.contents.slice(0, node.usedBytes ?? node.contents.length);
    }
    return write.call(this, stream, ...rest);
  };
}

/** Files packed into one shared buffer (see extensions.ts): paths and where their bytes are. */
export interface SharedFiles {
  buffer: SharedArrayBuffer;
  files: { path: string; offset: number; length: number }[];
}

/**
 * Adds `shared`'s files under `root` in a PGlite's filesystem, each a view into the shared buffer
 * (MEMFS keeps a written buffer it may own), so they cost no copy. Call after
 * copyBundleFilesOnWrite: a write to one of them then copies it first, like a bundle file.
 */
export function mapSharedFiles(mod: PgliteModule, root: string, shared: SharedFiles): void {
  const dirs = new Set<string>();
  for (const file of shared.files) {
    const target = `${root}/${file.path}`;
    const dir = target.slice(0, target.lastIndexOf('/'));
    if (!dirs.has(dir)) {
      mod.FS.mkdirTree(dir);
      dirs.add(dir);
    }
    mod.FS.writeFile(target, new Uint8Array(shared.buffer, file.offset, file.length), { canOwn: true });
  }
}
