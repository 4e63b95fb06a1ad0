import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * Every path under `dir` with its kind and content, as one digest: two extractions gave the same
 * tree exactly when their digests match. Paths `skip` names (relative) are left out.
 */
export async function treeDigest(dir: string, skip: (rel: string) => boolean = () => false): Promise<string> {
  const hash = createHash('sha256');
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  const files = entries
    .map((e) => ({ e, rel: path.relative(dir, path.join(e.parentPath, e.name)) }))
    .filter(({ rel }) => !skip(rel))
    .sort((a, b) => (a.rel < b.rel ? -1 : 1));
  for (const { e, rel } of files) {
    hash.update(`${rel}\0${e.isDirectory() ? 'd' : 'f'}\0`);
    if (e.isFile()) hash.update(await readFile(path.join(dir, rel)));
  }
  return hash.digest('hex');
}
