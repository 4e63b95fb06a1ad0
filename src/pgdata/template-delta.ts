import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, mkdir, open, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { Header } from 'tar';
import { z } from 'zod';
import type { FileFlush } from './file-flush.js';
import { mapLimited } from './map-limited.js';
import { DELTA_MEMBER, MemberCheck, NOT_ARCHIVED, TarballRejectedError } from './tarball.js';
import { unwrittenWalSegments } from './wal-segments.js';

export { DELTA_MEMBER };

/**
 * Bases that leave out what the template already holds. A database's PGDATA is ~1,000 files, and
 * most of them stay byte for byte what the template made: an empty database differs from it in 5
 * files, a pgbench scale-1 one in 66. Fetching a whole PGDATA meant unpacking 24 MB and writing
 * ~1,000 files (0.3 ms each on a network disk even over a ready copy), most of a second, which
 * every failover and every open of an evicted database paid. A delta base holds only the files
 * that differ, and names the others with their sha256 in a manifest, its first member; the fetch
 * writes the few files over a ready copy of the template (a spare).
 *
 * Templates are built by initdb on each node, so two nodes' templates differ (pg_control and the
 * WAL segment, which every database rewrites anyway). Files are therefore matched by content, not
 * by the template's name: a fetch takes a left-out file from the local template only when its
 * sha256 is the one the manifest names, and otherwise from the writer's template, stored once in
 * the archive under its hash (`templateKey`) before any base that refers to it.
 */

/** A manifest beyond this is refused: 100,000 files (MemberCheck's cap) take ~10 MB. */
export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;

export interface DeltaManifest {
  format: 1;
  /** The hash of the template the left-out files were taken from (`TemplateFiles.hash`). */
  template: string;
  /** The left-out files: relative path and sha256 (hex). */
  files: [string, string][];
}

export interface TemplateFile {
  size: number;
  sha256: string;
}

export interface TemplateContents {
  /** sha256 over every file's path, size and sha256: names this template's contents. */
  hash: string;
  files: Map<string, TemplateFile>;
}

/** Top-level names of a template directory that are not part of any PGDATA's contents. */
const NOT_CONTENT = new Set([...NOT_ARCHIVED, '.pglite-version']);

/** Hashes the files of a PGDATA once (a template never changes while a process runs). */
export class TemplateFiles {
  private loaded: Promise<TemplateContents> | undefined;

  constructor(readonly dir: string) {}

  contents(): Promise<TemplateContents> {
    this.loaded ??= hashTree(this.dir).catch((err: unknown) => {
      this.loaded = undefined;
      throw err;
    });
    return this.loaded;
  }
}

async function listFiles(root: string, relative = ''): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(path.join(root, relative), { withFileTypes: true })) {
    if (relative === '' && NOT_CONTENT.has(entry.name)) continue;
    const name = relative === '' ? entry.name : `${relative}/${entry.name}`;
    if (entry.isDirectory()) out.push(...(await listFiles(root, name)));
    else if (entry.isFile()) out.push(name);
  }
  return out;
}

export async function sha256File(file: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(file))
    .digest('hex');
}

/** Files hashed at once. */
const CONCURRENCY = 16;

