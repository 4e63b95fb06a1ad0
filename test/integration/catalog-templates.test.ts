import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createScramSha256Data } from 'pg-gateway';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type Catalog, CatalogConflictError } from '../../src/catalog/catalog.js';
import { openEmbeddedSqlClient } from '../../src/catalog/embedded.js';
import { openPostgresSqlClient } from '../../src/catalog/postgres.js';
import { SqlCatalog } from '../../src/catalog/sql-catalog.js';
import { createTestDatabase, startPostgres, type TestPostgres } from '../helpers/postgres.js';

/** The template half of the catalog (issue 18), on the embedded catalog and on real PostgreSQL. */

describe.each(['embedded', 'external'] as const)('templates in the %s catalog', (kind) => {
  let catalog: Catalog;
  let root = '';
  let server: TestPostgres | undefined;

  beforeAll(async () => {
    if (kind === 'embedded') {
      root = await mkdtemp(path.join(tmpdir(), 'catalog-tpl-'));
      catalog = new SqlCatalog(
        await openEmbeddedSqlClient({ dir: path.join(root, 'c'), templateDir: inject('templateDir') }),
      );
    } else {
      server = await startPostgres();
      catalog = new SqlCatalog(openPostgresSqlClient(await createTestDatabase(server.url)));
    }
    await catalog.migrate();
  }, 120_000);

  afterAll(async () => {
    await catalog?.close();
    await server?.stop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('records versions with compare-and-set, counts databases, refuses deleting one in use', async () => {
    const created = await catalog.createTemplate('t1', 'create table a (x int)');
    expect(created).toMatchObject({ name: 't1', version: 1, databases: 0 });
    await expect(catalog.createTemplate('t1', 'select 1')).rejects.toBeInstanceOf(CatalogConflictError);

    expect(await catalog.addTemplateVersion('t1', 2, 'alter table a add column y int')).toMatchObject({
      version: 2,
    });
    await expect(catalog.addTemplateVersion('t1', 2, 'again')).rejects.toBeInstanceOf(CatalogConflictError);
    expect(await catalog.addTemplateVersion('nope', 2, 'x')).toBeUndefined();
    expect(await catalog.templateSteps('t1')).toEqual([
      'create table a (x int)',
      'alter table a add column y int',
    ]);

    const scram = await createScramSha256Data('a-long-password');
    const db = await catalog.createDatabase({
      id: 'from-t1',
      username: 'postgres',
      scram,
      roleMode: 'writer',
      template: { name: 't1', version: 2 },
    });
    expect(db).toMatchObject({ roleMode: 'writer', template: 't1', templateVersion: 2 });
    expect(db).not.toHaveProperty('migrationError');
    expect(await catalog.getTemplate('t1')).toMatchObject({ databases: 1 });

    expect(await catalog.setTemplateState('from-t1', { migrationError: 'boom' })).toBe(true);
    expect(await catalog.getDatabase('from-t1')).toMatchObject({
      templateVersion: 2,
      migrationError: 'boom',
    });
    await catalog.setTemplateState('from-t1', { templateVersion: 3, migrationError: null });
    expect(await catalog.getDatabase('from-t1')).not.toHaveProperty('migrationError');
    expect(await catalog.updateDatabase('from-t1', { roleMode: 'owner' })).toMatchObject({
      roleMode: 'owner',
    });

    expect(await catalog.deleteTemplate('t1')).toBe('in-use');
    expect((await catalog.listTemplates()).map((t) => t.name)).toEqual(['t1']);
    await catalog.deleteDatabase('from-t1');
    expect(await catalog.deleteTemplate('t1')).toBe('deleted');
    expect(await catalog.deleteTemplate('t1')).toBe('missing');
    expect(await catalog.templateSteps('t1')).toEqual([]);
  });
});
