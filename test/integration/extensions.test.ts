import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCatalog, PRELOADED_EXTENSIONS } from '../../src/engine/extensions.js';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * Issue 12, item 2: the extensions PGlite and the pglite-* packages ship are available to CREATE
 * EXTENSION (EXTENSIONS, default all), through the real gateway; one left out of EXTENSIONS is
 * refused; a database keeps using its extensions after it closes and reopens, in a recycled
 * worker and after a restart.
 */

async function errorOf(promise: Promise<unknown>): Promise<{ code?: string; message: string } | undefined> {
  try {
    await promise;
    return undefined;
  } catch (err) {
    return err as { code?: string; message: string };
  }
}

const first = async (c: pg.Client, sql: string, params: unknown[] = []) =>
  (await c.query(sql, params)).rows[0] as Record<string, unknown>;

/** The nearest row to [3,4,5.5] by the HNSW index (the only plan left with seq scans off). */
async function nearest(c: pg.Client): Promise<{ id: unknown; plan: string }> {
  await c.query('begin');
  try {
    await c.query('set local enable_seqscan = off');
    const sql = "select id from items order by embedding <-> '[3,4,5.5]' limit 1";
    const plan = (await c.query(`explain ${sql}`)).rows.map((r) => r['QUERY PLAN']).join('\n');
    return { id: (await first(c, sql)).id, plan };
  } finally {
    await c.query('commit');
  }
}

describe('EXTENSIONS=all (the default)', () => {
  let t: TestServer;
  let password: string;
  const config = () => t.pgConfig('ext', password);
  beforeAll(async () => {
    t = await startTestServer({ SPARE_DATABASES: '0' });
    password = await t.createDatabase('ext');
  });
  afterAll(async () => {
    await t?.close();
  });

  it('vector: a vector(3) column, an HNSW index and a nearest-neighbour query', async () => {
    await withClient(config(), async (c) => {
      await c.query('create extension vector');
      await c.query('create table items (id int primary key, embedding vector(3))');
      await c.query(
        "insert into items values (1, '[1,2,3]'), (2, '[4,5,6]'), (3, '[7,8,9]'), (4, '[0,0,1]')",
      );
      await c.query('create index items_embedding on items using hnsw (embedding vector_l2_ops)');
      const { id, plan } = await nearest(c);
      expect(plan).toContain('items_embedding');
      expect(id).toBe(2);
      expect((await first(c, "select '[1,2,3]'::vector <=> '[2,4,6]' as d")).d).toBeCloseTo(0, 6);
    });
  });

  it('pg_trgm, pgcrypto, uuid-ossp, hstore, citext', async () => {
    await withClient(config(), async (c) => {
      for (const ext of ['pg_trgm', 'pgcrypto', '"uuid-ossp"', 'hstore', 'citext'])
        await c.query(`create extension ${ext}`);
      expect(Number((await first(c, "select similarity('word', 'words') as s")).s)).toBeGreaterThan(0.5);
      expect((await first(c, "select encode(digest('abc', 'sha256'), 'hex') as h")).h).toBe(
        'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
      );
      expect((await first(c, 'select uuid_generate_v4()::text as u')).u).toMatch(
        /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
      );
      expect((await first(c, "select 'a=>1, b=>2'::hstore -> 'b' as v")).v).toBe('2');
      expect((await first(c, "select 'Hello'::citext = 'hELLO'::citext as eq")).eq).toBe(true);
    });
  });

  it('every extension shipped creates (and every module loads), but those needing a preload', async () => {
    const catalog = await loadCatalog();
    const pw = await t.createDatabase('every-ext');
    const failed: string[] = [];
    await withClient(t.pgConfig('every-ext', pw), async (c) => {
      for (const p of catalog.values()) {
        if (PRELOADED_EXTENSIONS.includes(p.name)) continue;
        const sql =
          p.kind === 'extension' ? `create extension if not exists "${p.name}" cascade` : `load '${p.name}'`;
        const err = await errorOf(c.query(sql));
        if (err) failed.push(`${p.name}: ${err.message}`);
      }
      const created = await first(c, 'select count(*)::int as n from pg_extension');
      expect(created.n).toBeGreaterThanOrEqual(40);
    });
    expect(failed).toEqual([]);
    expect(catalog.size).toBeGreaterThanOrEqual(47);
    // The README lists them all.
    const readme = await readFile(path.join(import.meta.dirname, '../../README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Extensions'), readme.indexOf('## Admin HTTP API'));
    expect([...catalog.keys()].filter((n) => !section.includes(`\`${n}\``))).toEqual([]);
  });

  it('refuses an extension that is not installed (pg_textsearch needs EXTENSIONS to name it)', async () => {
    await withClient(config(), async (c) => {
      const err = await errorOf(c.query('create extension pg_textsearch'));
      expect(err?.code).toBe('0A000');
      expect(err?.message).toBe('extension "pg_textsearch" is not available');
      expect((await first(c, 'select 1 as one')).one).toBe(1);
    });
  });

  it("file_fdw's program option (PGlite runs no programs) fails that statement and restarts the database", async () => {
    await withClient(config(), async (c) => {
      await c.query('create extension file_fdw');
      await c.query('create server files foreign data wrapper file_fdw');
      await c.query("create foreign table prog (v text) server files options (program 'echo hi')");
      const err = await errorOf(c.query('select * from prog'));
      expect(err?.code).toBe('58000');
    });
    await withClient(config(), async (c) => {
      expect((await first(c, 'select id from items where id = 2')).id).toBe(2);
    });
  });

  it('the data keeps using its extensions after a close and reopen, and after a restart', async () => {
    await t.server.registry.close('ext');
    await withClient(config(), async (c) => {
      expect((await nearest(c)).id).toBe(2);
      expect(Number((await first(c, "select similarity('word', 'words') as s")).s)).toBeGreaterThan(0.5);
    });
    await t.restart();
    await withClient(config(), async (c) => {
      const { id, plan } = await nearest(c);
      expect(plan).toContain('items_embedding');
      expect(id).toBe(2);
      await c.query("insert into items values (5, '[3,4,5]')");
      expect((await nearest(c)).id).toBe(5);
      expect((await first(c, "select 'x'::citext = 'X' as eq")).eq).toBe(true);
    });
  });
});

