import { appendFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { AUTO_CONF_HEADER, postgresSettings } from '../../src/engine/pglite-open.js';
import { createFromTemplate } from '../../src/pgdata/template.js';
import { sqlstateOf, startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * Issue 11, finding 4: no tenant can change what a database costs in memory, or whether it opens,
 * through settings. ALTER SYSTEM is refused by Postgres itself (allow_alter_system=off); settings
 * already in postgresql.auto.conf are cleared at open, and lose anyway against the gateway's `-c`
 * settings; role and database settings never apply (PGlite runs Postgres single-user).
 */

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ SPARE_DATABASES: '0' });
});
afterAll(async () => {
  await t?.close();
});

const autoConf = (id: string) => readFile(path.join(t.dataDir, id, 'postgresql.auto.conf'), 'utf8');
const show = async (
  c: { query: (sql: string) => Promise<{ rows: Record<string, string>[] }> },
  name: string,
) => (await c.query(`show ${name}`)).rows[0]?.[name];

describe('ALTER SYSTEM', () => {
  it('is refused with a Postgres error; nothing reaches postgresql.auto.conf', async () => {
    const pw = await t.createDatabase('alter-system');
    await withClient(t.pgConfig('alter-system', pw), async (c) => {
      for (const sql of [
        "alter system set min_dynamic_shared_memory = '700MB'",
        "alter system set wal_buffers = '512MB'",
        'alter system set max_locks_per_transaction = 100000',
        'alter system reset all',
      ]) {
        const code = await sqlstateOf(c.query(sql));
        expect(code, sql).toMatch(/^[0-9A-Z]{5}$/);
        expect(code, sql).not.toBe('XX000');
      }
      // Dynamic SQL reaches Postgres whatever the gateway recognises: still refused.
      const dynamic = await sqlstateOf(
        c.query("do $$ begin execute 'alter system set wal_buffers = ''512MB'''; end $$"),
      );
      expect(dynamic).toMatch(/^[0-9A-Z]{5}$/);
      expect(dynamic).not.toBe('XX000');
      expect(await sqlstateOf(c.query('set allow_alter_system = on'))).toBe('55P02');
      expect(await show(c, 'allow_alter_system')).toBe('off');
      expect(await show(c, 'min_dynamic_shared_memory')).toBe('0');
      expect((await c.query('select 1 as ok')).rows[0]?.ok).toBe(1);
    });
    await t.server.registry.close('alter-system');
    expect(await autoConf('alter-system')).toBe(AUTO_CONF_HEADER);
  });
});

describe('settings left in postgresql.auto.conf', () => {
  it('a hand-edited file that made the database unopenable: it opens, with the pinned values', async () => {
    const pw = await t.createDatabase('auto-conf');
    await withClient(t.pgConfig('auto-conf', pw), (c) => c.query('create table kept as select 1 as n'));
    await t.server.registry.close('auto-conf');
    // What ALTER SYSTEM wrote before it was refused (or an uploaded tarball holds).
    await appendFile(
      path.join(t.dataDir, 'auto-conf', 'postgresql.auto.conf'),
      "wal_buffers = '512MB'\nmax_locks_per_transaction = 100000\nmin_dynamic_shared_memory = '700MB'\n" +
        "shared_preload_libraries = 'does_not_exist'\nhuge_pages = on\ntransaction_buffers = 131072\n",
    );
    const rssBefore = process.memoryUsage().rss;
    await withClient(t.pgConfig('auto-conf', pw), async (c) => {
      expect((await c.query('select n from kept')).rows[0]?.n).toBe(1);
      expect(await show(c, 'min_dynamic_shared_memory')).toBe('0');
      expect(await show(c, 'max_locks_per_transaction')).toBe('64');
      expect(await show(c, 'wal_buffers')).not.toBe('512MB');
      expect(await show(c, 'shared_preload_libraries')).toBe('');
      expect(await show(c, 'huge_pages')).toBe('off');
      const { rows } = await c.query<{ setting: string; source: string }>(
        "select setting, source from pg_settings where name = 'transaction_buffers'",
      );
      expect(Number(rows[0]?.setting)).toBeLessThan(1024);
    });
    // The database (a worker in this process) did not grow by the 700 MB asked for.
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(400 * 1024 * 1024);
    // The file was cleared before Postgres started: only its header is left.
    expect(await autoConf('auto-conf')).toBe(AUTO_CONF_HEADER);
  });
});

describe('role and database settings', () => {
  it('never apply: PGlite runs Postgres single-user, which skips pg_db_role_setting', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'role-settings-'));
    const dir = path.join(root, 'db');
    const startParams = [
      ...(PGlite as unknown as { defaultStartParams: string[] }).defaultStartParams,
      ...postgresSettings(8 * 1024 * 1024).flatMap((s) => ['-c', s]),
    ];
    try {
      await createFromTemplate(inject('templateDir'), dir);
      const first = new PGlite({ dataDir: dir, startParams });
      await first.exec(`
        alter role postgres set session_preload_libraries = 'does_not_exist';
        alter database postgres set local_preload_libraries = 'does_not_exist_either';
        alter role all set work_mem = '77MB';
        alter database postgres set default_transaction_read_only = on;
        alter role postgres in database postgres set statement_timeout = '1ms';
      `);
      await first.close();
      const again = new PGlite({ dataDir: dir, startParams });
      try {
        const { rows } = await again.query<Record<string, string>>(
          `select current_setting('work_mem') as work_mem,
                  current_setting('default_transaction_read_only') as ro,
                  current_setting('statement_timeout') as timeout,
                  current_setting('session_preload_libraries') as spl,
                  (select count(*)::int from pg_db_role_setting) as stored`,
        );
        expect(rows[0]).toEqual({ work_mem: '4MB', ro: 'off', timeout: '0', spl: '', stored: 4 });
      } finally {
        await again.close();
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
