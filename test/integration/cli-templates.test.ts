import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/** The template commands and `db types` (issue 18), with and without a running server. */

let files = '';
const sqlFile = async (name: string, sql: string) => {
  const file = path.join(files, name);
  await writeFile(file, sql);
  return file;
};

beforeAll(async () => {
  files = await mkdtemp(path.join(tmpdir(), 'cli-tpl-files-'));
});
afterAll(() => rm(files, { recursive: true, force: true }));

describe('template commands without a running server', { timeout: 180_000 }, () => {
  let root = '';
  let env: Record<string, string> = {};
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'cli-tpl-local-'));
    env = {
      DATA_DIR: path.join(root, 'dbs'),
      TEMPLATE_DIR: inject('templateDir'),
      TLS_DIR: path.join(root, 'tls'),
      WILDCARD_DOMAIN: 'db.test',
      PORT: '6432',
    };
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  it('creates, lists, types and deletes templates; migrating needs a server', async () => {
    const file = await sqlFile('local.sql', 'CREATE TABLE items (id serial PRIMARY KEY, qty int NOT NULL);');
    const created = await runCli(env, 'template', 'create', 'local', '--sql', file);
    expect(created.stderr).toBe('');
    expect(created.stdout).toContain('created template "local" (version 1)');
    expect((await runCli(env, 'template', 'create', 'local')).code).toBe(2);
    const db = await runCli(env, 'db', 'create', 'from-local', '--template', 'local');
    expect(db.code, db.stderr).toBe(0);
    const list = await runCli(env, 'db', 'list');
    expect(list.stdout).toMatch(/from-local\s+no\s+\S+\s+writer\s+local v1\s+-/);
    const out = path.join(files, 'local.types.ts');
    expect((await runCli(env, 'template', 'types', 'local', '--out', out)).code).toBe(0);
    expect(await readFile(out, 'utf8')).toContain('      items: {\n        Row: {\n          id: number;');
    const migrate = await runCli(env, 'template', 'migrate', 'local', '--all');
    expect(migrate.code).toBe(1);
    expect(migrate.stderr).toContain('needs a running server');
    const refused = await runCli(env, 'template', 'delete', 'local');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('used by 1 database');
    expect((await runCli(env, 'db', 'delete', 'from-local')).code).toBe(0);
    expect((await runCli(env, 'template', 'delete', 'local')).stdout).toContain('deleted template "local"');
    expect((await runCli(env, 'template', 'list')).stdout).toContain('no templates');
  });
});

describe('template commands through a running server', { timeout: 180_000 }, () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  }, 120_000);
  afterAll(() => t?.close());

  it('updates a template and migrates its databases with progress; db types prints the module', async () => {
    const env = t.env;
    const v1 = await sqlFile('v1.sql', 'CREATE TABLE items (id serial PRIMARY KEY, qty int NOT NULL);');
    expect((await runCli(env, 'template', 'create', 'live', '--sql', v1)).code).toBe(0);
    for (const id of ['live-a', 'live-b']) {
      const created = await runCli(env, 'db', 'create', id, '--template', 'live');
      expect(created.code, created.stderr).toBe(0);
    }
    const v2 = await sqlFile('v2.sql', 'ALTER TABLE items ADD COLUMN note text;');
    const updated = await runCli(env, 'template', 'update', 'live', '--sql', v2);
    expect(updated.stdout).toContain('template "live" is at version 2');
    const migrated = await runCli(env, 'template', 'migrate', 'live', '--all');
    expect(migrated.code, migrated.stderr).toBe(0);
    expect(migrated.stdout).toContain('[1/2] live-a: migrated, version 2');
    expect(migrated.stdout).toContain('[2/2] live-b: migrated, version 2');
    expect(migrated.stdout).toContain('2 of 2 database(s) at the newest version');
    const types = await runCli(env, 'db', 'types', 'live-a');
    expect(types.code, types.stderr).toBe(0);
    expect(types.stdout).toContain('          note: string | null;');
    const list = await runCli(env, 'template', 'list');
    expect(list.stdout).toMatch(/^live\s+2\s+2\s+/m);
    expect((await runCli(env, 'db', 'set', 'live-a', '--role', 'nobody')).code).toBe(2);
    const owner = await runCli(env, 'db', 'set', 'live-a', '--role', 'owner');
    expect(owner.code, owner.stderr).toBe(0);
  });
});
