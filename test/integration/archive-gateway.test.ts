import { lstat, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type {
  ClonedJson,
  CreatedDatabaseJson,
  RestoredJson,
  UploadedJson,
  VersionJson,
} from '../../src/admin/views.js';
import type { ArchiveStore } from '../../src/storage/archive.js';
import { openArchive } from '../../src/storage/open-archive.js';
import { adminClient } from '../helpers/admin-client.js';
import { printedPassword, runCli } from '../helpers/cli.js';
import { writeItemsDumps } from '../helpers/pglite-dumps.js';
import { startS3, type TestS3 } from '../helpers/s3.js';
import { sqlstateOf, startTestServer, type TestServer, withClient } from '../helpers/server.js';
import { tarball } from '../helpers/tarballs.js';

/**
 * Versions, restore, clone and upload end to end: a real gateway with an archive (s3rver spoken to
 * by the real AWS SDK, and a file:// directory: the same suite runs against both), node-postgres
 * clients through the gateway, the real CLI against the running server's socket, and tarballs made
 * by a real PGlite's dumpDataDir(). A gateway without an archive is in no-archive.test.ts.
 */

let root = '';
/** dumpDataDir('gzip') of a database whose table items holds 50 rows. */
let dumpGz = '';
/** dumpDataDir('none') of the same database after 25 more rows: 75. */
let dumpTar = '';
/** Hostile or broken tarballs: none of them may leave anything behind. */
const hostile: Record<string, string> = {};

const exists = (p: string) =>
  lstat(p).then(
    () => true,
    () => false,
  );

async function count(config: pg.ClientConfig, table = 't'): Promise<number> {
  return withClient(config, async (c) => {
    const { rows } = await c.query<{ n: number }>(`select count(*)::int as n from ${table}`);
    return rows[0]?.n ?? -1;
  });
}

/** Resolves when the client's connection ends (the server terminated it), or fails after `ms`. */
function ended(client: pg.Client, ms = 20_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('client was not disconnected')), ms);
    client.once('end', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

async function connected(config: pg.ClientConfig): Promise<pg.Client> {
  const client = new pg.Client(config);
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

/** Leftovers of a failed operation in the data directory: temporary siblings and spool files. */
async function leftovers(dataDir: string, id: string): Promise<string[]> {
  const found = (await readdir(dataDir)).filter((n) => n === id || n.startsWith(`.${id}.`));
  const spool = (await readdir(path.join(dataDir, '.storage')).catch(() => [] as string[])).filter((n) =>
    n.startsWith(`${id}.`),
  );
  return [...found, ...spool];
}

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'archive-gateway-test-'));
  const dumps = await writeItemsDumps(root, inject('templateDir'));
  ({ dumpGz, dumpTar } = dumps);
  const dir = dumps.sourceDir;
  const pgVersion = await readFile(path.join(dir, 'PG_VERSION'));
  const control = await readFile(path.join(dir, 'global', 'pg_control'));
  const filenodeMap = await readFile(path.join(dir, 'global', 'pg_filenode.map'));
  const pgdata = [
    { name: '/PG_VERSION', body: pgVersion },
    { name: '/global', type: '5' },
    { name: '/global/pg_control', body: control },
    { name: '/global/pg_filenode.map', body: filenodeMap },
    { name: '/base', type: '5' },
    { name: '/pg_wal', type: '5' },
  ];
  const write = async (name: string, bytes: Buffer) => {
    hostile[name] = path.join(root, name);
    await writeFile(hostile[name], bytes);
  };
  await write('escape.tar', tarball([...pgdata, { name: '../escaped.txt', body: Buffer.from('pwned') }]));
  await write(
    'escape-deep.tar.gz',
    gzipSync(tarball([...pgdata, { name: 'base/../../escaped.txt', body: Buffer.from('pwned') }])),
  );
  await write('junk.tar.gz', gzipSync(tarball([{ name: 'notes.txt', body: Buffer.from('hello') }])));
  await write('incomplete.tar', tarball(pgdata.filter((m) => !m.name.includes('pg_control'))));
  await write('link.tar', tarball([...pgdata, { name: 'base/1', type: '2', linkname: '/etc' }]));
  await write('garbage.tar.gz', Buffer.concat([Buffer.from([0x1f, 0x8b]), Buffer.alloc(4096, 7)]));
});

afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

interface ArchiveMode {
  name: 's3' | 'file';
  /** Environment for the gateway, and a store to look into the archive directly. */
  start(): Promise<{ env: Record<string, string>; store: ArchiveStore; close(): Promise<void> }>;
}

const modes: ArchiveMode[] = [
  {
    name: 's3',
    async start() {
      const s3: TestS3 = await startS3();
      const url = `s3://${s3.bucket}/gateway/dbs`;
      const store = (await openArchive(url, {
        s3: { endpoint: s3.directEndpoint, ...s3.credentials },
      })) as ArchiveStore;
      return {
        env: {
          ARCHIVE_URL: url,
          AWS_ENDPOINT_URL_S3: s3.endpoint,
          AWS_ACCESS_KEY_ID: 'S3RVER',
          AWS_SECRET_ACCESS_KEY: 'S3RVER',
          AWS_REGION: 'us-east-1',
        },
        store,
        close: async () => {
          await store.close();
          await s3.close();
        },
      };
    },
  },
  {
    name: 'file',
    async start() {
      const url = pathToFileURL(path.join(root, 'file-archive')).href;
      const store = (await openArchive(url)) as ArchiveStore;
      return { env: { ARCHIVE_URL: url }, store, close: () => store.close() };
    },
  },
];

describe.each(modes)('archive ($name)', { timeout: 60_000 }, (mode) => {
  let t: TestServer;
  let store: ArchiveStore;
  let closeArchive: () => Promise<void> = async () => {};
  let admin: ReturnType<typeof adminClient>;
  // Shared by the tests below, which run in order.
  let mainPassword = '';
  /** The state of "main" a restore replaced (10 rows). */
  let replacedVersion: { version: string; sha256: string } | undefined;
  let uploadedPassword = '';
  let httpPassword = '';

  beforeAll(async () => {
    const archive = await mode.start();
    store = archive.store;
    closeArchive = archive.close;
    t = await startTestServer({
      ...archive.env,
      SNAPSHOT_INTERVAL: '1s',
      KEEP_VERSIONS: '20',
      SPARE_DATABASES: '0',
    });
    admin = adminClient(t);
  });

  afterAll(async () => {
    await t?.close();
    await closeArchive();
  });

  it('fetches a database whose local copy is gone from the archive when a client connects', async () => {
    mainPassword = await t.createDatabase('main');
    await withClient(t.pgConfig('main', mainPassword), async (c) => {
      await c.query('create table t (n int)');
      await c.query('insert into t select generate_series(1, 100)');
    });
    // Evicted: closed, and snapshotted because it was written.
    await t.server.registry.close('main');
    expect((await t.server.catalog.listVersions('main')).length).toBeGreaterThanOrEqual(2);
    await rm(path.join(t.dataDir, 'main'), { recursive: true, force: true });

    expect(await count(t.pgConfig('main', mainPassword))).toBe(100);
    expect(await exists(path.join(t.dataDir, 'main', 'PG_VERSION'))).toBe(true);
    expect((await store.list('main/')).length).toBeGreaterThanOrEqual(2);
  });

  it('lists versions and restores one while a client is connected', async () => {
    const config = t.pgConfig('main', mainPassword);
    const [v100] = await t.server.catalog.listVersions('main');
    if (!v100) throw new Error('no version');

    const listed = await admin<{ versions: VersionJson[] }>('GET', '/v1/databases/main/versions');
    expect(listed.status).toBe(200);
    expect(listed.json.versions[0]).toEqual({
      version: v100.version,
      sha256: v100.sha256,
      sizeBytes: v100.sizeBytes,
      createdAt: v100.createdAt.toISOString(),
    });

    const client = await connected(config);
    await client.query('delete from t where n > 10');
    const disconnected = ended(client);
    const res = await admin<RestoredJson>('POST', '/v1/databases/main/restore', { version: v100.version });
    expect(res.status).toBe(200);
    expect(res.json.restoredFrom).toBe(v100.version);
    expect(res.json.version.sha256).toBe(v100.sha256);
    await disconnected;
    await expect(client.query('select 1')).rejects.toThrow();

    expect(await count(config)).toBe(100);
    const versions = await t.server.catalog.listVersions('main');
    expect(versions[0]).toMatchObject({ version: res.json.version.version, sha256: v100.sha256 });
    // The state the restore replaced was snapshotted when it closed the database: not lost for good.
    expect(versions[1]?.sha256).not.toBe(v100.sha256);
    replacedVersion = versions[1];

    const listing = await runCli(t.env, 'db', 'versions', 'main');
    expect(listing.code).toBe(0);
    expect(listing.stdout).toMatch(/^VERSION +SIZE +CREATED\n/);
    expect(listing.stdout).toContain(v100.version);

    const missing = await admin<{ error: string }>('POST', '/v1/databases/main/restore', {
      version: '20990101T000000000Z-00000000',
    });
    expect(missing.status).toBe(404);
    expect((await admin('POST', '/v1/databases/nope/restore', { version: v100.version })).status).toBe(404);
    expect((await admin('POST', '/v1/databases/main/restore', {})).status).toBe(400);
  });

  it('clones a version into a new database with its own password while clients stay connected', async () => {
    const v10 = replacedVersion;
    expect(v10).toBeDefined();
    const source = await connected(t.pgConfig('main', mainPassword));
    try {
      const res = await admin<ClonedJson>('POST', '/v1/databases/main/clone', {
        id: 'branch',
        version: v10?.version,
      });
      expect(res.status).toBe(201);
      expect(res.json).toMatchObject({ id: 'branch', source: 'main', username: 'postgres' });
      expect(res.json.version.sha256).toBe(v10?.sha256);
      expect(res.json.connectionString).toContain(`postgres:${res.json.password}@branch.db.example.com:`);
      const branch = t.pgConfig('branch', res.json.password);
      expect(await count(branch)).toBe(10);
      // A separate database: its own password, its own writes, its own versions.
      expect(await sqlstateOf(count(t.pgConfig('branch', mainPassword)))).toBe('28P01');
      await withClient(branch, (c) => c.query('insert into t values (99)'));
      expect(await count(branch)).toBe(11);
      const { rows } = await source.query<{ n: number }>('select count(*)::int as n from t');
      expect(rows[0]?.n).toBe(100);
      expect((await t.server.catalog.listVersions('branch')).length).toBeGreaterThanOrEqual(1);

      // The CLI, without --version: the latest version (the restored state).
      const cli = await runCli(t.env, 'db', 'clone', 'main', 'branch2');
      expect(cli).toMatchObject({ code: 0, stderr: '' });
      expect(cli.stdout).toContain('created database "branch2" from "main"');
      expect(await count(t.pgConfig('branch2', printedPassword(cli.stdout)))).toBe(100);

      const taken = await admin<CreatedDatabaseJson>('POST', '/v1/databases/main/clone', { id: 'branch' });
      expect(taken.status).toBe(409);
      const bad = await admin('POST', '/v1/databases/main/clone', { id: 'branch3', version: 'nope' });
      expect(bad.status).toBe(404);
      expect(await t.server.catalog.getDatabase('branch3')).toBeUndefined();
    } finally {
      await source.end();
    }
  });

  it('installs a dumpDataDir() tarball through the CLI, as a new database and over an existing one', async () => {
    const created = await runCli(t.env, 'upload', 'uploaded', dumpGz, '--create');
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toMatch(/created database "uploaded" from .* as version \S+/);
    expect(created.stderr).toMatch(/sent (\d+(?:\.\d)?) MB \/ \1 MB \(100%\)/);
    const password = printedPassword(created.stdout);
    uploadedPassword = password;
    const config = t.pgConfig('uploaded', password);
    expect(await count(config, 'items')).toBe(50);

    // Over the existing database: a connected client is disconnected, the credentials stay.
    const client = await connected(config);
    const disconnected = ended(client);
    const replaced = await runCli(t.env, 'upload', 'uploaded', dumpTar);
    expect(replaced.code, replaced.stderr).toBe(0);
    expect(replaced.stdout).toContain('replaced database "uploaded"');
    expect(replaced.stdout).toContain('password:  (unchanged)');
    expect(replaced.stdout).toContain('postgres://postgres@uploaded.db.example.com:');
    await disconnected;
    expect(await count(config, 'items')).toBe(75);
    const version = /as version (\S+)/.exec(replaced.stdout)?.[1];
    expect((await t.server.catalog.listVersions('uploaded'))[0]?.version).toBe(version);
  });

  it('installs a tarball through the HTTP endpoint (streamed, beyond the JSON body limit)', async () => {
    const created = await admin<UploadedJson>(
      'PUT',
      '/v1/databases/http-up/upload?create=1',
      await readFile(dumpTar),
    );
    expect(created.status).toBe(201);
    expect(created.json).toMatchObject({ id: 'http-up', created: true, username: 'postgres' });
    expect(created.json.version?.version).toBe((await t.server.catalog.listVersions('http-up'))[0]?.version);
    httpPassword = created.json.password as string;
    const config = t.pgConfig('http-up', httpPassword);
    expect(await count(config, 'items')).toBe(75);
  });

  it('rejects hostile or broken tarballs with 400 and leaves nothing behind', async () => {
    const before = await t.server.catalog.listVersions('uploaded');
    for (const [name, file] of Object.entries(hostile)) {
      const res = await admin<{ error: string }>(
        'PUT',
        '/v1/databases/hostile/upload?create=1',
        await readFile(file),
      );
      expect(res.status, name).toBe(400);
      expect(res.json.error, name).toMatch(/^upload rejected: /);
      expect(await t.server.catalog.getDatabase('hostile'), name).toBeUndefined();
      expect(await leftovers(t.dataDir, 'hostile'), name).toEqual([]);
      expect(await store.list('hostile/'), name).toEqual([]);

      // Over an existing database: it keeps its data and versions.
      const over = await admin('PUT', '/v1/databases/uploaded/upload', await readFile(file));
      expect(over.status, name).toBe(400);
    }
    for (const dir of [root, t.root, t.dataDir, path.dirname(t.dataDir)]) {
      expect(await exists(path.join(dir, 'escaped.txt'))).toBe(false);
    }
    expect(await count(t.pgConfig('uploaded', uploadedPassword), 'items')).toBe(75);
    expect(await t.server.catalog.listVersions('uploaded')).toEqual(before);

    const cli = await runCli(t.env, 'upload', 'hostile', hostile['escape.tar'] as string, '--create');
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(/^(sent .*\n)*error: upload rejected: member name escapes the directory/);
    expect(await t.server.catalog.getDatabase('hostile')).toBeUndefined();
    expect(await leftovers(t.dataDir, 'hostile')).toEqual([]);
  });

  it('snapshots a database being written every SNAPSHOT_INTERVAL', async () => {
    // "http-up" is open and unchanged since its upload (75 rows).
    const config = t.pgConfig('http-up', httpPassword);
    const client = await connected(config);
    try {
      const before = (await t.server.catalog.listVersions('http-up')).length;
      await client.query("insert into items select g, 'item ' || g from generate_series(76, 100) g");
      const deadline = Date.now() + 15_000;
      let versions = await t.server.catalog.listVersions('http-up');
      while (versions.length <= before && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        versions = await t.server.catalog.listVersions('http-up');
      }
      expect(versions.length).toBeGreaterThan(before);
      const periodic = versions[0]?.version as string;
      // Nothing written since: later ticks store nothing (the snapshot's own CHECKPOINT does not count).
      await new Promise((resolve) => setTimeout(resolve, 1500));
      expect((await t.server.catalog.listVersions('http-up'))[0]?.version).toBe(periodic);
      // It holds the write: restoring it (which disconnects this client) gives the rows back.
      await client.query('delete from items');
      const disconnected = ended(client);
      const cli = await runCli(t.env, 'db', 'restore', 'http-up', periodic);
      expect(cli).toMatchObject({ code: 0, stderr: '' });
      expect(cli.stdout).toContain(`restored database "http-up" to version ${periodic}`);
      await disconnected;
      expect(await count(config, 'items')).toBe(100);
    } finally {
      await client.end().catch(() => undefined);
    }
  });
});