async function hashTree(dir: string): Promise<TemplateContents> {
  const names = (await listFiles(dir)).sort();
  const files = new Map<string, TemplateFile>();
  const entries = await mapLimited(names, CONCURRENCY, async (name) => {
    const bytes = await readFile(path.join(dir, name));
    return [name, { size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') }] as const;
  });
  const whole = createHash('sha256');
  for (const [name, file] of entries) {
    files.set(name, file);
    whole.update(`${name}\0${file.size}\0${file.sha256}\n`);
  }
  return { hash: whole.digest('hex'), files };
}

/**
 * Which files of the PGDATA at `dir` are the template's, byte for byte. Only files of the
 * template's size at the same path are read. The directory must not change meanwhile.
 */
export async function planDelta(
  dir: string,
  template: TemplateContents,
): Promise<{ manifest: DeltaManifest; omit: Set<string> }> {
  const candidates = (await listFiles(dir)).filter((name) => template.files.has(name));
  const same = await mapLimited(candidates, CONCURRENCY, async (name) => {
    const expected = template.files.get(name) as TemplateFile;
    const handle = await open(path.join(dir, name), constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      if ((await handle.stat()).size !== expected.size) return false;
      const sha = createHash('sha256')
        .update(await handle.readFile())
        .digest('hex');
      return sha === expected.sha256;
    } finally {
      await handle.close();
    }
  });
  const omit = new Set(candidates.filter((_, i) => same[i]));
  const files = [...omit].map((name): [string, string] => [
    name,
    (template.files.get(name) as TemplateFile).sha256,
  ]);
  return { manifest: { format: 1, template: template.hash, files }, omit };
}

/**
 * What `packDataDir` needs to pack a delta base (`PackOptions.delta`): the manifest member to put
 * first and the files to leave out (the template's, and WAL segments that hold no WAL).
 */
export function deltaPacking(template: TemplateFiles) {
  return async (dir: string): Promise<{ first: Buffer; omit: ReadonlySet<string> }> => {
    const { manifest, omit } = await planDelta(dir, await template.contents());
    // Segments recycled for later use hold no WAL: Postgres makes them again when it needs them.
    for (const segment of await unwrittenWalSegments(dir)) omit.add(segment);
    return { first: manifestMember(manifest), omit };
  };
}

/** The manifest as a tar member (header and body padded to the 512-byte block). */
export function manifestMember(manifest: DeltaManifest): Buffer {
  const body = Buffer.from(JSON.stringify(manifest));
  const header = new Header({
    path: DELTA_MEMBER,
    mode: 0o600,
    size: body.length,
    mtime: new Date(0),
    type: 'File',
    uid: 0,
    gid: 0,
  });
  header.encode();
  const padding = (512 - (body.length % 512)) % 512;
  return Buffer.concat([header.block as Buffer, body, Buffer.alloc(padding)]);
}

/**
 * Reads a manifest as hostile input: valid JSON of the expected shape, at most `maxEntries` files,
 * each a path extraction would accept as a PGDATA file, with a hex sha256, none twice.
 */
export function parseManifest(bytes: Buffer, maxEntries: number): DeltaManifest {
  const refuse = (why: string): never => {
    throw new TarballRejectedError('corrupt', `delta manifest refused: ${why}`);
  };
  if (bytes.length > MAX_MANIFEST_BYTES) refuse(`larger than ${MAX_MANIFEST_BYTES} bytes`);
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    refuse('not JSON');
  }
  const parsed = MANIFEST.safeParse(json);
  if (!parsed.success) return refuse(parsed.error.issues[0]?.message ?? 'malformed');
  if (parsed.data.files.length > maxEntries) refuse(`more than ${maxEntries} files`);
  // The checks a tarball's members get: escapes, non-PGDATA paths and a file named twice are refused.
  const check = new MemberCheck(maxEntries);
  const files: [string, string][] = [];
  for (const [name, sha] of parsed.data.files) {
    const planned = check.plan({ path: name, type: 'File' });
    if (planned.kind !== 'file' || planned.relative === DELTA_MEMBER)
      refuse(`${JSON.stringify(name)} is no data file`);
    files.push([planned.relative, sha]);
  }
  return { format: 1, template: parsed.data.template, files };
}

const SHA256 = /^[0-9a-f]{64}$/;
const MANIFEST = z.object({
  format: z.literal(1),
  template: z.string().regex(SHA256),
  files: z.array(z.tuple([z.string(), z.string().regex(SHA256)])),
});

/** Where a fetch finds the files a delta base left out. */
export interface TemplateSource {
  /** This node's template (the one its spares are copies of). */
  local: TemplateFiles;
  /**
   * A directory holding the template `hash` names (the writer's, from the archive), for the files
   * the local one has in another version. Rejects when it cannot be had.
   */
  fetch(hash: string): Promise<string>;
}

/**
 * Puts the files `manifest` leaves out into `root`. `seeded`: `root` is already a copy of the local
 * template, so only the files the local template has in another version are written; otherwise
 * every one is copied (and flushed as `flush` says). Each file taken from the writer's template is checked against its sha256.
 */
export async function fillFromTemplate(
  root: string,
  manifest: DeltaManifest,
  source: TemplateSource,
  opts: { seeded: boolean; flush: FileFlush },
): Promise<void> {
  const local = await source.local.contents();
  const fromLocal: string[] = [];
  const fromWriter: [string, string][] = [];
  for (const [name, sha] of manifest.files) {
    if (local.files.get(name)?.sha256 === sha) fromLocal.push(name);
    else fromWriter.push([name, sha]);
  }
  const made = new Set<string>();
  const place = async (from: string, name: string) => {
    const to = path.join(root, name);
    const dir = path.dirname(to);
    if (!made.has(dir)) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      made.add(dir);
    }
    await copyFile(from, to);
    await opts.flush.file(to);
  };
  if (!opts.seeded)
    await mapLimited(fromLocal, CONCURRENCY, (name) => place(path.join(source.local.dir, name), name));
  if (fromWriter.length === 0) return;
  const writerDir = await source.fetch(manifest.template);
  await mapLimited(fromWriter, CONCURRENCY, async ([name, sha]) => {
    const from = path.join(writerDir, name);
    const found = await sha256File(from).catch(() => undefined);
    if (found !== sha) {
      throw new TarballRejectedError(
        'corrupt',
        `delta base: template ${manifest.template.slice(0, 12)} has no file ${JSON.stringify(name)} with the recorded checksum`,
      );
    }
    await place(from, name);
  });
}
