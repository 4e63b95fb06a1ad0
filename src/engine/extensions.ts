import { readdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { SharedFiles } from './shared-bundle.js';

/**
 * Postgres extensions for every database, installed once per process. PGlite ships each contrib
 * extension as a tarball (a WASM side module `lib/postgresql/<module>.so`, its control file and
 * SQL scripts); the packages below add one extension each. PGlite's own way (its `extensions`
 * option) unpacks every tarball into each instance and compiles every `.so` at every start.
 * Instead the main thread unpacks the allowed extensions into one SharedArrayBuffer, and each
 * worker maps those files into its filesystem beside the FS bundle (shared-bundle.ts), without a
 * copy. Postgres reads a control file only on CREATE EXTENSION and loads (compiles) a `.so` on
 * first use, in the databases that use it; the others pay a few hundred small file entries.
 */

/** npm packages holding one extension each (in `dist/*.tar.gz`), besides PGlite's contrib. */
const EXTENSION_PACKAGES = [
  '@electric-sql/pglite-age',
  '@electric-sql/pglite-pg_hashids',
  '@electric-sql/pglite-pg_ivm',
  '@electric-sql/pglite-pg_textsearch',
  '@electric-sql/pglite-pg_uuidv7',
  '@electric-sql/pglite-pgtap',
  '@electric-sql/pglite-pgvector',
];

/**
 * Extensions that work only when loaded at server start (`shared_preload_libraries`), which every
 * database would then pay for at every open. `all` leaves them out; naming one in EXTENSIONS
 * installs it and preloads it in every database.
 */
export const PRELOADED_EXTENSIONS: readonly string[] = ['pg_stat_statements', 'pg_textsearch'];

/** One name of EXTENSIONS: an extension (control file) or a module loaded with LOAD. */
export interface ExtensionPackage {
  name: string;
  /** `extension`: created with CREATE EXTENSION; `module`: a library for LOAD (auto_explain). */
  kind: 'extension' | 'module';
  /** Paths relative to PGlite's install prefix (`/pglite`), and their bytes. */
  files: Map<string, Uint8Array>;
}

const EXTENSION_DIR = 'share/postgresql/extension/';
const LIB_DIR = 'lib/postgresql/';
/** Dictionary and rule files (unaccent.rules): shipped with the extensions of their tarball. */
const TSEARCH_DIR = 'share/postgresql/tsearch_data/';

/** The regular files of a (gzipped) ustar archive. Enough for PGlite's extension tarballs. */
export function untar(gz: Uint8Array): Map<string, Uint8Array> {
  const tar = gunzipSync(gz);
  const files = new Map<string, Uint8Array>();
  const text = (at: number, length: number) =>
    tar.toString('utf8', at, at + length).replace(/\0[\s\S]*$/, '');
  let longName: string | undefined;
  for (let at = 0; at + 512 <= tar.length; ) {
    const name = text(at, 100);
    if (name === '') break; // the zero blocks that end the archive
    const size = Number.parseInt(text(at + 124, 12).trim() || '0', 8);
    const type = text(at + 156, 1) || '0';
    const prefix = text(at + 257, 6).startsWith('ustar') ? text(at + 345, 155) : '';
    const body = tar.subarray(at + 512, at + 512 + size);
    if (!Number.isFinite(size) || body.length !== size) throw new Error('truncated extension tarball');
    if (type === 'L') longName = text(at + 512, size);
    else {
      const member = (longName ?? (prefix ? `${prefix}/${name}` : name)).replace(/^\.\//, '');
      longName = undefined;
      if (member.startsWith('/') || member.split('/').includes('..'))
        throw new Error(`unsafe path in extension tarball: ${member}`);
      if (type === '0' || type === '7') files.set(member, body);
    }
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

/** The extensions and modules of one tarball. */
export function packagesOf(files: Map<string, Uint8Array>): ExtensionPackage[] {
  const shared = [...files].filter(([p]) => p.startsWith(TSEARCH_DIR));
  const used = new Set<string>();
  const found: ExtensionPackage[] = [];
  for (const [file, bytes] of files) {
    const control = file.startsWith(EXTENSION_DIR)
      ? /^([^/]+)\.control$/.exec(file.slice(EXTENSION_DIR.length))
      : null;
    const name = control?.[1];
    if (!name) continue;
    const own = new Map<string, Uint8Array>([[file, bytes], ...shared]);
    for (const [p, b] of files)
      if (p.startsWith(`${EXTENSION_DIR}${name}--`) && p.endsWith('.sql')) own.set(p, b);
    const module = /^\s*module_pathname\s*=\s*'\$libdir\/([^']+)'/m.exec(
      Buffer.from(bytes).toString('utf8'),
    )?.[1];
    const library = module && files.get(`${LIB_DIR}${module}.so`);
    if (module && library) {
      own.set(`${LIB_DIR}${module}.so`, library);
      used.add(module);
    }
    found.push({ name, kind: 'extension', files: own });
  }
  for (const [file, bytes] of files) {
    const module = file.startsWith(LIB_DIR)
      ? /^([^/]+)\.so$/.exec(file.slice(LIB_DIR.length))?.[1]
      : undefined;
    if (module && !used.has(module))
      found.push({ name: module, kind: 'module', files: new Map([[file, bytes]]) });
  }
  return found;
}

/** Every extension PGlite and the extension packages ship, by name. */
export async function loadCatalog(): Promise<Map<string, ExtensionPackage>> {
  const require = createRequire(import.meta.url);
  const dirs = [path.dirname(require.resolve('@electric-sql/pglite'))];
  for (const pkg of EXTENSION_PACKAGES) dirs.push(path.dirname(require.resolve(pkg)));
  const tarballs: string[] = [];
  for (const dir of dirs) {
    const names = (await readdir(dir)).filter((n) => n.endsWith('.tar.gz')).sort();
    tarballs.push(...names.map((n) => path.join(dir, n)));
  }
  const catalog = new Map<string, ExtensionPackage>();
  for (const tarball of tarballs) {
    // Should PGlite itself ship one of the packages' extensions one day, its own copy wins.
    for (const pkg of packagesOf(untar(await readFile(tarball))))
      if (!catalog.has(pkg.name)) catalog.set(pkg.name, pkg);
  }
  return catalog;
}

/** The allowed extensions' files in one shared buffer, and what the workers must preload. */
export interface ExtensionBundle extends SharedFiles {
  /** Names installed, sorted. */
  names: string[];
  /** Libraries for `shared_preload_libraries`. */
  preload: string[];
}

/**
 * Packs the extensions `allowed` names into a bundle; `all` stands for every one but
 * PRELOADED_EXTENSIONS. Throws on a name nothing ships.
 */
export function bundleExtensions(
  catalog: Map<string, ExtensionPackage>,
  allowed: readonly string[],
): ExtensionBundle {
  const all = allowed.includes('all')
    ? [...catalog.keys()].filter((n) => !PRELOADED_EXTENSIONS.includes(n))
    : [];
  const names = [...new Set([...all, ...allowed.filter((n) => n !== 'all')])];
  const unknown = names.filter((n) => !catalog.has(n));
  if (unknown.length > 0) {
    const known = [...catalog.keys()].sort().join(', ');
    throw new Error(`EXTENSIONS names unknown extensions: ${unknown.join(', ')} (known: ${known})`);
  }
  const files = new Map<string, Uint8Array>();
  for (const name of names) for (const [p, b] of catalog.get(name)?.files ?? []) files.set(p, b);
  let size = 0;
  for (const b of files.values()) size += b.byteLength;
  const buffer = new SharedArrayBuffer(size);
  const view = new Uint8Array(buffer);
  const index: SharedFiles['files'] = [];
  let offset = 0;
  for (const [p, b] of files) {
    view.set(b, offset);
    index.push({ path: p, offset, length: b.byteLength });
    offset += b.byteLength;
  }
  return {
    buffer,
    files: index,
    names: names.sort(),
    preload: names.filter((n) => PRELOADED_EXTENSIONS.includes(n)),
  };
}