describe('EXTENSIONS naming a few, with ones that must be preloaded', () => {
  let t: TestServer;
  let password: string;
  beforeAll(async () => {
    t = await startTestServer({
      SPARE_DATABASES: '0',
      EXTENSIONS: 'pg_trgm, pg_textsearch, pg_stat_statements',
    });
    password = await t.createDatabase('few');
  });
  afterAll(async () => {
    await t?.close();
  });

  it('refuses the others with a clear error', async () => {
    await withClient(t.pgConfig('few', password), async (c) => {
      for (const name of ['vector', 'pgcrypto']) {
        const err = await errorOf(c.query(`create extension ${name}`));
        expect(err?.code).toBe('0A000');
        expect(err?.message).toBe(`extension "${name}" is not available`);
      }
      const err = await errorOf(c.query("load 'auto_explain'"));
      expect(err?.message).toMatch(/could not access file "auto_explain"/);
      await c.query('create extension pg_trgm');
      expect(Number((await first(c, "select similarity('word', 'words') as s")).s)).toBeGreaterThan(0.5);
    });
  });

  it('pg_textsearch (BM25) and pg_stat_statements work when named', async () => {
    await withClient(t.pgConfig('few', password), async (c) => {
      await c.query('create extension pg_textsearch');
      await c.query('create table docs (id int primary key, body text)');
      await c.query(
        "insert into docs values (1, 'the quick brown fox'), (2, 'postgres runs in wasm'), (3, 'a lazy dog')",
      );
      await c.query("create index docs_bm25 on docs using bm25 (body) with (text_config = 'english')");
      const row = await first(
        c,
        "select id from docs order by body <@> to_bm25query('postgres', 'docs_bm25') limit 1",
      );
      expect(row.id).toBe(2);
      await c.query('create extension pg_stat_statements');
      expect((await first(c, 'select count(*)::int >= 0 as ok from pg_stat_statements')).ok).toBe(true);
    });
  });
});
