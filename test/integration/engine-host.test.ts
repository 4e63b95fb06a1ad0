import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type Engine, postgresSettings } from '../../src/engine/engine.js';
import { EngineHost } from '../../src/engine/engine-host.js';
import { createFromTemplate } from '../../src/pgdata/template.js';
import { firstRow, hasError } from '../../src/wire/backend-scan.js';
import { query } from '../../src/wire/protocol.js';

/**
 * The engine pool: parked workers open databases, and a worker whose database closed is reused
 * for another one. Reuse must never carry one database's data or session into the next.
 */
let root: string;
let host: EngineHost;

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'engine-host-'));
  host = new EngineHost({ warm: 1, settings: postgresSettings(2 * 1024 * 1024) });
  host.start();
});
afterAll(async () => {
  await host?.close();
  await rm(root, { recursive: true, force: true });
});

async function freshDatabase(name: string): Promise<string> {
  const dir = path.join(root, name);
  await createFromTemplate(inject('templateDir'), dir);
  return dir;
}

/** The first column of the first row; fails on an error response. */
async function sql(engine: Engine, text: string): Promise<string | null | undefined> {
  const response = await engine.exec(query(text));
  expect(hasError(response), text).toBe(false);
  return firstRow(response)?.[0];
}

describe('engine host', () => {
  it('reuses a worker for another database without carrying anything over', async () => {
    const a = await host.open(await freshDatabase('a'), { readOnly: false });
    await sql(a, "CREATE TABLE secret (v text); INSERT INTO secret VALUES ('only in a')");
    await sql(a, "SET application_name = 'from-a'");
    expect(await sql(a, 'SELECT v FROM secret')).toBe('only in a');
    await a.close();

    // Reopening right away gets the recycled worker (warm: 1, nothing else open).
    expect(host.stats.recycled).toBe(1);
    const spawned = host.stats.spawned;
    const b = await host.open(await freshDatabase('b'), { readOnly: false });
    expect(host.stats.spawned).toBe(spawned);
    expect(await sql(b, 'SELECT count(*) FROM pg_catalog.pg_class WHERE relname = $$secret$$')).toBe('0');
    expect(await sql(b, 'SHOW application_name')).toBe('');
    await sql(b, "CREATE TABLE secret (v text); INSERT INTO secret VALUES ('only in b')");
    await b.close();

    const again = await host.open(path.join(root, 'a'), { readOnly: false });
    expect(await sql(again, 'SELECT string_agg(v, $$,$$) FROM secret')).toBe('only in a');
    await again.close();
  });

  it('applies the memory settings', async () => {
    const engine = await host.open(await freshDatabase('settings'), { readOnly: false });
    expect(await sql(engine, 'SHOW shared_buffers')).toBe('2MB');
    expect(await sql(engine, 'SHOW max_connections')).toBe('10');
    await engine.close();
  });

  it('refuses a directory that holds no database instead of creating one', async () => {
    const empty = path.join(root, 'empty');
    await mkdir(empty);
    await expect(host.open(empty, { readOnly: false })).rejects.toThrow(/no database/);
    // The pool still works afterwards.
    const engine = await host.open(await freshDatabase('after'), { readOnly: false });
    expect(await sql(engine, 'SELECT 1')).toBe('1');
    await engine.close();
  });

  it('opens databases at the same time in separate workers', async () => {
    const dirs = await Promise.all(['p1', 'p2', 'p3'].map(freshDatabase));
    const engines = await Promise.all(dirs.map((d) => host.open(d, { readOnly: false })));
    const pids = await Promise.all(engines.map((e) => sql(e, 'SELECT 42')));
    expect(pids).toEqual(['42', '42', '42']);
    await Promise.all(engines.map((e) => e.close()));
  });
});
