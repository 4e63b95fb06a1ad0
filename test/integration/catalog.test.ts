import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createScramSha256Data } from 'pg-gateway';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type Catalog, CatalogConflictError, type SqlClient } from '../../src/catalog/catalog.js';
import { openEmbeddedSqlClient } from '../../src/catalog/embedded.js';
import { openCatalog } from '../../src/catalog/index.js';
import { openPostgresCatalog, openPostgresSqlClient } from '../../src/catalog/postgres.js';
import { MIGRATIONS, SqlCatalog } from '../../src/catalog/sql-catalog.js';
import { createTestDatabase, startPostgres, type TestPostgres } from '../helpers/postgres.js';

interface Backend {
  name: string;
  setup(): Promise<void>;
  /** A migrated catalog plus the raw client under it, for looking at what is really stored. */
  open(): Promise<{ catalog: Catalog; client: SqlClient }>;
  /** Opens the same storage through the public entry point `openCatalog`. */
  openPublic(): Promise<Catalog>;
  /** Opens `n` independent instances on one fresh, unmigrated store; external only. */
  openConcurrently?(n: number): Promise<Catalog[]>;
  teardown(): Promise<void>;
}

async function open(client: SqlClient): Promise<{ catalog: Catalog; client: SqlClient }> {
  const catalog = new SqlCatalog(client);
  await catalog.migrate();
  return { catalog, client };
}

function embedded(): Backend {
  let root = '';
  const options = () => ({ dir: path.join(root, '_catalog'), templateDir: inject('templateDir') });
  return {
    name: 'embedded',
    setup: async () => {
      root = await mkdtemp(path.join(tmpdir(), 'catalog-test-'));
    },
    open: async () => open(await openEmbeddedSqlClient(options())),
    openPublic: () => openCatalog(options()),
    teardown: () => rm(root, { recursive: true, force: true }),
  };
}

function external(): Backend {
  let server: TestPostgres | undefined;
  let url = '';
  return {
    name: 'external',
    setup: async () => {
      server = await startPostgres();
      url = await createTestDatabase(server.url);
    },
    open: () => open(openPostgresSqlClient(url)),
    openPublic: () => openCatalog({ url, dir: '/nonexistent', templateDir: '/nonexistent' }),
    openConcurrently: async (n) => {
      const fresh = await createTestDatabase(url);
      return Promise.all(Array.from({ length: n }, () => openPostgresCatalog(fresh)));
    },
    teardown: async () => server?.stop(),
  };
}

const PASSWORD = 'correct horse battery staple 7f3a';

/** Every row of every gateway_* table, as text, to search for leaked secrets. */
async function dumpTables(client: SqlClient): Promise<string> {
  const { rows: tables } = await client.query<{ name: string }>(
    `select table_name as name from information_schema.tables
     where table_schema = current_schema() and table_name like 'gateway\\_%' order by table_name::text collate "C"`,
  );
  expect(tables.map((t) => t.name)).toEqual([
    'gateway_credentials',
    'gateway_databases',
    'gateway_nodes',
    'gateway_placements',
    'gateway_schema_version',
    'gateway_template_versions',
    'gateway_templates',
    'gateway_versions',
    'gateway_wal',
  ]);
  const dumps = await Promise.all(tables.map((t) => client.query(`select * from ${t.name}`)));
  return JSON.stringify(dumps.map((d) => d.rows));
}

