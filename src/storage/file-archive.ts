import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, lstat, mkdir, open, readdir, rename, rm, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { syncDir } from '../pgdata/file-flush.js';
import { writeAll } from '../pgdata/tarball.js';
import {
  ArchiveKeyExistsError,
  ArchiveNotFoundError,
  type ArchiveObject,
  type ArchiveStore,
  assertValidKey,
  type BodySource,
} from './archive.js';

/**
 * An archive in a directory (`file:///mnt/s3/dbs`): local disk, NFS, or an s3fs-style mount of a
 * bucket. Each object is a file at `<root>/<key>`. A put writes a hidden temporary file in the
 * target directory, fsyncs it, and only then gives it its name, so a reader never sees a partial
 * object under a real key. The final step is `link()`, which fails if the name exists: an object
 * is never overwritten, even by a racing writer. FUSE mounts without hard links (s3fs) fall back
 * to an existence check plus `rename()`, which is safe because keys carry a fresh unique version id.
 */
export class FileArchive implements ArchiveStore {
  constructor(readonly root: string) {}

  static fromUrl(url: URL): FileArchive {
    if (url.host !== '' && url.host !== 'localhost') {
      throw new Error(`file:// archive URLs must name a local path, not host ${url.host}`);
    }
    return new FileArchive(fileURLToPath(url));
  }

  describe(): string {
    return `file://${this.root}`;
  }

  private pathOf(key: string): string {
    assertValidKey(key);
    return path.join(this.root, ...key.split('/'));
  }

  async put(key: string, body: BodySource, size?: number): Promise<void> {
    const file = this.pathOf(key);
    if (await exists(file)) throw new ArchiveKeyExistsError(key);
    const dir = path.dirname(file);
    await mkdir(dir, { recursive: true });
    const tmp = path.join(dir, `.${path.basename(file)}.tmp-${randomBytes(6).toString('hex')}`);
    let stream: Readable | undefined = typeof body === 'function' ? undefined : body;
    try {
      const handle = await open(tmp, 'wx', 0o644);
      try {
        // Made only now, so it is read at once: an error it emits always has a listener.
        stream ??= (body as () => Readable)();
        const written = await writeAll(stream, handle);
        if (size !== undefined && written !== size) {
          throw new Error(`archive put ${key}: wrote ${written} bytes, expected ${size}`);
        }
        await handle.sync();
      } finally {
        await handle.close();
      }
      await publish(tmp, file, key);
      await syncDir(dir);
    } catch (err) {
      stream?.destroy();
      throw err;
    } finally {
      await rm(tmp, { force: true });
    }
  }

  async get(key: string): Promise<Readable> {
    const file = this.pathOf(key);
    const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW).catch(
      (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') throw new ArchiveNotFoundError(key);
        throw err;
      },
    );
    return handle.createReadStream();
  }

  async head(key: string): Promise<ArchiveObject | undefined> {
    const info = await lstat(this.pathOf(key)).catch(() => undefined);
    return info?.isFile() ? { key, size: info.size } : undefined;
  }

  async list(prefix: string): Promise<ArchiveObject[]> {
    assertValidKey(prefix, { prefix: true });
    // Walk from the deepest directory the prefix names completely.
    const slash = prefix.lastIndexOf('/');
    const base = slash < 0 ? '' : prefix.slice(0, slash);
    const found: ArchiveObject[] = [];
    const walk = async (relative: string): Promise<void> => {
      const dir = relative === '' ? this.root : path.join(this.root, ...relative.split('/'));
      const entries = await readdir(dir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return [];
        throw err;
      });
      for (const entry of entries) {
        // Hidden names are temporary files of puts in progress (or left by a crash).
        if (entry.name.startsWith('.')) continue;
        const key = relative === '' ? entry.name : `${relative}/${entry.name}`;
        if (entry.isDirectory()) {
          if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) await walk(key);
        } else if (entry.isFile() && key.startsWith(prefix)) {
          const info = await lstat(path.join(dir, entry.name)).catch(() => undefined);
          if (info) found.push({ key, size: info.size });
        }
      }
    };
    await walk(base);
    return found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(key: string): Promise<void> {
    await unlink(this.pathOf(key)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }

  async close(): Promise<void> {}
}

async function exists(file: string): Promise<boolean> {
  return lstat(file).then(
    () => true,
    () => false,
  );
}

/** Gives the finished temporary file its name without ever replacing an existing object. */
async function publish(tmp: string, file: string, key: string): Promise<void> {
  try {
    await link(tmp, file);
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new ArchiveKeyExistsError(key);
    // No hard links on this file system (s3fs, some FUSE and SMB mounts): check, then rename.
    if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV', 'EMLINK', 'EACCES'].includes(code ?? '')) {
      throw err;
    }
  }
  if (await exists(file)) throw new ArchiveKeyExistsError(key);
  await rename(tmp, file);
}