describe.each([embedded(), external()])('$name catalog', (backend) => {
  let catalog: Catalog;
  let client: SqlClient;

  beforeAll(async () => {
    await backend.setup();
    ({ catalog, client } = await backend.open());
  });

  afterAll(async () => {
    await catalog?.close();
    await backend.teardown();
  });

  it('migrates idempotently and records the schema version', async () => {
    await catalog.createDatabase({ id: 'mig', username: 'u', scram: await createScramSha256Data(PASSWORD) });
    await catalog.migrate();
    await catalog.migrate();
    await Promise.all([catalog.migrate(), catalog.migrate()]);
    const { rows } = await client.query<{ version: number }>('select version from gateway_schema_version');
    expect(rows).toEqual([{ version: MIGRATIONS.length }]);
    expect(await catalog.getDatabase('mig')).toBeDefined();
  });

  it.skipIf(!backend.openConcurrently)('lets several instances migrate one fresh store at once', async () => {
    const instances = (await backend.openConcurrently?.(4)) ?? [];
    try {
      expect(instances).toHaveLength(4);
      const [a, b] = instances as [Catalog, Catalog];
      await a.createDatabase({ id: 'shared', username: 'u', scram: await createScramSha256Data(PASSWORD) });
      expect((await b.getDatabase('shared'))?.id).toBe('shared');
    } finally {
      await Promise.all(instances.map((c) => c.close()));
    }
  });

  it('creates, gets, lists and deletes databases', async () => {
    const scram = await createScramSha256Data(PASSWORD);
    const before = Date.now();
    const created = await catalog.createDatabase({ id: 'crud-b', username: 'owner', scram });
    expect(created).toEqual({
      id: 'crud-b',
      readOnly: false,
      poolMode: null,
      createdAt: expect.any(Date),
      incarnation: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
    expect(Math.abs(created.createdAt.getTime() - before)).toBeLessThan(60_000);

    const other = await catalog.createDatabase({
      id: 'crud-a',
      readOnly: true,
      poolMode: 'transaction',
      username: 'owner',
      scram,
    });
    expect(other).toMatchObject({ id: 'crud-a', readOnly: true, poolMode: 'transaction' });

    expect(await catalog.getDatabase('crud-b')).toEqual(created);
    expect(await catalog.getDatabase('missing')).toBeUndefined();
    const listed = (await catalog.listDatabases()).filter((d) => d.id.startsWith('crud-'));
    expect(listed.map((d) => d.id)).toEqual(['crud-a', 'crud-b']);

    expect(await catalog.deleteDatabase('crud-b')).toBe(true);
    expect(await catalog.deleteDatabase('crud-b')).toBe(false);
    expect(await catalog.getDatabase('crud-b')).toBeUndefined();
    // The same id created again is another incarnation (a local copy of the first is not it).
    const again = await catalog.createDatabase({ id: 'crud-b', username: 'owner', scram });
    expect(again.incarnation).not.toBe(created.incarnation);
    expect(other.incarnation).not.toBe(created.incarnation);
  });

  it('rejects a duplicate id with CatalogConflictError and keeps the original', async () => {
    const first = await createScramSha256Data(PASSWORD);
    await catalog.createDatabase({ id: 'dup', username: 'first', scram: first });
    const again = catalog.createDatabase({
      id: 'dup',
      username: 'second',
      scram: await createScramSha256Data('other'),
    });
    await expect(again).rejects.toBeInstanceOf(CatalogConflictError);
    // The failed transaction must not have left its credential behind.
    expect(await catalog.getCredential('dup', 'second')).toBeUndefined();
    expect((await catalog.getCredential('dup', 'first'))?.scram).toEqual(first);
  });

  it('stores SCRAM verifiers exactly, never the password', async () => {
    const scram = await createScramSha256Data(PASSWORD);
    await catalog.createDatabase({ id: 'cred', username: 'alice', scram });
    expect(await catalog.getCredential('cred', 'alice')).toEqual({
      databaseId: 'cred',
      username: 'alice',
      scram,
    });
    expect(await catalog.getCredential('cred', 'bob')).toBeUndefined();
    expect(await catalog.getCredential('nope', 'alice')).toBeUndefined();
    expect(await dumpTables(client)).not.toContain(PASSWORD);
  });

  it('setCredential adds and replaces verifiers, and refuses unknown databases', async () => {
    await catalog.createDatabase({
      id: 'set',
      username: 'alice',
      scram: await createScramSha256Data(PASSWORD),
    });
    const replaced = await createScramSha256Data('new password');
    expect(await catalog.setCredential('set', 'alice', replaced)).toBe(true);
    expect((await catalog.getCredential('set', 'alice'))?.scram).toEqual(replaced);

    const bob = await createScramSha256Data('bob password');
    expect(await catalog.setCredential('set', 'bob', bob)).toBe(true);
    expect((await catalog.getCredential('set', 'bob'))?.scram).toEqual(bob);

    expect(await catalog.setCredential('no-such-db', 'alice', bob)).toBe(false);
    expect(await catalog.getCredential('no-such-db', 'alice')).toBeUndefined();
  });

  it('deleting a database cascades to its credentials', async () => {
    const scram = await createScramSha256Data(PASSWORD);
    await catalog.createDatabase({ id: 'casc', username: 'alice', scram });
    await catalog.setCredential('casc', 'bob', scram);
    expect(await catalog.deleteDatabase('casc')).toBe(true);
    const { rows } = await client.query('select * from gateway_credentials where database_id = $1', ['casc']);
    expect(rows).toEqual([]);
    // Re-creating the id starts clean rather than inheriting old logins.
    await catalog.createDatabase({ id: 'casc', username: 'carol', scram });
    expect(await catalog.getCredential('casc', 'bob')).toBeUndefined();
  });

  it('updateDatabase sets read-only and pool mode independently', async () => {
    const created = await catalog.createDatabase({
      id: 'upd',
      username: 'u',
      scram: await createScramSha256Data(PASSWORD),
    });
    expect(await catalog.updateDatabase('upd', { readOnly: true })).toEqual({ ...created, readOnly: true });
    expect(await catalog.updateDatabase('upd', { poolMode: 'session' })).toMatchObject({
      readOnly: true,
      poolMode: 'session',
    });
    expect(await catalog.updateDatabase('upd', { readOnly: false, poolMode: null })).toMatchObject({
      readOnly: false,
      poolMode: null,
    });
    expect(await catalog.updateDatabase('upd', {})).toEqual(created);
    expect(await catalog.updateDatabase('missing', { readOnly: true })).toBeUndefined();
    const invalid = await catalog
      .updateDatabase('upd', { poolMode: 'statement' as unknown as 'session' })
      .catch((err: unknown) => err);
    expect(invalid).toMatchObject({ code: '23514' });
    // PGlite attaches bound parameters to errors; the embedded client scrubs them (verifiers).
    expect((invalid as { params?: unknown }).params).toBeUndefined();
  });

  describe('versions', () => {
    const sha = (c: string) => c.repeat(64);

    it('adds, gets, lists newest first and deletes versions', async () => {
      await catalog.createDatabase({
        id: 'ver',
        username: 'u',
        scram: await createScramSha256Data(PASSWORD),
      });
      expect(await catalog.listVersions('ver')).toEqual([]);
      const a = await catalog.addVersion({
        databaseId: 'ver',
        version: '20260101T000000000Z-aaaaaaaa',
        sha256: sha('a'),
        sizeBytes: 4_500_000,
      });
      expect(a).toEqual({
        databaseId: 'ver',
        version: '20260101T000000000Z-aaaaaaaa',
        sha256: sha('a'),
        sizeBytes: 4_500_000,
        createdAt: expect.any(Date),
        // No WAL position given: the version continues from when it was recorded.
        walLsn: undefined,
        walSince: a?.createdAt,
      });
      // Larger than 2^32: bigint survives the round trip as a number.
      const b = await catalog.addVersion({
        databaseId: 'ver',
        version: '20260101T000001000Z-bbbbbbbb',
        sha256: sha('b'),
        sizeBytes: 6_000_000_000,
      });
      expect(b?.sizeBytes).toBe(6_000_000_000);
      expect(await catalog.getVersion('ver', a?.version ?? '')).toEqual(a);
      expect(await catalog.getVersion('ver', 'nope')).toBeUndefined();
      expect((await catalog.listVersions('ver')).map((v) => v.version)).toEqual([b?.version, a?.version]);

      expect(await catalog.deleteVersion('ver', a?.version ?? '')).toBe(true);
      expect(await catalog.deleteVersion('ver', a?.version ?? '')).toBe(false);
      expect(await catalog.listVersions('ver')).toEqual([b]);
    });

    it('refuses duplicates and unknown databases, and cascades on delete', async () => {
      await catalog.createDatabase({
        id: 'ver2',
        username: 'u',
        scram: await createScramSha256Data(PASSWORD),
      });
      const input = {
        databaseId: 'ver2',
        version: '20260101T000000000Z-cccccccc',
        sha256: sha('c'),
        sizeBytes: 1,
      };
      await catalog.addVersion(input);
      await expect(catalog.addVersion({ ...input, sha256: sha('d') })).rejects.toBeInstanceOf(
        CatalogConflictError,
      );
      expect((await catalog.getVersion('ver2', input.version))?.sha256).toBe(sha('c'));
      expect(await catalog.addVersion({ ...input, databaseId: 'no-such-db' })).toBeUndefined();

      expect(await catalog.deleteDatabase('ver2')).toBe(true);
      const { rows } = await client.query('select * from gateway_versions where database_id = $1', ['ver2']);
      expect(rows).toEqual([]);
    });
  });

  it('keeps data across close and reopen', async () => {
    const scram = await createScramSha256Data(PASSWORD);
    const created = await catalog.createDatabase({
      id: 'durable',
      poolMode: 'session',
      username: 'u',
      scram,
    });
    await catalog.close();
    // Closing twice is harmless, so shutdown paths need not track it.
    await catalog.close();

    const reopened = await backend.openPublic();
    try {
      expect(await reopened.getDatabase('durable')).toEqual(created);
      expect((await reopened.getCredential('durable', 'u'))?.scram).toEqual(scram);
    } finally {
      await reopened.close();
    }
    ({ catalog, client } = await backend.open());
    expect(await catalog.getDatabase('durable')).toEqual(created);
  });
});
